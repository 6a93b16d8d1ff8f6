//! What a shard accepts from a peer connection (issue 11: peer messages were accepted
//! from anyone).
//!
//! ```text
//! connect ─▶ this node's challenge (a fresh nonce) ─▶ the peer's first frame: a hello?
//!            no messages, our format version, the secret's proof over the nonce and
//!            the hello? from a node of the cluster, not this one, for this group?
//!              no ─▶ refuse: log, close the connection
//!              yes ─▶ the connection belongs to that node
//! each later frame: from_node and group those of the hello, no second hello?
//!              no ─▶ the whole frame is dropped
//! each message: from = the hello's node, to = this node, a type peers send?
//!              no ─▶ that message is dropped
//! ```
//!
//! Only the ten message types replicas send each other pass (`ACCEPTED_FROM_PEERS`);
//! local ones (`MsgHup`, `MsgBeat`, `MsgPropose`, `MsgCheckQuorum`, `MsgUnreachable`,
//! `MsgSnapStatus`), `MsgTransferLeader` and read-index ones never come from a peer here.
//! A hello is authenticated before anything else about the cluster is checked: one
//! without the proof of the cluster's shared secret (`security::PeerSecret`) over this
//! connection's challenge is refused, and so is every hello at a node that has no secret.
//! The proof names the sending node, so a node holding the secret could still claim
//! another's id: the secret keeps strangers out, not the nodes apart. With mutual TLS the
//! connection's certificate (from the cluster's CA) must name the node the hello claims
//! (`keel-node-N`), so a node's certificate cannot speak for another; the hello then
//! proves nothing more (`AUTH_METHOD_TLS`) or the secret too.
//!
//! Pure: decisions take the decoded frame and return what to step and what was refused;
//! the listener logs the refusals, at most `PEER_REFUSAL_LOGS_PER_WINDOW` per
//! `PEER_REFUSAL_LOG_WINDOW` (`RefusalLogLimiter`, told the time by its caller).

use std::time::Instant;

use raft::eraftpb::{Message, MessageType};

use crate::constants::{PEER_REFUSAL_LOGS_PER_WINDOW, PEER_REFUSAL_LOG_WINDOW};
use rustls_pki_types::CertificateDer;

use crate::protocol::peer_codec::{
    PeerMessages, AUTH_METHOD_SECRET, AUTH_METHOD_TLS, PEER_FORMAT_VERSION,
};
use crate::security::tls::certificate_names_node;
use crate::security::PeerSecret;

/// The message types a replica sends its peers: the only ones accepted from them.
pub const ACCEPTED_FROM_PEERS: [MessageType; 10] = [
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgTimeoutNow,
];

