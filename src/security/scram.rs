//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash): a client proves it knows a password
//! without sending it, the server proves it holds the user's stored credential, and the
//! server stores only a salted, iterated hash (`StoredCredential`: salt, iterations,
//! StoredKey, ServerKey), never the password.
//!
//! ```text
//! client                                   server
//! client_first ─ "n,,n=USER,r=CNONCE" ───▶ ServerExchange::start (looks up USER)
//!              ◀─ "r=CNONCE SNONCE,s=SALT,i=ITER" ─
//! ClientExchange::finish(password)
//!              ─ "c=biws,r=...,p=PROOF" ──▶ ServerExchange::finish: the principal
//!              ◀─ "v=SIGNATURE" ──────────
//! ClientExchange::verify_server
//! ```
//!
//! Pure: no I/O, no clock; nonces come from the caller. A user the server does not know
//! gets a salt and iteration count like any other (derived from the name and a secret
//! of the server's), and fails at the proof, the same way as a wrong password: the
//! exchange does not tell which users exist. Channel binding is not used ("n,," / "biws":
//! TLS, when on, protects the exchange). Every message from the other side is parsed
//! strictly and bounded (`MAX_SCRAM_MESSAGE_BYTES`); malformed input is an error, never a
//! panic.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::constants::{MAX_SCRAM_ITERATIONS, MAX_SCRAM_MESSAGE_BYTES, MIN_SCRAM_ITERATIONS};

/// Why an exchange failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message that is not what the mechanism says at this step.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The proof does not hold: an unknown user or a wrong password (not told apart).
    #[error("authentication failed: unknown user or wrong password")]
    Failed,
    /// The server's signature does not hold: it does not hold this user's credential.
    #[error("the server's SCRAM signature does not hold: not the server it claims")]
    ServerNotProven,
    /// The server answered with an error (`e=...`).
    #[error("the server refused: {0}")]
    Refused(String),
}

/// What a server stores for a user: enough to check a proof, not enough to make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCredential {
    /// Random salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
    out
}

impl StoredCredential {
    /// The credential of `password` with this salt and iteration count.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> StoredCredential {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        StoredCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// The value of attribute `key` ("r", "s", ...) in `part` ("r=...").
fn attribute(part: Option<&str>, key: char) -> Result<&str, ScramError> {
    let part = part.ok_or(ScramError::Malformed("an attribute is missing"))?;
    let mut chars = part.chars();
    if chars.next() != Some(key) || chars.next() != Some('=') {
        return Err(ScramError::Malformed("attributes out of order"));
    }
    Ok(&part[2..])
}

fn bounded(message: &str) -> Result<&str, ScramError> {
    if message.len() > MAX_SCRAM_MESSAGE_BYTES {
        return Err(ScramError::Malformed("message too long"));
    }
    Ok(message)
}

/// A printable nonce (base64 of random bytes: no ',' in it).
pub fn encode_nonce(random: &[u8]) -> String {
    BASE64.encode(random)
}

/// `saslname` decoding of a user name ("=2C" is ',', "=3D" is '=').
fn decode_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in the user name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("an empty user name"));
    }
    Ok(out)
}

fn encode_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// The client's side of one exchange.
#[derive(Debug)]
pub struct ClientExchange {
    first_bare: String,
    nonce: String,
    expected_server_signature: Option<[u8; 32]>,
}

impl ClientExchange {
    /// Starts an exchange for `user` with the client nonce `nonce` (printable, no ',');
    /// the client-first message to send.
    pub fn start(user: &str, nonce: &str) -> (ClientExchange, String) {
        let first_bare = format!("n={},r={nonce}", encode_name(user));
        let message = format!("n,,{first_bare}");
        let exchange = ClientExchange {
            first_bare,
            nonce: nonce.to_string(),
            expected_server_signature: None,
        };
        (exchange, message)
    }

