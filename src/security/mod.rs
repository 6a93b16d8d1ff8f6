//! Who may talk to a node. Today: the cluster's shared peer secret and the proofs made
//! with it, so that only the cluster's own nodes can open a peer connection (and speak
//! Raft) or join the cluster.
//!
//! Owns the secret (loading, generating, never printing it) and the MACs over it; never
//! touches a socket or a file other than the secret's own.

pub mod peer_secret;

pub use peer_secret::{PeerSecret, SecretError, NONCE_BYTES, PROOF_BYTES};