/// Why a connection, a frame or a message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The first frame of a connection was not a hello.
    #[error("the first frame is not a hello")]
    NoHello,
    /// A hello whose frame carries messages too.
    #[error("a hello frame carries {count} messages")]
    MessagesWithHello {
        /// How many.
        count: usize,
    },
    /// The hello and the frame around it disagree.
    #[error("hello names node {hello_node} for group {hello_group}, its frame node {frame_node} for group {frame_group}")]
    HelloFrameMismatch {
        /// Node in the hello.
        hello_node: u64,
        /// Group in the hello.
        hello_group: u32,
        /// Node in the frame.
        frame_node: u64,
        /// Group in the frame.
        frame_group: u32,
    },
    /// A node id that is not in `--peers`.
    #[error("node {node} is not a node of this cluster")]
    UnknownNode {
        /// The claimed node.
        node: u64,
    },
    /// A hello claiming this node's own id.
    #[error("the hello claims this node's own id {node}")]
    ClaimsThisNode {
        /// This node.
        node: u64,
    },
    /// A hello for a replica group the listener's shard does not run.
    #[error("hello for group {hello_group} on the peer port of a shard running groups {groups:?}")]
    HelloForOtherGroup {
        /// Group in the hello.
        hello_group: u32,
        /// The groups the listener's shard runs.
        groups: Vec<u32>,
    },
    /// A peer protocol version this node does not speak.
    #[error("peer format version {version}; this node speaks {PEER_FORMAT_VERSION}")]
    FormatVersion {
        /// The version in the hello.
        version: u16,
    },
    /// An authentication method this node does not take (0: none).
    #[error("authentication method {method} is not accepted: the hello must prove the cluster's peer secret (method {AUTH_METHOD_SECRET})")]
    AuthMethod {
        /// The method in the hello.
        method: u8,
    },
    /// The connection's certificate does not name the node its hello claims.
    #[error("the hello claims node {node}, but the connection's certificate does not name keel-node-{node}")]
    CertificateNotForNode {
        /// The node the hello claims.
        node: u64,
    },
    /// This node has no peer secret, so it can check no proof.
    #[error("the hello proves a peer secret, but this node has none (peer_secret_file) to check it with")]
    NoSecret,
    /// The proof is not the secret's over this connection's challenge and the hello.
    #[error(
        "the hello's proof does not hold (it claims node {node}): not the cluster's peer secret"
    )]
    BadProof {
        /// The node the hello claims.
        node: u64,
    },
    /// A hello after the first frame.
    #[error("a second hello on the connection")]
    RepeatedHello,
    /// A frame whose `from_node` is not the hello's.
    #[error("frame from node {frame_node} on node {hello_node}'s connection")]
    FrameFromOtherNode {
        /// The connection's node.
        hello_node: u64,
        /// The frame's `from_node`.
        frame_node: u64,
    },
    /// A frame for another group than the connection's.
    #[error("frame for group {frame_group} on group {group}'s connection")]
    FrameForOtherGroup {
        /// The connection's group.
        group: u32,
        /// The frame's group.
        frame_group: u32,
    },
    /// A message whose `from` is not the connection's node.
    #[error("{msg_type:?} from {from} on node {hello_node}'s connection")]
    MessageFromOtherNode {
        /// Its type.
        msg_type: MessageType,
        /// Its `from`.
        from: u64,
        /// The connection's node.
        hello_node: u64,
    },
    /// A message whose `to` is not this node.
    #[error("{msg_type:?} to node {to} received by node {this_node}")]
    MessageToOtherNode {
        /// Its type.
        msg_type: MessageType,
        /// Its `to`.
        to: u64,
        /// This node.
        this_node: u64,
    },
    /// A message type peers never send.
    #[error("{msg_type:?} is not accepted from peers")]
    TypeNotAccepted {
        /// Its type.
        msg_type: MessageType,
    },
}

/// What the first frame of a peer connection is checked against.
#[derive(Clone, Copy, Debug)]
pub struct HelloCheck<'a> {
    /// This node.
    pub this_node: u64,
    /// The groups the listener's shard runs.
    pub groups: &'a [u32],
    /// Every node of the cluster.
    pub voters: &'a [u64],
    /// The cluster's shared secret, if this node has one.
    pub secret: Option<&'a PeerSecret>,
    /// The nonce of the challenge this node sent on the connection.
    pub nonce: &'a [u8],
    /// With mutual TLS, the certificate the peer opened the connection with (verified
    /// against the cluster's CA): it must name the node the hello claims.
    pub certificate: Option<&'a CertificateDer<'static>>,
}

