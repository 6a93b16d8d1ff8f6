//! Who may talk to a node: the cluster's shared peer secret and the proofs made with it
//! (only the cluster's own nodes open a peer connection, speak Raft or join the
//! cluster), TLS on the client and peer ports (`tls`, `stream`), and who a client is
//! and what it may do (`scram`, `users_file`, `acl`).
//!
//! Owns the secret (loading, generating, never printing it), the MACs over it, the TLS
//! configurations and the plain-or-TLS stream; never opens a socket.

pub mod acl;
pub mod certs;
pub mod peer_secret;
pub mod scram;
pub mod stream;
pub mod tls;
pub mod users_file;

pub use peer_secret::{PeerSecret, SecretError, NONCE_BYTES, PROOF_BYTES};