    /// Answers the server-first message with the proof of `password`: the client-final
    /// message to send.
    pub fn finish(&mut self, server_first: &str, password: &str) -> Result<String, ScramError> {
        let server_first = bounded(server_first)?;
        if let Some(error) = server_first.strip_prefix("e=") {
            return Err(ScramError::Refused(error.to_string()));
        }
        let mut parts = server_first.split(',');
        let nonce = attribute(parts.next(), 'r')?;
        let salt = attribute(parts.next(), 's')?;
        let iterations = attribute(parts.next(), 'i')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err(ScramError::Malformed(
                "the server's nonce does not extend ours",
            ));
        }
        let salt = BASE64
            .decode(salt)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramError::Malformed("iterations is not a number"))?;
        if !(MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Malformed("iterations out of bounds"));
        }
        let salted = salted_password(password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &signature);
        let server_key = hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Checks the server-final message: the server holds this user's credential.
    pub fn verify_server(&self, server_final: &str) -> Result<(), ScramError> {
        let server_final = bounded(server_final)?;
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(ScramError::Refused(error.to_string()));
        }
        let signature = attribute(server_final.split(',').next(), 'v')?;
        let signature = BASE64
            .decode(signature)
            .map_err(|_| ScramError::Malformed("signature is not base64"))?;
        match &self.expected_server_signature {
            Some(expected) if constant_time_eq(expected, &signature) => Ok(()),
            _ => Err(ScramError::ServerNotProven),
        }
    }
}

