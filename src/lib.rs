//! Keel: a Raft-replicated message broker for latency-sensitive producers.
//!
//! Data flow in brief:
//!
//! ```text
//! producer ─▶ leader shard ─▶ CommitLog append (uncommitted) ─▶ AppendEntries to followers
//!                               └─ group-commit flush (fdatasync) runs alongside
//! majority durable ─▶ commit ─▶ apply (partition index) ─▶ answer the producer
//! ```
//!
//! Modules:
//! - [`log`]: the CommitLog on O_DIRECT segment files, and its `raft::Storage`.
//! - [`broker`]: what the broker stores and applies.
//! - [`client`]: the Rust client.
//! - [`protocol`]: frames and flatbuffers messages of the client protocol, checked.
//! - [`replication`]: the replica group (raft-rs), without I/O.
//! - [`bench`]: load generators and HdrHistogram output for `keel bench`.
//! - [`constants`]: every bound in one place.
//! - [`shard`]: executors, the Ready loop of each shard, client connections.
//! - [`metrics`]: what each shard counts, served in the Prometheus text format.
//! - [`config`]: node configuration.
//! - [`transport`]: Raft messages between nodes, on their peer ports.
//! - [`runtime`]: starting glommio executors.
//! - [`units`]: sizes and durations as users write them.

#![warn(missing_docs)]

pub mod bench;
pub mod broker;
pub mod client;
pub mod config;
pub mod constants;
pub mod controller;
pub mod log;
pub mod metrics;
pub mod protocol;
pub mod replication;
pub mod runtime;
pub mod security;
pub mod shard;
pub mod sim;
pub mod transport;
pub mod tune;
pub mod units;
