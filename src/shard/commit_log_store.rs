//! The `CommitLog` as the replica's `LogStore`: every method delegates to the log's
//! synchronous, memory-only operations (the log's disk work stays the driver's).

use raft::eraftpb::{Entry, Snapshot};

use crate::log::{CommitLog, ConfStateRecord, HardStateRecord, LogError, RaftLogStorage};
use crate::replication::log_store::{FetchMiss, LogStore, SegmentSummary, StorageFailure};

/// A log error as the replica sees it.
pub fn storage_failure(error: &LogError) -> StorageFailure {
    match error {
        LogError::Corruption { .. } => StorageFailure::Corrupt { index: 0 },
        LogError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
            StorageFailure::NoSpace
        }
        other => StorageFailure::Io {
            detail: other.to_string(),
        },
    }
}

impl LogStore for CommitLog {
    type View = RaftLogStorage;

    fn view(&self) -> RaftLogStorage {
        self.raft_storage()
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageFailure> {
        CommitLog::append(self, entries).map_err(|e| storage_failure(&e))
    }

    fn truncate_unwritten_suffix(&mut self, from_index: u64) -> Result<(), StorageFailure> {
        CommitLog::truncate_unwritten_suffix(self, from_index).map_err(|e| storage_failure(&e))
    }

    fn set_hard_state(&mut self, hard_state: HardStateRecord) {
        CommitLog::set_hard_state(self, hard_state);
    }

    fn set_conf_state(&mut self, conf_state: ConfStateRecord) -> Result<(), StorageFailure> {
        CommitLog::set_conf_state(self, conf_state).map_err(|e| storage_failure(&e))
    }

    fn set_snapshot(&mut self, snapshot: Snapshot) {
        CommitLog::set_snapshot(self, snapshot);
    }

    fn hard_state(&self) -> HardStateRecord {
        CommitLog::hard_state(self)
    }

    fn conf_state(&self) -> ConfStateRecord {
        CommitLog::conf_state(self)
    }

    fn first_index(&self) -> u64 {
        CommitLog::first_index(self)
    }

    fn last_index(&self) -> u64 {
        CommitLog::last_index(self)
    }

    fn written_index(&self) -> u64 {
        CommitLog::written_index(self)
    }

    fn durable_index(&self) -> u64 {
        CommitLog::durable_index(self)
    }

    fn compaction_point(&self) -> (u64, u64) {
        CommitLog::compaction_point(self)
    }

    fn term(&self, index: u64) -> Option<u64> {
        CommitLog::term(self, index).ok()
    }

    fn unflushed_bytes(&self) -> u64 {
        CommitLog::unflushed_bytes(self)
    }

    fn last_sealed_index(&self) -> u64 {
        CommitLog::last_sealed_index(self)
    }

    fn take_snapshot_wanted(&mut self) -> bool {
        CommitLog::take_snapshot_wanted(self)
    }

    fn take_misses(&mut self) -> Vec<FetchMiss> {
        self.take_fetch_misses()
    }

    fn stage_fetched(&mut self, low: u64, entries: Vec<Entry>) {
        CommitLog::stage_fetched(self, low, entries);
    }

    fn unstage(&mut self, low: u64) {
        CommitLog::unstage(self, low);
    }

    fn segments(&self) -> Vec<SegmentSummary> {
        self.segment_layout()
            .into_iter()
            .map(|segment| SegmentSummary {
                first_index: segment.first_index,
                last_index: segment.last_index,
                bytes: segment.bytes,
                written_at_ms: modified_ms(&segment.path),
            })
            .collect()
    }
}

/// A segment file's modification time in wall-clock milliseconds (the newest entry's
/// write); now when unknown, so an unreadable time never makes a segment look old.
fn modified_ms(path: &std::path::Path) -> u64 {
    let now = std::time::SystemTime::now();
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(now);
    modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