/// The server's side of one exchange, between its two messages.
#[derive(Debug)]
pub struct ServerExchange {
    user: String,
    credential: StoredCredential,
    /// A user the server does not know: the exchange goes on and fails at the proof.
    known: bool,
    first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Takes the client-first message: `lookup` finds the user's credential, or
    /// `decoy(user)` stands in for an unknown user (a salt derived from the name and a
    /// server secret, so asking twice answers the same); `server_nonce` is fresh and
    /// printable. The exchange and the server-first message to send.
    pub fn start(
        client_first: &str,
        lookup: impl FnOnce(&str) -> Option<StoredCredential>,
        decoy: impl FnOnce(&str) -> StoredCredential,
        server_nonce: &str,
    ) -> Result<(ServerExchange, String), ScramError> {
        let client_first = bounded(client_first)?;
        let bare = client_first
            .strip_prefix("n,,")
            .ok_or(ScramError::Malformed(
                "only gs2 header \"n,,\" is supported",
            ))?;
        let mut parts = bare.split(',');
        let user = decode_name(attribute(parts.next(), 'n')?)?;
        let client_nonce = attribute(parts.next(), 'r')?;
        if client_nonce.is_empty() || parts.next().is_some() {
            return Err(ScramError::Malformed(
                "client-first has extra or empty parts",
            ));
        }
        let (credential, known) = match lookup(&user) {
            Some(credential) => (credential, true),
            None => (decoy(&user), false),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let exchange = ServerExchange {
            user,
            credential,
            known,
            first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// The user the client names.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether `lookup` found the user (else a decoy stands in and the exchange fails).
    pub fn user_is_known(&self) -> bool {
        self.known
    }

    /// Takes the client-final message: the authenticated user and the server-final
    /// message to send, or why not.
    pub fn finish(self, client_final: &str) -> Result<(String, String), ScramError> {
        let client_final = bounded(client_final)?;
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client-final has no proof"))?;
        let mut parts = without_proof.split(',');
        if attribute(parts.next(), 'c')? != "biws" {
            return Err(ScramError::Malformed("channel binding is not supported"));
        }
        if attribute(parts.next(), 'r')? != self.nonce || parts.next().is_some() {
            return Err(ScramError::Malformed(
                "client-final's nonce is not the exchange's",
            ));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let proof: [u8; 32] = proof
            .try_into()
            .map_err(|_| ScramError::Malformed("proof is not 32 bytes"))?;
        let auth_message = format!("{},{},{without_proof}", self.first_bare, self.server_first);
        let signature = hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &signature);
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let holds = constant_time_eq(&stored_key, &self.credential.stored_key);
        if !(holds && self.known) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok((self.user, format!("v={}", BASE64.encode(server_signature))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3's example: user "user", password "pencil".
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn pencil() -> StoredCredential {
        StoredCredential::from_password("pencil", &BASE64.decode(SALT).unwrap(), 4096)
    }

    fn decoy(_: &str) -> StoredCredential {
        StoredCredential::from_password("", b"decoy-salt", 4096)
    }

    #[test]
    fn the_rfc_7677_exchange_goes_through_both_sides() {
        let (mut client, first) = ClientExchange::start("user", CLIENT_NONCE);
        assert_eq!(first, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let (server, server_first) =
            ServerExchange::start(&first, |_| Some(pencil()), decoy, SERVER_NONCE).unwrap();
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let client_final = client.finish(&server_first, "pencil").unwrap();
        assert_eq!(client_final, CLIENT_FINAL);
        let (user, server_final) = server.finish(&client_final).unwrap();
        assert_eq!(
            (user.as_str(), server_final.as_str()),
            ("user", SERVER_FINAL)
        );
        client.verify_server(&server_final).unwrap();
        assert_eq!(
            client.verify_server("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::ServerNotProven)
        );
    }

    #[test]
    fn a_wrong_password_and_an_unknown_user_fail_alike() {
        for (user, password, lookup) in
            [("user", "pen", Some(pencil())), ("nobody", "pencil", None)]
        {
            let (mut client, first) = ClientExchange::start(user, CLIENT_NONCE);
            let (server, server_first) =
                ServerExchange::start(&first, |_| lookup, decoy, SERVER_NONCE).unwrap();
            let client_final = client.finish(&server_first, password).unwrap();
            assert_eq!(server.finish(&client_final), Err(ScramError::Failed));
        }
    }

    #[test]
    fn malformed_or_replayed_messages_are_refused_without_a_panic() {
        let start = |first: &str| ServerExchange::start(first, |_| Some(pencil()), decoy, "s");
        for bad in [
            "",
            "n,,",
            "y,,n=user,r=abc",
            "p=tls-unique,,n=user,r=abc",
            "n,,r=abc,n=user",
            "n,,n=us=er,r=abc",
            "n,,n=user,r=",
            "n,,n=user,r=abc,x=1",
            &"n,,n=user,r=".repeat(1000),
        ] {
            assert!(start(bad).is_err(), "{bad:?}");
        }
        let (server, server_first) = start("n,,n=user,r=abc").unwrap();
        assert!(server_first.starts_with("r=abcs,"));
        for bad in [
            "",
            "c=biws,r=abcs",
            "c=biws,r=other,p=AAAA",
            "c=eSws,r=abcs,p=AAAA",
            "c=biws,r=abcs,p=!!!",
            "c=biws,r=abcs,p=AAAA",
        ] {
            let (server, _) = start("n,,n=user,r=abc").unwrap();
            assert!(server.finish(bad).is_err(), "{bad:?}");
        }
        // A client-final of another exchange (another server nonce) does not pass.
        let (mut client, first) = ClientExchange::start("user", CLIENT_NONCE);
        let (_, other_first) =
            ServerExchange::start(&first, |_| Some(pencil()), decoy, SERVER_NONCE).unwrap();
        let replayed = client.finish(&other_first, "pencil").unwrap();
        let (fresh, _) =
            ServerExchange::start(&first, |_| Some(pencil()), decoy, "another-nonce").unwrap();
        assert!(fresh.finish(&replayed).is_err());
        drop(server);
        // The client refuses a server that does not extend its nonce or asks absurd work.
        let (mut client, _) = ClientExchange::start("user", "abc");
        assert!(client.finish("r=xyz,s=AAAA,i=4096", "p").is_err());
        assert!(client.finish("r=abcd,s=AAAA,i=999999999", "p").is_err());
        assert!(client.finish("e=other-error", "p").is_err());
    }

    #[test]
    fn user_names_with_commas_and_equals_signs_round_trip() {
        let (_, first) = ClientExchange::start("a,b=c", "n1");
        assert_eq!(first, "n,,n=a=2Cb=3Dc,r=n1");
        let (server, _) = ServerExchange::start(&first, |_| None, decoy, "s").unwrap();
        assert_eq!(server.user(), "a,b=c");
    }
}