/// Checks the first frame of a peer connection; answers the node and the group the
/// connection belongs to.
pub fn admit_hello(frame: &PeerMessages, check: &HelloCheck<'_>) -> Result<(u64, u32), Refusal> {
    let HelloCheck {
        this_node,
        groups,
        voters,
        ..
    } = *check;
    let hello = frame.hello.as_ref().ok_or(Refusal::NoHello)?;
    let node = u64::from(hello.node_id);
    if !frame.messages.is_empty() {
        return Err(Refusal::MessagesWithHello {
            count: frame.messages.len(),
        });
    }
    if hello.node_id != frame.from_node || hello.group != frame.group {
        return Err(Refusal::HelloFrameMismatch {
            hello_node: node,
            hello_group: hello.group,
            frame_node: u64::from(frame.from_node),
            frame_group: frame.group,
        });
    }
    if hello.format_version != PEER_FORMAT_VERSION {
        return Err(Refusal::FormatVersion {
            version: hello.format_version,
        });
    }
    if let Some(certificate) = check.certificate {
        if !certificate_names_node(certificate, node) {
            return Err(Refusal::CertificateNotForNode { node });
        }
    }
    match (hello.auth_method, check.certificate) {
        (AUTH_METHOD_TLS, Some(_)) => {}
        (AUTH_METHOD_SECRET, _) => {
            let secret = check.secret.ok_or(Refusal::NoSecret)?;
            let receiver = u32::try_from(this_node).unwrap_or(u32::MAX);
            let fields = (receiver, hello.node_id, hello.group);
            if !secret.check_hello_proof(check.nonce, fields, &hello.auth_data) {
                return Err(Refusal::BadProof { node });
            }
        }
        (method, _) => return Err(Refusal::AuthMethod { method }),
    }
    check_node(node, this_node, voters)?;
    if !groups.contains(&hello.group) {
        return Err(Refusal::HelloForOtherGroup {
            hello_group: hello.group,
            groups: groups.to_vec(),
        });
    }
    Ok((node, hello.group))
}

fn check_node(node: u64, this_node: u64, voters: &[u64]) -> Result<(), Refusal> {
    if node == this_node {
        return Err(Refusal::ClaimsThisNode { node });
    }
    if !voters.contains(&node) {
        return Err(Refusal::UnknownNode { node });
    }
    Ok(())
}

/// Sorts a later frame of `hello_node`'s connection into the messages to step (in their
/// order) and the refusals of the rest.
pub fn admit(
    hello_node: u64,
    this_node: u64,
    group: u32,
    voters: &[u64],
    frame: PeerMessages,
) -> (Vec<Message>, Vec<Refusal>) {
    let frame_refusal = if frame.hello.is_some() {
        Some(Refusal::RepeatedHello)
    } else if u64::from(frame.from_node) != hello_node {
        Some(Refusal::FrameFromOtherNode {
            hello_node,
            frame_node: u64::from(frame.from_node),
        })
    } else if frame.group != group {
        Some(Refusal::FrameForOtherGroup {
            group,
            frame_group: frame.group,
        })
    } else {
        check_node(hello_node, this_node, voters).err()
    };
    if let Some(refusal) = frame_refusal {
        return (Vec::new(), vec![refusal]);
    }
    let mut admitted = Vec::with_capacity(frame.messages.len());
    let mut refusals = Vec::new();
    for message in frame.messages {
        let msg_type = message.get_msg_type();
        if !ACCEPTED_FROM_PEERS.contains(&msg_type) {
            refusals.push(Refusal::TypeNotAccepted { msg_type });
        } else if message.from != hello_node {
            refusals.push(Refusal::MessageFromOtherNode {
                msg_type,
                from: message.from,
                hello_node,
            });
        } else if message.to != this_node {
            refusals.push(Refusal::MessageToOtherNode {
                msg_type,
                to: message.to,
                this_node,
            });
        } else {
            admitted.push(message);
        }
    }
    (admitted, refusals)
}

/// Bounds the refusal log lines of one shard's peer listener: a flood of bad frames must
/// not become a flood of log lines.
#[derive(Debug, Default)]
pub struct RefusalLogLimiter {
    window_start: Option<Instant>,
    logged_in_window: u32,
    suppressed: u64,
}

impl RefusalLogLimiter {
    /// Whether to log a refusal at `now`: `Some(n)` to log it, `n` being how many were
    /// not logged since the last logged one; `None` to count it silently.
    pub fn should_log(&mut self, now: Instant) -> Option<u64> {
        let window_over = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= PEER_REFUSAL_LOG_WINDOW);
        if window_over {
            self.window_start = Some(now);
            self.logged_in_window = 0;
        }
        if self.logged_in_window >= PEER_REFUSAL_LOGS_PER_WINDOW {
            self.suppressed += 1;
            return None;
        }
        self.logged_in_window += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::peer_codec::{decode_peer_frame, encode_peer_hello, PeerHello};
    use rustls_pki_types::pem::PemObject;

