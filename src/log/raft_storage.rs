//! `raft::Storage` over the CommitLog, so a `raft::RawNode` can use the log unchanged.
//!
//! Which calls touch the disk:
//! - `initial_state`, `first_index`, `last_index`, `term`: never (answered from memory:
//!   the meta state, and the in-memory index → term runs).
//! - `entries`: never for entries to send to a follower (`SendAppend`, the only context
//!   raft-rs lets answer later): when they are no longer in the tail cache, the call is
//!   recorded as a `FetchMiss` and answered `LogTemporarilyUnavailable`; the replica reads
//!   them off the Ready path (bounded, paced by raft-rs's window), stages them, and tells
//!   raft-rs (`on_entries_fetched`), whose next call gets the staged entries. Other
//!   contexts (committed entries to apply after a restart, bounded per Ready) are read
//!   with a blocking positioned read (`pread`) on the executor thread. Every entry read
//!   is checked against its crc32c.
//! - `snapshot`: never; the log holds no application state, so it answers
//!   `SnapshotTemporarilyUnavailable` (the replication layer provides snapshots).
//!
//! Entries appended but not yet durable are visible here, as raft-rs expects of a log
//! with asynchronous persistence.

use std::cell::RefCell;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::log::commit_log::LogState;
use crate::log::error::LogError;
use crate::log::meta::ConfStateRecord;
use crate::log::reader::{EntryReader, ReadRequest};

/// A read raft-rs asked for that the tail cache could not serve.
pub struct FetchMiss {
    /// First index wanted.
    pub low: u64,
    /// One past the last index wanted.
    pub high: u64,
    /// Payload bytes wanted at most.
    pub max_bytes: u64,
    /// raft-rs's context, handed back with `on_entries_fetched`.
    pub context: GetEntriesContext,
}

impl std::fmt::Debug for FetchMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FetchMiss[{}, {}) {} bytes",
            self.low, self.high, self.max_bytes
        )
    }
}

/// Catch-up reads asked for, and entries read for them.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// Misses not yet taken by the replica.
    pub misses: Vec<FetchMiss>,
    /// Entries read, by their first index.
    pub staged: std::collections::BTreeMap<u64, Vec<Entry>>,
}

/// Most misses kept before the replica takes them (raft-rs asks again later).
const MAX_PENDING_MISSES: usize = 64;

/// The `raft::Storage` view of a CommitLog (shares its state).
#[derive(Clone)]
pub struct RaftLogStorage {
    state: Rc<RefCell<LogState>>,
}

impl RaftLogStorage {
    pub(crate) fn new(state: Rc<RefCell<LogState>>) -> Self {
        RaftLogStorage { state }
    }
}

fn to_raft_error(error: LogError) -> raft::Error {
    match error {
        LogError::Compacted { .. } => raft::Error::Store(StorageError::Compacted),
        LogError::Unavailable { .. } => raft::Error::Store(StorageError::Unavailable),
        other => raft::Error::Store(StorageError::Other(Box::new(other))),
    }
}

/// The snapshot to hand raft-rs for peer `to`: the stored one, if it is recent enough and
/// its configuration has `to` (a replica added after it would refuse it, raft-rs checks
/// that it is in the configuration it restores). Otherwise `wanted` is set, so the replica
/// takes a newer one, and raft-rs tries again later.
pub fn snapshot_for(
    snapshot: Option<&Snapshot>,
    request_index: u64,
    to: u64,
    wanted: &mut bool,
) -> raft::Result<Snapshot> {
    let has_peer = |s: &Snapshot| {
        let conf = s.get_metadata().get_conf_state();
        [
            &conf.voters,
            &conf.learners,
            &conf.voters_outgoing,
            &conf.learners_next,
        ]
        .iter()
        .any(|list| list.contains(&to))
    };
    match snapshot {
        Some(s) if s.get_metadata().index >= request_index && has_peer(s) => Ok(s.clone()),
        _ => {
            *wanted = true;
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ))
        }
    }
}

/// Converts the stored configuration into raft-rs's type.
pub fn to_conf_state(record: &ConfStateRecord) -> ConfState {
    ConfState {
        voters: record.voters.clone(),
        learners: record.learners.clone(),
        voters_outgoing: record.voters_outgoing.clone(),
        learners_next: record.learners_next.clone(),
        auto_leave: record.auto_leave,
        ..Default::default()
    }
}

