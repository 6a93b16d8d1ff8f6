//! Who a client connection is. With `client_auth` off every connection is open (every
//! request allowed). With it on, a connection starts in its handshake: the read loop
//! looks at each frame itself, in order, and only an `AuthenticateRequest` (SCRAM-SHA-256,
//! two steps) or a node's join (authorized by its own proof of the peer secret) goes
//! through; anything else is answered `AuthenticationFailed` and the connection stays
//! open. A client certificate from the cluster's CA names a principal at once (its
//! common name): the first request that is not an authentication is served as it, unless
//! the client authenticates with SCRAM first (then the SCRAM user is the principal).
//! Once authenticated, frames go to their tasks without being looked at here, each
//! served with the connection's principal (`shard::authorize` checks the rules).
//!
//! Owns the per-connection state and the exchange; never authorizes a request (only
//! whether the connection may be served at all). A failed exchange (unknown user, wrong
//! password, malformed message) is answered and the connection closed: one guess per
//! connection, each costing the guesser a TCP (and TLS) handshake.

use std::rc::Rc;
use std::sync::OnceLock;

use flatbuffers::FlatBufferBuilder;
use hmac::{Hmac, KeyInit, Mac};
use rustls_pki_types::CertificateDer;
use sha2::Sha256;

use crate::constants::DEFAULT_SCRAM_ITERATIONS;
use crate::protocol::codec::decode_request;
use crate::protocol::wire::{self, ErrorCode, RequestBody, ResponseBody};
use crate::security::scram::{encode_nonce, ScramError, ServerExchange, StoredCredential};
use crate::security::users_file::certificate_principal;
use crate::security::PeerSecret;
use crate::shard::answer_frame::AnswerFrame;
use crate::shard::hosted_groups::HostedGroups;
use crate::shard::requests::{error_response, finish_response, WireError};

/// The one mechanism offered.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Who a request comes from, for authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off: everything is allowed.
    Open,
    /// An authenticated principal: the rules decide.
    Principal(Rc<str>),
    /// Not authenticated (a join, which proves the peer secret itself; or a frame that
    /// does not decode, answered with its error).
    Unauthenticated,
}

/// What the read loop does with a frame.
pub enum Admission {
    /// Serve it as a request of this caller.
    Serve(Caller),
    /// Send this answer instead, and go on reading.
    Answer(AnswerFrame),
    /// Send this answer, then close the connection.
    Close(AnswerFrame, String),
    /// Send this answer (a retriable one: try again later), then close the connection.
    /// Not a failed guess: counted and logged as a refusal for load, not as one of the
    /// credentials.
    Later(AnswerFrame),
}

enum Phase {
    Open,
    Handshake,
    Served,
}

/// One connection's authentication.
pub struct ConnectionAuth {
    phase: Phase,
    principal: Option<Rc<str>>,
    exchange: Option<ServerExchange>,
}

impl ConnectionAuth {
    /// A new connection's, with the client certificate it presented over TLS.
    pub fn new(client_auth: bool, certificate: Option<&CertificateDer<'_>>) -> ConnectionAuth {
        let principal = certificate
            .and_then(|der| certificate_principal(der))
            .map(Rc::from);
        ConnectionAuth {
            phase: if client_auth {
                Phase::Handshake
            } else {
                Phase::Open
            },
            principal,
            exchange: None,
        }
    }

    /// The caller of the connection's requests once its handshake is over, without
    /// looking at the frame (the fast path); `None` while it lasts (`admit` decides).
    pub fn served(&self) -> Option<Caller> {
        match (&self.phase, &self.principal) {
            (Phase::Open, _) => Some(Caller::Open),
            (Phase::Served, Some(principal)) => Some(Caller::Principal(principal.clone())),
            _ => None,
        }
    }