    const THIS: u64 = 2;
    const GROUP: u32 = 1;
    const VOTERS: [u64; 3] = [1, 2, 3];
    const NONCE: [u8; 32] = [5; 32];

    fn secret() -> PeerSecret {
        PeerSecret::from_bytes(&[1; 32]).unwrap()
    }

    /// A hello from `node` for `group` with the proof of `secret()` over `NONCE`.
    fn proven(node: u32, group: u32) -> PeerHello {
        let proof = secret().hello_proof(&NONCE, THIS as u32, node, group);
        PeerHello::proven(node, group, proof)
    }

    fn hello_frame(hello: PeerHello) -> PeerMessages {
        decode_peer_frame(&encode_peer_hello(&hello)).unwrap()
    }

    fn admit_at(hello: &PeerMessages, groups: &[u32]) -> Result<(u64, u32), Refusal> {
        let secret = secret();
        let check = HelloCheck {
            this_node: THIS,
            groups,
            voters: &VOTERS,
            secret: Some(&secret),
            nonce: &NONCE,
            certificate: None,
        };
        admit_hello(hello, &check)
    }

    fn message(msg_type: MessageType, from: u64, to: u64) -> Message {
        let mut message = Message {
            from,
            to,
            term: 4,
            commit: 1_000_000_000,
            ..Default::default()
        };
        message.set_msg_type(msg_type);
        message
    }

    fn frame(from_node: u32, group: u32, messages: Vec<Message>) -> PeerMessages {
        PeerMessages {
            from_node,
            group,
            messages,
            hello: None,
            challenge: None,
        }
    }

    #[test]
    fn a_hello_from_another_node_of_the_cluster_for_this_group_is_admitted() {
        let hello = hello_frame(proven(3, GROUP));
        assert_eq!(admit_at(&hello, &[GROUP]), Ok((3, GROUP)));
    }

    /// Issue 13: a hello without the secret's proof over this connection's nonce is
    /// refused, whatever it claims, before the node or group it names are looked at.
    #[test]
    fn a_hello_without_the_secrets_proof_over_this_nonce_is_refused() {
        let unproven = hello_frame(PeerHello::new(3, GROUP));
        assert_eq!(
            admit_at(&unproven, &[GROUP]),
            Err(Refusal::AuthMethod { method: 0 })
        );
        let other_secret = PeerSecret::from_bytes(&[2; 32]).unwrap();
        let forged = PeerHello::proven(3, GROUP, other_secret.hello_proof(&NONCE, 2, 3, GROUP));
        assert_eq!(
            admit_at(&hello_frame(forged), &[GROUP]),
            Err(Refusal::BadProof { node: 3 })
        );
        let replayed = secret().hello_proof(&[6; 32], THIS as u32, 3, GROUP);
        assert_eq!(
            admit_at(
                &hello_frame(PeerHello::proven(3, GROUP, replayed)),
                &[GROUP]
            ),
            Err(Refusal::BadProof { node: 3 })
        );
        let renamed = secret().hello_proof(&NONCE, THIS as u32, 1, GROUP);
        assert_eq!(
            admit_at(&hello_frame(PeerHello::proven(3, GROUP, renamed)), &[GROUP]),
            Err(Refusal::BadProof { node: 3 })
        );
        let unknown = hello_frame(PeerHello::proven(9, GROUP, vec![0; 32]));
        assert_eq!(
            admit_at(&unknown, &[GROUP]),
            Err(Refusal::BadProof { node: 9 })
        );
        let no_secret = HelloCheck {
            this_node: THIS,
            groups: &[GROUP],
            voters: &VOTERS,
            secret: None,
            nonce: &NONCE,
            certificate: None,
        };
        assert_eq!(
            admit_hello(&hello_frame(proven(3, GROUP)), &no_secret),
            Err(Refusal::NoSecret)
        );
    }