/// Converts raft-rs's configuration, as of log index `index`, into the stored form.
pub fn from_conf_state(conf_state: &ConfState, index: u64) -> ConfStateRecord {
    ConfStateRecord {
        index,
        voters: conf_state.voters.clone(),
        learners: conf_state.learners.clone(),
        voters_outgoing: conf_state.voters_outgoing.clone(),
        learners_next: conf_state.learners_next.clone(),
        auto_leave: conf_state.auto_leave,
    }
}

fn read_blocking(state: &mut LogState, request: &ReadRequest) -> Result<Vec<u8>, LogError> {
    let segment = state
        .segments
        .iter_mut()
        .rev()
        .find(|s| s.path == request.path)
        .ok_or(LogError::Poisoned)?;
    if segment.read_handle.is_none() {
        let file = std::fs::File::open(&segment.path)
            .map_err(|e| LogError::io("open for reading", &segment.path, e))?;
        segment.read_handle = Some(Rc::new(file));
    }
    let Some(handle) = segment.read_handle.clone() else {
        unreachable!()
    };
    let mut bytes = vec![0u8; request.length];
    let mut filled = 0;
    while filled < bytes.len() {
        let count = handle
            .read_at(&mut bytes[filled..], request.offset + filled as u64)
            .map_err(|e| LogError::io("read", &request.path, e))?;
        if count == 0 {
            break;
        }
        filled += count;
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// Entries for a follower that are no longer cached: the ones read for this call if they
/// are staged, else a recorded miss and `LogTemporarilyUnavailable` (no disk read here).
fn serve_staged(
    state: &mut LogState,
    low: u64,
    high: u64,
    max_size: u64,
    context: GetEntriesContext,
) -> raft::Result<Vec<Entry>> {
    state.catch_up.serve(low, high, Some(max_size), context)
}

impl CatchUp {
    /// Entries for a follower that the store does not hold in memory: the ones read for
    /// this call if they are staged, else a recorded miss and `LogTemporarilyUnavailable`.
    /// Shared by every `LogStore` view (the `CommitLog`'s and the simulator's).
    pub fn serve(
        &mut self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if let Some(mut entries) = self.staged.remove(&low) {
            entries.retain(|e| e.index < high);
            if entries.first().is_some_and(|e| e.index == low) {
                raft::util::limit_size(&mut entries, max_size);
                return Ok(entries);
            }
        }
        if self.misses.len() < MAX_PENDING_MISSES {
            self.misses.push(FetchMiss {
                low,
                high,
                max_bytes: max_size.unwrap_or(u64::MAX),
                context,
            });
        }
        Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable))
    }
}

impl Storage for RaftLogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let state = self.state.borrow();
        let mut hard_state = HardState::default();
        hard_state.term = state.meta.hard_state.term;
        hard_state.vote = state.meta.hard_state.vote;
        hard_state.commit = state.meta.hard_state.commit;
        Ok(RaftState::new(
            hard_state,
            to_conf_state(&state.meta.conf_state),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut state = self.state.borrow_mut();
        state.check_range(low, high).map_err(to_raft_error)?;
        let mut reader =
            EntryReader::new(low, high, max_size, state.config.max_entry_payload_bytes);
        let mut next = reader.next_request(&state.segments, &state.cache);
        if next.is_some() && context.can_async() {
            return serve_staged(&mut state, low, high, max_size, context);
        }
        while let Some(request) = next.take() {
            let bytes = read_blocking(&mut state, &request).map_err(to_raft_error)?;
            state.disk_read_bytes += bytes.len() as u64;
            reader.feed(&request, &bytes).map_err(to_raft_error)?;
            next = reader.next_request(&state.segments, &state.cache);
        }
        let mut entries = reader.entries;
        raft::util::limit_size(&mut entries, Some(max_size));
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let state = self.state.borrow();
        state.terms.term(index).ok_or_else(|| {
            if index < state.first_index {
                raft::Error::Store(StorageError::Compacted)
            } else {
                raft::Error::Store(StorageError::Unavailable)
            }
        })
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.state.borrow().first_index)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.state.borrow().last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        snapshot_for(
            state.snapshot.as_ref(),
            request_index,
            to,
            &mut state.snapshot_wanted,
        )
    }
}
