//! The broker's request handling and the state it applies from the log.
//!
//! - `log_entry`: what the broker writes into a group's log.
//! - `state`: topics and partition indexes, rebuilt by applying the log.
//! - `groups`: consumer groups (members, generations, assignment, committed offsets).
//! - `producers`: the idempotent producers' table (sequence checks, expiry, cap).
//! - `replica_moves`: replica moves the controller recorded.
//! - `snapshot`: that state as bytes (Raft snapshots, the state file next to the log).

pub mod access;
mod entry_cursor;
pub mod group_entry;
mod group_snapshot;
pub mod groups;
pub mod log_entry;
pub mod producers;
pub mod replica_moves;
pub mod snapshot;
pub mod state;