    /// Whether the connection's principal is known (or authentication is off): it no
    /// longer needs a place among the connections authenticating.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.phase, Phase::Open) || self.principal.is_some()
    }

    /// Decides about one frame of the handshake.
    pub fn admit(&mut self, groups: &HostedGroups, frame: &[u8]) -> Admission {
        let Ok(request) = decode_request(frame) else {
            // Answered with its decoding error where it is served.
            return Admission::Serve(Caller::Unauthenticated);
        };
        let correlation_id = request.correlation_id();
        match request.body_type() {
            RequestBody::AuthenticateRequest => {
                let Some(asked) = request.body_as_authenticate_request() else {
                    return Admission::Serve(Caller::Unauthenticated);
                };
                let mechanism = asked.mechanism().unwrap_or_default();
                let message = asked.message().unwrap_or_default();
                self.step(groups, correlation_id, mechanism, message)
            }
            RequestBody::JoinClusterRequest => Admission::Serve(Caller::Unauthenticated),
            _ => match &self.principal {
                Some(principal) => {
                    self.phase = Phase::Served;
                    Admission::Serve(Caller::Principal(principal.clone()))
                }
                None => Admission::Answer(error_response(
                    correlation_id,
                    &WireError::new(
                        ErrorCode::AuthenticationFailed,
                        "this broker requires authentication: SCRAM-SHA-256 first (--user, \
                         --password-file), or a client certificate from its CA",
                    ),
                )),
            },
        }
    }

    /// One step of the SCRAM exchange.
    fn step(
        &mut self,
        groups: &HostedGroups,
        correlation_id: u64,
        mechanism: &str,
        message: &str,
    ) -> Admission {
        let close = |why: String| {
            let error = WireError::new(ErrorCode::AuthenticationFailed, why.clone());
            Admission::Close(error_response(correlation_id, &error), why)
        };
        if mechanism != SCRAM_SHA_256 {
            // Not echoed: it is the stranger's text, of any length.
            return close(format!(
                "that mechanism is not offered; this broker takes {SCRAM_SHA_256}"
            ));
        }
        let answered = match self.exchange.take() {
            None => {
                let lookup = |user: &str| lookup_user(groups, user);
                let nonce = match server_nonce() {
                    Ok(nonce) => nonce,
                    Err(why) => return close(why),
                };
                let secret = groups.config().peer_secret.as_ref();
                let decoy = |user: &str| decoy_credential(secret, user);
                let started = ServerExchange::start(message, lookup, decoy, &nonce);
                if let Ok((exchange, _)) = &started {
                    if !exchange.user_is_known() && !groups.heard_controller() {
                        return not_heard_yet(correlation_id);
                    }
                }
                started.map(|(exchange, server_first)| {
                    self.exchange = Some(exchange);
                    (server_first, None)
                })
            }
            Some(exchange) => exchange.finish(message).map(|(user, server_final)| {
                let principal: Rc<str> = Rc::from(user.as_str());
                self.principal = Some(principal.clone());
                self.phase = Phase::Served;
                (server_final, Some(principal))
            }),
        };
        match answered {
            Ok((message, principal)) => Admission::Answer(authenticate_response(
                correlation_id,
                &message,
                principal.as_deref(),
            )),
            Err(error @ ScramError::Failed) => close(error.to_string()),
            Err(error) => close(format!("authentication failed: {error}")),
        }
    }
}

/// The answer to a name this shard does not know before it has heard the controller's
/// users (a node starting): it may be a user it will know in a moment, so the client is
/// told to try again (a retriable code), not that its credentials fail. Nothing is said of
/// the name: every name not in the users file gets this answer then.
fn not_heard_yet(correlation_id: u64) -> Admission {
    let error = WireError::new(
        ErrorCode::RequestTimedOut,
        "this node has not yet heard the cluster's users from its controller (it is \
         starting): try again",
    );
    Admission::Later(error_response(correlation_id, &error))
}

/// A user's credential: this node's own users first (`users_file`), then the
/// controller's, as this shard last heard them.
fn lookup_user(groups: &HostedGroups, user: &str) -> Option<StoredCredential> {
    if let Some(local) = groups.config().local_users.get(user) {
        return Some(local.clone());
    }
    groups.with_access(|access| access.user(user).cloned())
}

/// A fresh printable server nonce.
fn server_nonce() -> Result<String, String> {
    let mut random = [0u8; 18];
    getrandom::getrandom(&mut random).map_err(|e| format!("no random nonce: {e}"))?;
    Ok(encode_nonce(&random))
}

/// The stand-in credential of a user no one created: a salt derived from the name and
/// a key derived from the cluster's peer secret (the same on every node, so the salt of
/// an unknown name is as stable as a real user's), so the server-first message looks
/// like a real user's and the exchange fails at the proof like a wrong password. A node
/// without the secret (alone, or mutual TLS only) uses a random key of its process: its
/// answers differ from other nodes' and across restarts (README's threat model).
fn decoy_credential(secret: Option<&PeerSecret>, user: &str) -> StoredCredential {
    static PROCESS_KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = secret.map(PeerSecret::decoy_key).unwrap_or_else(|| {
        *PROCESS_KEY.get_or_init(|| {
            let mut key = [0u8; 32];
            // Without randomness the salt is still the name's: only the hiding weakens.
            let _ = getrandom::getrandom(&mut key);
            key
        })
    });
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(user.as_bytes());
    let derived: [u8; 32] = mac.finalize().into_bytes().into();
    StoredCredential {
        salt: derived[..16].to_vec(),
        iterations: DEFAULT_SCRAM_ITERATIONS,
        stored_key: derived,
        server_key: derived,
    }
}

fn authenticate_response(
    correlation_id: u64,
    message: &str,
    principal: Option<&str>,
) -> AnswerFrame {
    let mut builder = FlatBufferBuilder::with_capacity(256);
    let message = builder.create_string(message);
    let principal = principal.map(|p| builder.create_string(p));
    let body = wire::AuthenticateResponse::create(
        &mut builder,
        &wire::AuthenticateResponseArgs {
            message: Some(message),
            principal,
        },
    );
    finish_response(
        builder,
        correlation_id,
        ResponseBody::AuthenticateResponse,
        Some(body.as_union_value()),
        None,
    )
}
