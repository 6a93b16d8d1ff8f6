//! `LogStore`: what the replica needs of its log, synchronously and in memory only.
//!
//! Every method here changes or reads memory and is visible through the `raft::Storage`
//! view on return; nothing waits for a disk. Work that needs the disk (flushes, cutting
//! entries already written, snapshot installs, prefix removal) is never a method: the
//! replica asks for it as an effect, the driver (or the simulated world) does it and
//! reports back. Implemented by the `CommitLog` (production) and by the simulator's
//! in-memory store.

use raft::eraftpb::{Entry, Snapshot};

pub use crate::log::raft_storage::FetchMiss;
use crate::log::{ConfStateRecord, HardStateRecord};

/// Why the storage failed. A failed store is never written again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageFailure {
    /// The file system is full.
    #[error("no space left on device")]
    NoSpace,
    /// Any other I/O failure, or a refusal that leaves the log unusable.
    #[error("storage failed: {detail}")]
    Io {
        /// What failed, for the operator.
        detail: String,
    },
    /// Stored data failed its checksum.
    #[error("stored data is corrupt at index {index}")]
    Corrupt {
        /// The first damaged index.
        index: u64,
    },
}

/// One segment of the log as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Index of its first entry.
    pub first_index: u64,
    /// Index of its last entry.
    pub last_index: u64,
    /// Bytes of entries in it.
    pub bytes: u64,
    /// When its newest entry was written (milliseconds of the wall clock).
    pub written_at_ms: u64,
}

/// The replica's log, as far as it can be used without waiting.
pub trait LogStore {
    /// The `raft::Storage` view raft-rs reads; it shares state with the store.
    type View: raft::Storage;

    /// A view for a new `RawNode`.
    fn view(&self) -> Self::View;
    /// Appends entries that continue the log (index `last_index + 1`).
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageFailure>;
    /// Removes entries from `from_index` on; only entries not yet handed to a flush
    /// (`from_index > written_index`).
    fn truncate_unwritten_suffix(&mut self, from_index: u64) -> Result<(), StorageFailure>;
    /// The hard state to persist with the next flush.
    fn set_hard_state(&mut self, hard_state: HardStateRecord);
    /// The Raft configuration to persist with the next flush.
    fn set_conf_state(&mut self, conf_state: ConfStateRecord) -> Result<(), StorageFailure>;
    /// The snapshot the view hands to raft-rs (the one at the compaction point).
    fn set_snapshot(&mut self, snapshot: Snapshot);
    /// The current hard state.
    fn hard_state(&self) -> HardStateRecord;
    /// The current Raft configuration.
    fn conf_state(&self) -> ConfStateRecord;
    /// First index still in the log.
    fn first_index(&self) -> u64;
    /// Last index appended.
    fn last_index(&self) -> u64;
    /// Last index handed to a flush (entries at or below it may already be on disk).
    fn written_index(&self) -> u64;
    /// Last index known durable.
    fn durable_index(&self) -> u64;
    /// Index and term of the last removed entry.
    fn compaction_point(&self) -> (u64, u64);
    /// Term of the entry at `index` (the compaction point's too), if known.
    fn term(&self, index: u64) -> Option<u64>;
    /// Bytes appended and not yet durable.
    fn unflushed_bytes(&self) -> u64;
    /// Last index of the newest sealed segment (0: none).
    fn last_sealed_index(&self) -> u64;
    /// The segments, oldest first (the last one is being written).
    fn segments(&self) -> Vec<SegmentSummary>;
    /// Whether a peer asked for a snapshot the view does not have (none recent enough,
    /// or one whose configuration lacks the peer), since last asked.
    fn take_snapshot_wanted(&mut self) -> bool;
    /// Reads raft-rs asked for that the view could not serve from memory.
    fn take_misses(&mut self) -> Vec<FetchMiss>;
    /// Entries read for a miss from `low` on; the view's next call for `low` gets them.
    fn stage_fetched(&mut self, low: u64, entries: Vec<Entry>);
    /// Drops entries staged for `low` (raft-rs did not ask for them after all).
    fn unstage(&mut self, low: u64);
}