    /// A shard running several groups admits a hello for any of them, and the
    /// connection belongs to the group its hello names.
    /// Issue 13: over mutual TLS a hello is admitted only for the node its connection's
    /// certificate names, and a hello claiming TLS on a plain connection is refused.
    #[test]
    fn over_mutual_tls_the_certificate_must_name_the_hellos_node() {
        use crate::security::certs::{Authority, Validity};
        let ca = Authority::new("test CA").unwrap();
        let issued = ca
            .issue_node(3, &["127.0.0.1"], Validity::days_from_now(1))
            .unwrap();
        let der = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let check = |hello: PeerHello, certificate| {
            let check = HelloCheck {
                this_node: THIS,
                groups: &[GROUP],
                voters: &VOTERS,
                secret: None,
                nonce: &NONCE,
                certificate,
            };
            admit_hello(&hello_frame(hello), &check)
        };
        assert_eq!(
            check(PeerHello::over_tls(3, GROUP), Some(&der)),
            Ok((3, GROUP))
        );
        assert_eq!(
            check(PeerHello::over_tls(1, GROUP), Some(&der)),
            Err(Refusal::CertificateNotForNode { node: 1 })
        );
        assert_eq!(
            check(PeerHello::over_tls(3, GROUP), None),
            Err(Refusal::AuthMethod { method: 2 })
        );
        assert_eq!(
            check(PeerHello::new(3, GROUP), Some(&der)),
            Err(Refusal::AuthMethod { method: 0 })
        );
    }

    #[test]
    fn a_shard_running_several_groups_admits_a_hello_for_each() {
        for group in [GROUP, 4] {
            let hello = hello_frame(proven(3, group));
            assert_eq!(admit_at(&hello, &[GROUP, 4]), Ok((3, group)));
        }
    }

    #[test]
    fn every_bad_hello_is_refused() {
        let refused = |hello: PeerMessages| admit_at(&hello, &[GROUP]).unwrap_err();
        let heartbeat = message(MessageType::MsgHeartbeat, 3, THIS);
        assert_eq!(
            refused(frame(3, GROUP, vec![heartbeat.clone()])),
            Refusal::NoHello
        );
        assert_eq!(
            refused(hello_frame(proven(9, GROUP))),
            Refusal::UnknownNode { node: 9 }
        );
        assert_eq!(
            refused(hello_frame(proven(THIS as u32, GROUP))),
            Refusal::ClaimsThisNode { node: THIS }
        );
        assert_eq!(
            refused(hello_frame(proven(3, 0))),
            Refusal::HelloForOtherGroup {
                hello_group: 0,
                groups: vec![GROUP]
            }
        );
        let mut old = proven(3, GROUP);
        old.format_version = 1;
        assert_eq!(
            refused(hello_frame(old)),
            Refusal::FormatVersion { version: 1 }
        );
        let mut unknown_method = proven(3, GROUP);
        unknown_method.auth_method = 7;
        assert_eq!(
            refused(hello_frame(unknown_method)),
            Refusal::AuthMethod { method: 7 }
        );
        let mut mismatch = hello_frame(proven(3, GROUP));
        mismatch.from_node = 1;
        assert!(matches!(
            refused(mismatch),
            Refusal::HelloFrameMismatch { .. }
        ));
        let mut loaded = hello_frame(proven(3, GROUP));
        loaded.messages.push(heartbeat);
        assert_eq!(refused(loaded), Refusal::MessagesWithHello { count: 1 });
    }

    #[test]
    fn messages_from_the_hello_node_to_this_node_of_peer_types_pass_in_order() {
        let messages: Vec<Message> = ACCEPTED_FROM_PEERS
            .iter()
            .map(|&t| message(t, 3, THIS))
            .collect();
        let (admitted, refusals) =
            admit(3, THIS, GROUP, &VOTERS, frame(3, GROUP, messages.clone()));
        assert_eq!((admitted, refusals), (messages, Vec::new()));
    }

