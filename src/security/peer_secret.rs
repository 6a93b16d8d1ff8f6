//! The cluster's shared peer secret: every node of a cluster reads the same bytes from
//! its `peer_secret_file`, and proves it holds them with an HMAC-SHA256 over what the
//! other side asked (a peer connection's challenge nonce) or over what it asks (a join).
//!
//! ```text
//! receiver: accept ─▶ challenge(nonce, its node id) ─▶ ... ─▶ hello? check_hello_proof
//! sender:   connect ─▶ read challenge ─▶ hello(node, group, hello_proof(nonce, ...))
//! ```
//!
//! A proof binds everything it vouches for (the nonce, both node ids, the group; for a
//! join the node, its addresses and the time), under a label per use, so a proof made
//! for one use or one connection is worth nothing for another. Checks are constant-time
//! (`Mac::verify_slice`). The secret's bytes never reach a log line (`Debug` hides them).

use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::constants::{MAX_PEER_SECRET_BYTES, MIN_PEER_SECRET_BYTES};

/// Bytes of a challenge's nonce.
pub const NONCE_BYTES: usize = 32;

/// Bytes of a proof (an HMAC-SHA256).
pub const PROOF_BYTES: usize = 32;

const HELLO_LABEL: &[u8] = b"keel peer hello v2";
const JOIN_LABEL: &[u8] = b"keel join v1";

/// Why a secret could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read (or made).
    #[error("cannot read or make the peer secret file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// Too short or too long.
    #[error(
        "the peer secret in {path} is {bytes} bytes (after trimming white space); it must \
         be {MIN_PEER_SECRET_BYTES} to {MAX_PEER_SECRET_BYTES}: make one with \
         `head -c 32 /dev/urandom | base64 > {path}`"
    )]
    Length {
        /// The file.
        path: String,
        /// Its length.
        bytes: usize,
    },
    /// The system's random source failed.
    #[error("no random bytes from the system: {0}")]
    Random(String),
}

/// The cluster's shared secret (cheap to clone; shared across shards' threads).
#[derive(Clone)]
pub struct PeerSecret(Arc<[u8]>);

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerSecret({} bytes)", self.0.len())
    }
}

