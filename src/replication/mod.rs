//! The replica group: a raft-rs `RawNode` over the CommitLog, driven by inputs and
//! returning the work to do.
//!
//! `GroupCore` does no I/O: it is told about ticks, messages, proposals and completed
//! persists, and hands back what must be sent, appended, persisted and applied. The shard
//! that owns the group does that work (appends to the log, flushes, sends) and reports
//! back. A group of one voter is a single-node broker; replication adds peers.

pub mod group_core;
pub mod raft_logging;

pub use group_core::{GroupConfig, GroupCore, GroupError, ReadyWork};