    #[test]
    fn messages_with_another_sender_or_receiver_or_a_local_type_are_dropped() {
        let good = message(MessageType::MsgAppend, 3, THIS);
        let messages = vec![
            message(MessageType::MsgTimeoutNow, 1, THIS),
            good.clone(),
            message(MessageType::MsgHeartbeat, 3, 1),
            message(MessageType::MsgHup, 3, THIS),
            message(MessageType::MsgTransferLeader, 3, THIS),
        ];
        let (admitted, refusals) = admit(3, THIS, GROUP, &VOTERS, frame(3, GROUP, messages));
        assert_eq!(admitted, vec![good]);
        assert_eq!(
            refusals,
            vec![
                Refusal::MessageFromOtherNode {
                    msg_type: MessageType::MsgTimeoutNow,
                    from: 1,
                    hello_node: 3
                },
                Refusal::MessageToOtherNode {
                    msg_type: MessageType::MsgHeartbeat,
                    to: 1,
                    this_node: THIS
                },
                Refusal::TypeNotAccepted {
                    msg_type: MessageType::MsgHup
                },
                Refusal::TypeNotAccepted {
                    msg_type: MessageType::MsgTransferLeader
                },
            ]
        );
    }

    #[test]
    fn only_the_ten_peer_types_are_accepted() {
        use MessageType::*;
        let every_type = [
            MsgHup,
            MsgBeat,
            MsgPropose,
            MsgAppend,
            MsgAppendResponse,
            MsgRequestVote,
            MsgRequestVoteResponse,
            MsgSnapshot,
            MsgHeartbeat,
            MsgHeartbeatResponse,
            MsgUnreachable,
            MsgSnapStatus,
            MsgCheckQuorum,
            MsgTransferLeader,
            MsgTimeoutNow,
            MsgReadIndex,
            MsgReadIndexResp,
            MsgRequestPreVote,
            MsgRequestPreVoteResponse,
        ];
        let mut accepted = 0;
        for msg_type in every_type {
            let (admitted, _) = admit(
                3,
                THIS,
                GROUP,
                &VOTERS,
                frame(3, GROUP, vec![message(msg_type, 3, THIS)]),
            );
            assert_eq!(admitted.len() == 1, ACCEPTED_FROM_PEERS.contains(&msg_type));
            accepted += admitted.len();
        }
        assert_eq!(accepted, 10);
    }

    #[test]
    fn a_frame_of_another_node_or_group_or_a_second_hello_is_dropped_whole() {
        let messages = vec![message(MessageType::MsgAppend, 3, THIS)];
        let cases = [
            (
                frame(1, GROUP, messages.clone()),
                Refusal::FrameFromOtherNode {
                    hello_node: 3,
                    frame_node: 1,
                },
            ),
            (
                frame(3, 0, messages.clone()),
                Refusal::FrameForOtherGroup {
                    group: GROUP,
                    frame_group: 0,
                },
            ),
            (
                hello_frame(PeerHello::new(3, GROUP)),
                Refusal::RepeatedHello,
            ),
        ];
        for (frame, refusal) in cases {
            assert_eq!(
                admit(3, THIS, GROUP, &VOTERS, frame),
                (Vec::new(), vec![refusal])
            );
        }
        // A connection of a node no longer in the cluster (defence in depth).
        assert_eq!(
            admit(9, THIS, GROUP, &VOTERS, frame(9, GROUP, messages)).1,
            vec![Refusal::UnknownNode { node: 9 }]
        );
    }

    #[test]
    fn refusal_logs_are_bounded_per_window_and_count_the_rest() {
        let mut limiter = RefusalLogLimiter::default();
        let start = Instant::now();
        for _ in 0..PEER_REFUSAL_LOGS_PER_WINDOW {
            assert_eq!(limiter.should_log(start), Some(0));
        }
        assert_eq!(limiter.should_log(start), None);
        assert_eq!(
            limiter.should_log(start + PEER_REFUSAL_LOG_WINDOW / 2),
            None
        );
        assert_eq!(
            limiter.should_log(start + PEER_REFUSAL_LOG_WINDOW),
            Some(2),
            "a new window logs again, with the count of those not logged"
        );
        assert_eq!(limiter.should_log(start + PEER_REFUSAL_LOG_WINDOW), Some(0));
    }
}