impl PeerSecret {
    /// The secret in `path`: its bytes with leading and trailing white space removed (a
    /// text file's newline is not part of it). Warns if others than its owner can read it.
    pub fn load(path: &Path) -> Result<PeerSecret, SecretError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| SecretError::Read {
            path: shown.clone(),
            error,
        })?;
        warn_if_readable_by_others(path);
        PeerSecret::from_bytes(bytes.trim_ascii())
            .map_err(|bytes| SecretError::Length { path: shown, bytes })
    }

    /// A secret of these bytes; `Err(length)` if the length is out of bounds.
    pub fn from_bytes(bytes: &[u8]) -> Result<PeerSecret, usize> {
        if !(MIN_PEER_SECRET_BYTES..=MAX_PEER_SECRET_BYTES).contains(&bytes.len()) {
            return Err(bytes.len());
        }
        Ok(PeerSecret(bytes.into()))
    }

    /// Text for a new secret file: 32 random bytes as 64 hex digits and a newline.
    pub fn generate_text() -> Result<String, SecretError> {
        let random = random_bytes::<32>()?;
        let mut text: String = random.iter().map(|b| format!("{b:02x}")).collect();
        text.push('\n');
        Ok(text)
    }

    /// `dir/peer.secret`, made (random, readable by its owner only, synced) if it is not
    /// there yet: the secret of a local cluster (`keel dev`, the benchmarks' clusters).
    pub fn file_in(dir: &Path) -> Result<std::path::PathBuf, SecretError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("peer.secret");
        if path.exists() {
            return Ok(path);
        }
        let failed = |error| SecretError::Read {
            path: path.display().to_string(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(failed)?;
        let text = PeerSecret::generate_text()?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(failed)?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(failed)?;
        Ok(path)
    }

    fn mac(&self, label: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(label);
        mac
    }

    fn hello_mac(&self, nonce: &[u8], receiver: u32, sender: u32, group: u32) -> Hmac<Sha256> {
        let mut mac = self.mac(HELLO_LABEL);
        mac.update(&(nonce.len() as u32).to_le_bytes());
        mac.update(nonce);
        mac.update(&receiver.to_le_bytes());
        mac.update(&sender.to_le_bytes());
        mac.update(&group.to_le_bytes());
        mac
    }

    /// A key derived from the secret, the same on every node, for the stand-in SCRAM
    /// credentials of unknown users (`shard::client_auth`): every node then answers
    /// an unknown name with the same salt, as it does a real user's.
    pub fn decoy_key(&self) -> [u8; 32] {
        self.mac(b"keel scram decoy v1")
            .finalize()
            .into_bytes()
            .into()
    }

    /// The proof a hello from `sender` for `group` carries, answering `receiver`'s
    /// challenge `nonce`.
    pub fn hello_proof(&self, nonce: &[u8], receiver: u32, sender: u32, group: u32) -> Vec<u8> {
        let mac = self.hello_mac(nonce, receiver, sender, group);
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `proof` is the hello proof for these fields (constant-time).
    pub fn check_hello_proof(
        &self,
        nonce: &[u8],
        (receiver, sender, group): (u32, u32, u32),
        proof: &[u8],
    ) -> bool {
        let mac = self.hello_mac(nonce, receiver, sender, group);
        mac.verify_slice(proof).is_ok()
    }

    fn join_mac(&self, node_id: u32, addresses: &str, unix_ms: u64) -> Hmac<Sha256> {
        let mut mac = self.mac(JOIN_LABEL);
        mac.update(&node_id.to_le_bytes());
        mac.update(&unix_ms.to_le_bytes());
        mac.update(&(addresses.len() as u32).to_le_bytes());
        mac.update(addresses.as_bytes());
        mac
    }

    /// The proof a join request of `node_id` at `addresses`, made at `unix_ms`, carries.
    pub fn join_proof(&self, node_id: u32, addresses: &str, unix_ms: u64) -> Vec<u8> {
        let mac = self.join_mac(node_id, addresses, unix_ms);
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `proof` is the join proof for these fields (constant-time).
    pub fn check_join_proof(
        &self,
        node_id: u32,
        addresses: &str,
        unix_ms: u64,
        proof: &[u8],
    ) -> bool {
        let mac = self.join_mac(node_id, addresses, unix_ms);
        mac.verify_slice(proof).is_ok()
    }
}

/// `N` bytes from the system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(bytes)
}

fn warn_if_readable_by_others(path: &Path) {
    warn_if_shared(path, "the peer secret file");
}

/// Warns when `what` at `path` can be read by others than its owner.
pub(crate) fn warn_if_shared(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "{what} can be read by others than its owner: chmod 600 it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> PeerSecret {
        PeerSecret::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn a_hello_proof_holds_only_for_its_own_secret_nonce_nodes_and_group() {
        let nonce = [7u8; NONCE_BYTES];
        let proof = secret(1).hello_proof(&nonce, 2, 3, 0);
        assert_eq!(proof.len(), PROOF_BYTES);
        assert!(secret(1).check_hello_proof(&nonce, (2, 3, 0), &proof));
        assert!(!secret(2).check_hello_proof(&nonce, (2, 3, 0), &proof));
        assert!(!secret(1).check_hello_proof(&[8u8; NONCE_BYTES], (2, 3, 0), &proof));
        assert!(!secret(1).check_hello_proof(&nonce, (1, 3, 0), &proof));
        assert!(!secret(1).check_hello_proof(&nonce, (2, 1, 0), &proof));
        assert!(!secret(1).check_hello_proof(&nonce, (2, 3, 1), &proof));
        assert!(!secret(1).check_hello_proof(&nonce, (2, 3, 0), &proof[..31]));
        assert!(!secret(1).check_hello_proof(&nonce, (2, 3, 0), &[]));
    }

    #[test]
    fn a_join_proof_is_not_a_hello_proof_and_binds_its_fields() {
        let proof = secret(1).join_proof(4, "127.0.0.1:9730/9830", 1_000);
        assert!(secret(1).check_join_proof(4, "127.0.0.1:9730/9830", 1_000, &proof));
        assert!(!secret(1).check_join_proof(5, "127.0.0.1:9730/9830", 1_000, &proof));
        assert!(!secret(1).check_join_proof(4, "127.0.0.1:9731/9830", 1_000, &proof));
        assert!(!secret(1).check_join_proof(4, "127.0.0.1:9730/9830", 1_001, &proof));
        assert!(!secret(2).check_join_proof(4, "127.0.0.1:9730/9830", 1_000, &proof));
        let nonce = [0u8; NONCE_BYTES];
        assert!(!secret(1).check_hello_proof(&nonce, (4, 0, 0), &proof));
    }

    #[test]
    fn a_secret_file_is_trimmed_bounded_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "short\n").unwrap();
        let error = PeerSecret::load(&path).unwrap_err().to_string();
        assert!(error.contains("is 5 bytes"), "{error}");
        assert!(error.contains("head -c 32 /dev/urandom"), "{error}");
        let text = PeerSecret::generate_text().unwrap();
        assert_eq!(text.len(), 65);
        std::fs::write(&path, format!("  {text}\n")).unwrap();
        let loaded = PeerSecret::load(&path).unwrap();
        assert_eq!(loaded.0.len(), 64);
        assert!(!format!("{loaded:?}").contains(&text[..8]));
        assert_ne!(text, PeerSecret::generate_text().unwrap());
        let missing = PeerSecret::load(&dir.path().join("none")).unwrap_err();
        assert!(matches!(missing, SecretError::Read { .. }), "{missing}");
    }
}
