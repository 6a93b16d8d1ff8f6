//! The CommitLog: one replica group's Raft log, which is also its message log.
//!
//! ```text
//! dir/
//!   LOCK                          held while the log is open
//!   meta                          hard state, configuration, compaction point (2 slots)
//!   00000000000000000001.segment  preallocated, O_DIRECT, entries from index 1
//!   00000000000000000001.index    its sparse index and terms, once sealed and durable
//!   00000000000000052113.segment  ... (the newest: scanned at open)
//!   next-7.segment.tmp            the next segment, being prepared in the background
//! ```
//!
//! - `entry`: the entry format (header with crc32c) — pure.
//! - `segment`: segment naming, sparse index, the scan of a segment's bytes — pure.
//! - `segment_index`: index files of sealed segments, so opening scans only the tail.
//! - `recovery`: what opening a directory finds and must change — reads only.
//! - `commit_log`: the open log: append, reads, truncation, removal, recovery at open.
//! - `flush`: the pipelined group-commit flush.
//! - `raft_storage`: `raft::Storage` over the log.
//! - `check`: `keel log check`, the report of what recovery would do.
//!
//! This module never talks to the network.

pub mod check;
pub mod commit_log;
pub mod config;
pub mod dir_lock;
pub mod entry;
pub mod error;
pub mod flush;
pub mod io;
pub mod meta;
pub mod raft_storage;
pub mod reader;
pub mod recovery;
pub mod segment;
pub mod segment_index;
pub mod tail_cache;
pub mod term_index;
pub mod write_buffer;

pub use commit_log::{CommitLog, SegmentInfo};
pub use config::{LogConfig, Preallocation, SyncMethod};
pub use error::{LogError, LogResult};
pub use meta::{ConfStateRecord, HardStateRecord};
pub use raft_storage::RaftLogStorage;

#[cfg(test)]
mod tests;
