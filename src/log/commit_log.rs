//! `CommitLog`: one replica group's durable log on O_DIRECT segment files.
//!
//! ```text
//! append (sync, memory) ──▶ write buffer ──flush──▶ segment writes (O_DSYNC) ─▶ durable_index
//!        └──────────────▶ tail cache (reads of recent entries)
//! ```
//!
//! - Segment files are written with `O_DSYNC` by default (`SyncMethod`): a write returns
//!   once its bytes are durable, one ring operation that io_uring completes without its
//!   worker threads on a zero-filled segment. `SyncMethod::Fdatasync` writes plainly and
//!   syncs each file once per flush instead (a worker-thread wake-up pair per sync).
//!
//! - `append` only touches memory, so a Raft Ready loop can call it without waiting. Many
//!   appends may be made while a flush is in flight; the next flush takes them all (group
//!   commit). `flush` returns the durable index: every entry at or below it is on disk.
//! - Flushes are pipelined (see `flush`): consecutive flushes overlap on the device, their
//!   syncs and meta writes complete in order. Truncation, prefix removal, reset and close
//!   take the disk exclusively (no flush in flight).
//! - An I/O error on a write or a sync poisons the log: it never reports a durable index
//!   again, since a failed fdatasync may have dropped data silently (never retried).
//! - Hard state: a change of term, vote or configuration is written by the next flush,
//!   after the entries; a change of the commit index alone is written lazily (with the next
//!   meta write or at close), as Raft can always learn the commit index again.
//!
//! The log never talks to the network.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;
use glommio::sync::Semaphore;
use raft::eraftpb::{Entry, EntryType as RaftEntryType};
use tracing::{info, warn};

use crate::constants::{
    ADAPTIVE_ZERO_FILL_MAX_BYTES_PER_SECOND, BLOCK_SIZE_BYTES, MAX_WRITES_IN_FLIGHT,
    MIN_ZERO_FILL_BYTES_PER_SECOND, WRITE_CHUNK_BYTES, ZERO_FILL_CHUNK_BYTES,
};
use crate::log::config::{LogConfig, Preallocation, SyncMethod};
use crate::log::dir_lock::DirLock;
use crate::log::entry::{encode_header, stored_size_bytes, EntryType, HEADER_SIZE_BYTES};
use crate::log::error::{LogError, LogResult};
use crate::log::flush::Signal;
use crate::log::io;
use crate::log::meta::{ConfStateRecord, HardStateRecord, MetaFile, MetaState, TruncationFence};
use crate::log::reader::EntryReader;
use crate::log::recovery::{plan_recovery, RecoveryPlan, ScannedSegment, TailCut};
use crate::log::segment::{FillClock, Segment, SparseIndex};
use crate::log::segment_index;
use crate::log::tail_cache::{CachedEntry, EntryLocation, TailCache};
use crate::log::term_index::TermIndex;
use crate::log::write_buffer::{FlushWrite, WriteBuffer};

/// Suffix of segment files being prepared (`next-<n>.segment.tmp`); leftovers are removed
/// at open.
const PREPARED_FILE_SUFFIX: &str = ".segment.tmp";

/// How long the first flush of a new log waits for its first segment's zero-fill.
const FIRST_SEGMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Numbers the segment preparations of the whole process.
static PREPARATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The next segment file being prepared; dropping it (with the log) cancels the work.
type PreparedSegment = glommio::Task<LogResult<Rc<DmaFile>>>;

/// The in-memory state of an open log, shared with its `raft::Storage` view.
pub struct LogState {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    /// Held while the log is open (taken out only while `reopen` rebuilds the state).
    lock: Option<DirLock>,
    pub(crate) segments: Vec<Segment>,
    pub(crate) terms: TermIndex,
    pub(crate) cache: TailCache,
    pub(super) buffer: WriteBuffer,
    pub(crate) meta: MetaState,
    meta_file: Option<MetaFile>,
    meta_generation: u64,
    pub(super) meta_written_generation: u64,
    /// The commit index the meta file holds (the last one written): a newer one in
    /// `meta` is waiting for `persist_commit_index`.
    meta_written_commit: u64,
    pub(crate) first_index: u64,
    pub(crate) last_index: u64,
    pub(super) durable_index: u64,
    written_index: u64,
    pub(super) poisoned: bool,
    prepared: Option<PreparedSegment>,
    prepared_count: u64,
    /// Bytes handed to flushes that have not ended yet (counted against the unflushed bound).
    pub(super) in_flight_bytes: u64,
    /// Fires when the newest flush's writes (and all before them) are complete.
    pub(super) writes_chain: Option<Signal>,
    /// Fires when the newest flush's sync (and all before it) is complete.
    pub(super) sync_chain: Option<Signal>,
    /// The Raft snapshot at the compaction point, for followers behind it (kept by the
    /// owner of the applied state; the log does not interpret it).
    pub(crate) snapshot: Option<raft::eraftpb::Snapshot>,
    /// A peer needs a snapshot newer than `snapshot` (`raft_storage::snapshot_for`).
    pub(crate) snapshot_wanted: bool,
    /// Catch-up reads raft-rs asked for and entries read for them (`raft_storage`).
    pub(crate) catch_up: crate::log::raft_storage::CatchUp,
    /// Bytes read from segment files since the log was opened (reads of entries no longer
    /// in the tail cache: catch-up, fetches of old data).
    pub(crate) disk_read_bytes: u64,
}

/// One segment as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Index of its first entry.
    pub first_index: u64,
    /// Index of its last entry.
    pub last_index: u64,
    /// Bytes of entries in it.
    pub bytes: u64,
    /// Its file (its modification time is when its newest entry was written).
    pub path: PathBuf,
}

/// One replica group's CommitLog. Cheap to clone: clones share the log.
#[derive(Clone)]
pub struct CommitLog {
    pub(crate) state: Rc<RefCell<LogState>>,
    /// Flushes hold it shared for their whole run; truncation, prefix removal, reset and
    /// close hold it exclusively, so they never see a flush in flight.
    pub(super) gate: Rc<glommio::sync::RwLock<()>>,
    /// Serializes the planning of flushes (taking buffers, creating segment files, issuing
    /// writes), so flushes join the ordering chains in the order they took their bytes.
    pub(super) plan_lock: Rc<Semaphore>,
    /// Bounds the writes in flight across all flushes.
    pub(super) write_slots: Rc<Semaphore>,
}

/// What a flush must do, taken from the state under one borrow.
pub(super) struct FlushPlan {
    /// Segments (by first index) that need their file created before the writes.
    pub(super) missing_files: Vec<u64>,
    /// The writes, in file order.
    pub(super) pending_writes: Vec<FlushWrite>,
    /// Bytes the writes carry (accounted as not yet durable until the flush ends).
    pub(super) bytes: u64,
    /// Every entry up to here is durable when the flush ends.
    pub(super) upto_index: u64,
    /// The meta state to write after the entries, with its generation.
    pub(super) meta: Option<(MetaState, u64)>,
}

impl CommitLog {
    /// Opens (or creates) the log in `dir`, recovering from whatever a crash left.
    ///
    /// Must run on a glommio executor. Fails with `LogError::Corruption` when data in the
    /// middle of the log is damaged, naming the file and offset.
    pub async fn open(dir: &Path, config: LogConfig) -> LogResult<CommitLog> {
        config.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| LogError::io("create directory", dir, e))?;
        let lock = DirLock::acquire(dir)?;
        io::prime_thread(dir).await?;
        remove_prepared_leftovers(dir)?;
        let (mut meta_file, mut meta) = MetaFile::open(dir).await?;
        let plan = plan_recovery(dir, &meta, config.max_entry_payload_bytes, true)?;
        apply_recovery(dir, &plan, &mut meta_file, &mut meta).await?;
        let state = build_state(dir, config, lock, plan, meta, meta_file).await?;
        let log = CommitLog {
            state: Rc::new(RefCell::new(state)),
            gate: Rc::new(glommio::sync::RwLock::new(())),
            plan_lock: Rc::new(Semaphore::new(1)),
            write_slots: Rc::new(Semaphore::new(MAX_WRITES_IN_FLIGHT as u64)),
        };
        log.start_preparing();
        log.write_missing_indexes().await?;
        Ok(log)
    }

    /// Sealed segments that were scanned (no valid index file) get one now, so the next
    /// open reads only the tail; on a full disk they are left for a later open.
    async fn write_missing_indexes(&self) -> LogResult<()> {
        match self.persist_sealed_indexes(self.durable_index()).await {
            Err(error) if error.is_no_space() => {
                warn!(%error, "segment index files not written: the disk is full");
                Ok(())
            }
            other => other,
        }
    }

    /// Opens the log again from its files, in place (every clone sees the new state): how
    /// a log poisoned by a failed write (a full disk) comes back once the cause is gone,
    /// without a restart. What the files hold is what a restart would find; the active
    /// segment is synced first, so entries written but never synced count as durable only
    /// once they are.
    pub async fn reopen(&self) -> LogResult<()> {
        let _gate = self.gate.write().await.map_err(|_| LogError::Poisoned)?;
        let _plan = self
            .plan_lock
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Poisoned)?;
        let (dir, config, lock, active) = {
            let mut state = self.state.borrow_mut();
            let active = state.segments.last().and_then(|s| s.file.clone());
            let lock = state.lock.take().ok_or(LogError::Poisoned)?;
            state.poisoned = true;
            state.prepared = None;
            (state.dir.clone(), state.config.clone(), lock, active)
        };
        if let Some(file) = active {
            if let Err(error) = file.fdatasync().await {
                self.state.borrow_mut().lock = Some(lock);
                return Err(io::glommio_error("fdatasync", &dir, error));
            }
        }
        let reopened = async {
            remove_prepared_leftovers(&dir)?;
            let (mut meta_file, mut meta) = MetaFile::open(&dir).await?;
            let plan = plan_recovery(&dir, &meta, config.max_entry_payload_bytes, true)?;
            apply_recovery(&dir, &plan, &mut meta_file, &mut meta).await?;
            Ok::<_, LogError>((plan, meta, meta_file))
        }
        .await;
        let (plan, meta, meta_file) = match reopened {
            Ok(parts) => parts,
            Err(error) => {
                self.state.borrow_mut().lock = Some(lock);
                return Err(error);
            }
        };
        let state = build_state(&dir, config, lock, plan, meta, meta_file).await?;
        *self.state.borrow_mut() = state;
        info!(dir = %dir.display(), "log reopened");
        self.start_preparing();
        self.write_missing_indexes().await
    }

    /// Sets the Raft snapshot that `raft::Storage::snapshot` hands out: the applied state
    /// at the compaction point.
    pub fn set_snapshot(&self, snapshot: raft::eraftpb::Snapshot) {
        self.state.borrow_mut().snapshot = Some(snapshot);
    }

    /// Whether a peer asked for a snapshot newer than the one held, since last asked.
    pub fn take_snapshot_wanted(&self) -> bool {
        std::mem::take(&mut self.state.borrow_mut().snapshot_wanted)
    }

    /// Bytes of entries stored in the segments (the active one included).
    pub fn size_bytes(&self) -> u64 {
        self.state
            .borrow()
            .segments
            .iter()
            .map(|s| s.data_end)
            .sum()
    }

    /// Segment files of the log (the active one included).
    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Bytes of the entries after `index` (a follower matched up to it lacks them), to
    /// within `SPARSE_INDEX_INTERVAL_BYTES`: counted from the sparse index's point at or
    /// before the first of them.
    pub fn bytes_after(&self, index: u64) -> u64 {
        let next = index.saturating_add(1);
        self.state
            .borrow()
            .segments
            .iter()
            .map(|s| {
                if s.last_index < next {
                    0
                } else if s.first_index >= next {
                    s.data_end
                } else {
                    let from = s.sparse.lookup(next).map_or(0, |(_, offset)| offset);
                    s.data_end.saturating_sub(from)
                }
            })
            .sum()
    }

    /// Every segment, oldest first; the last one is the active segment.
    pub fn segment_layout(&self) -> Vec<SegmentInfo> {
        self.state
            .borrow()
            .segments
            .iter()
            .map(|s| SegmentInfo {
                first_index: s.first_index,
                last_index: s.last_index,
                bytes: s.data_end,
                path: s.path.clone(),
            })
            .collect()
    }

    /// The catch-up reads raft-rs asked for since the last call (entries of a follower
    /// behind the tail cache: read them off the Ready path, then `stage_fetched`).
    pub fn take_fetch_misses(&self) -> Vec<crate::log::raft_storage::FetchMiss> {
        std::mem::take(&mut self.state.borrow_mut().catch_up.misses)
    }

    /// Entries read for a catch-up, from `low` on: the next `raft::Storage::entries` call
    /// for `low` gets them.
    pub fn stage_fetched(&self, low: u64, entries: Vec<Entry>) {
        self.state.borrow_mut().catch_up.staged.insert(low, entries);
    }

    /// Drops entries staged for `low` that were not asked for.
    pub fn unstage(&self, low: u64) {
        self.state.borrow_mut().catch_up.staged.remove(&low);
    }

    /// Every entry at or below this index has been handed to a flush (it may be on disk);
    /// entries above it are only in memory.
    pub fn written_index(&self) -> u64 {
        self.state.borrow().written_index
    }

    /// Bytes appended and not yet durable (buffered, or carried by a running flush):
    /// what `append` counts against `max_unflushed_bytes`.
    pub fn unflushed_bytes(&self) -> u64 {
        let state = self.state.borrow();
        state.buffer.unflushed_bytes() + state.in_flight_bytes
    }

    /// Removes the entries from `from_index` on when none of them was handed to a flush
    /// yet: memory only, no waiting (a follower replacing a suffix it just received).
    /// Entries already written need `truncate_suffix`.
    pub fn truncate_unwritten_suffix(&self, from_index: u64) -> LogResult<()> {
        let mut state = self.state.borrow_mut();
        state.check_usable()?;
        if from_index > state.last_index {
            return Ok(());
        }
        if from_index <= state.written_index || from_index <= state.meta.hard_state.commit {
            return Err(LogError::InvalidRequest(format!(
                "cannot cut from index {from_index} in memory: written up to {}, commit {}",
                state.written_index, state.meta.hard_state.commit
            )));
        }
        // The tail cache keeps every entry that is not durable, so it locates this one.
        let location = state
            .cache
            .get(from_index)
            .map(|cached| cached.location)
            .ok_or(LogError::Unavailable {
                index: from_index,
                last_index: state.last_index,
            })?;
        // Segments wholly after the cut were never written: they have no file yet.
        let _never_written = state.truncate_in_memory(from_index, location);
        Ok(())
    }

    /// Last index of the newest sealed segment (0 when none is sealed).
    pub fn last_sealed_index(&self) -> u64 {
        let state = self.state.borrow();
        let count = state.segments.len();
        if count < 2 {
            return 0;
        }
        state.segments[count - 2].last_index
    }

    /// Index of the first entry (one past the compaction point).
    pub fn first_index(&self) -> u64 {
        self.state.borrow().first_index
    }

    /// Index of the last appended entry (durable or not); the compaction point when empty.
    pub fn last_index(&self) -> u64 {
        self.state.borrow().last_index
    }

    /// Term of the last entry (the compaction term when empty).
    pub fn last_term(&self) -> u64 {
        self.state.borrow().terms.last_term()
    }

    /// Every entry at or below this index is on disk.
    pub fn durable_index(&self) -> u64 {
        self.state.borrow().durable_index
    }

    /// Term of the entry at `index` (also answers for the compaction point).
    pub fn term(&self, index: u64) -> LogResult<u64> {
        let state = self.state.borrow();
        state
            .terms
            .term(index)
            .ok_or_else(|| state.out_of_range(index))
    }

    /// The stored Raft hard state (the latest value set, persisted or about to be).
    pub fn hard_state(&self) -> HardStateRecord {
        self.state.borrow().meta.hard_state
    }

    /// The stored Raft configuration.
    pub fn conf_state(&self) -> ConfStateRecord {
        self.state.borrow().meta.conf_state.clone()
    }

    /// The compaction point: index and term of the last removed entry.
    pub fn compaction_point(&self) -> (u64, u64) {
        let state = self.state.borrow();
        (state.meta.compaction_index, state.meta.compaction_term)
    }

    /// Sets the hard state. A new term or vote is persisted by the next `flush` (after the
    /// entries it carries); a new commit index alone is persisted lazily.
    pub fn set_hard_state(&self, hard_state: HardStateRecord) {
        let mut state = self.state.borrow_mut();
        let old = state.meta.hard_state;
        if old == hard_state {
            return;
        }
        state.meta.hard_state = hard_state;
        if old.term != hard_state.term || old.vote != hard_state.vote {
            state.meta_generation += 1;
        }
    }

    /// Writes the hard state now if only its commit index changed since the last write
    /// (which `flush` leaves for later). The replication layer calls this now and then
    /// (say every 100 ms): recovery treats damage at or below the persisted commit index as
    /// corruption, never as a torn tail, so a fresher commit index protects more entries.
    pub async fn persist_commit_index(&self) -> LogResult<()> {
        if !self.state.borrow().commit_dirty() {
            return Ok(());
        }
        // Exclusive: no flush is writing the meta file meanwhile (a short pause for them).
        let _permit = self.io_permit().await?;
        self.state.borrow().check_usable()?;
        let meta = self.state.borrow().meta.clone();
        self.write_meta(&meta, self.durable_index()).await
    }

    /// Sets the Raft configuration; persisted by the next `flush`.
    pub fn set_conf_state(&self, conf_state: ConfStateRecord) -> LogResult<()> {
        let lists = [
            &conf_state.voters,
            &conf_state.learners,
            &conf_state.voters_outgoing,
            &conf_state.learners_next,
        ];
        if lists
            .iter()
            .any(|list| list.len() > crate::constants::MAX_CONF_MEMBERS)
        {
            return Err(LogError::InvalidRequest(format!(
                "a configuration list exceeds {} members",
                crate::constants::MAX_CONF_MEMBERS
            )));
        }
        let mut state = self.state.borrow_mut();
        if state.meta.conf_state != conf_state {
            state.meta.conf_state = conf_state;
            state.meta_generation += 1;
        }
        Ok(())
    }

    /// Appends entries in memory. They must continue the log (index `last_index + 1`, terms
    /// not decreasing); to replace a conflicting suffix, `truncate_suffix` first. Nothing is
    /// changed if any entry is refused. Durable after the next `flush`.
    pub fn append(&self, entries: &[Entry]) -> LogResult<()> {
        let mut state = self.state.borrow_mut();
        state.check_usable()?;
        state.validate_append(entries)?;
        for entry in entries {
            state.append_one(entry);
        }
        state.maybe_start_preparing();
        Ok(())
    }

    /// Bytes read from segment files since the log was opened.
    pub fn disk_read_bytes(&self) -> u64 {
        self.state.borrow().disk_read_bytes
    }

    /// Reads entries `[low, high)` with at most about `max_bytes` of payload (always at
    /// least one entry). Recent entries come from the tail cache, older ones from disk.
    pub async fn read(&self, low: u64, high: u64, max_bytes: u64) -> LogResult<Vec<Entry>> {
        let reader = {
            let state = self.state.borrow();
            state.check_range(low, high)?;
            EntryReader::new(low, high, max_bytes, state.config.max_entry_payload_bytes)
        };
        self.run_reader(reader).await
    }

    /// Reads the entries at `indexes` (ascending, not empty) up to about `max_bytes` of
    /// payload (at least one entry): a partition's batches among other entries, each
    /// byte of the log read at most once.
    pub async fn read_indexes(&self, indexes: &[u64], max_bytes: u64) -> LogResult<Vec<Entry>> {
        let reader = {
            let state = self.state.borrow();
            let (Some(&low), Some(&high)) = (indexes.first(), indexes.last()) else {
                return Ok(Vec::new());
            };
            state.check_range(low, high + 1)?;
            EntryReader::sparse(indexes, max_bytes, state.config.max_entry_payload_bytes)
        };
        self.run_reader(reader).await
    }

    async fn run_reader(&self, mut reader: EntryReader) -> LogResult<Vec<Entry>> {
        loop {
            let request = {
                let state = self.state.borrow();
                reader.next_request(&state.segments, &state.cache)
            };
            let Some(request) = request else { break };
            let file = match &request.file {
                Some(file) => file.clone(),
                None => io::open_read_write(&request.path, false).await?,
            };
            let bytes = io::read_at(&file, &request.path, request.offset, request.length).await?;
            self.state.borrow_mut().disk_read_bytes += bytes.len() as u64;
            reader.feed(&request, &bytes)?;
        }
        Ok(reader.entries)
    }

    /// Removes every entry at or above `from_index` (a follower's conflicting tail). Safe
    /// against crashes: the cut is recorded in the meta file first and redone at open.
    pub async fn truncate_suffix(&self, from_index: u64) -> LogResult<()> {
        {
            let state = self.state.borrow();
            state.check_usable()?;
            if from_index < state.first_index || from_index <= state.meta.hard_state.commit {
                return Err(LogError::InvalidRequest(format!(
                    "cannot truncate from index {from_index}: first index {}, commit index {}",
                    state.first_index, state.meta.hard_state.commit
                )));
            }
            if from_index > state.last_index {
                return Ok(());
            }
        }
        let _permit = self.io_permit().await?;
        let location = self.locate(from_index).await?;
        let on_disk = from_index <= self.state.borrow().written_index;
        if !on_disk {
            self.state
                .borrow_mut()
                .truncate_in_memory(from_index, location);
            return Ok(());
        }
        let result = self.truncate_on_disk(from_index, location).await;
        if result.is_err() {
            self.state.borrow_mut().poisoned = true;
        }
        result
    }

    /// Removes every entry at or below `up_to_index` (retention, snapshots): the compaction
    /// point is recorded first, then whole segments below it are deleted.
    pub async fn remove_prefix(&self, up_to_index: u64) -> LogResult<()> {
        {
            let state = self.state.borrow();
            state.check_usable()?;
            if up_to_index > state.durable_index {
                return Err(LogError::InvalidRequest(format!(
                    "cannot remove up to {up_to_index}: only {} is durable",
                    state.durable_index
                )));
            }
            if up_to_index < state.first_index {
                return Ok(());
            }
        }
        let permit = self.io_permit().await?;
        let term = self.term(up_to_index)?;
        let mut meta = self.state.borrow().meta.clone();
        meta.compaction_index = up_to_index;
        meta.compaction_term = term;
        self.write_meta(&meta, self.durable_index()).await?;
        let removed = {
            let mut state = self.state.borrow_mut();
            state.meta.compaction_index = up_to_index;
            state.meta.compaction_term = term;
            state.forget_prefix(up_to_index)
        };
        // The meta file names the new start: the removed segments are no one's now (a
        // crash before they are gone leaves files that recovery deletes). Flushes may go
        // on, and the files go on the executor's blocking thread: unlinking several
        // 64 MiB segments and syncing the directory blocked the shard's thread for long
        // enough that a flooded leader's followers heard nothing and elected another
        // (`overload_e2e`, 1 MiB batches, retention cutting nine segments at once).
        drop(permit);
        if removed.is_empty() {
            return Ok(());
        }
        let dir = self.state.borrow().dir.clone();
        glommio::executor()
            .spawn_blocking(move || {
                remove_segment_files(removed.iter())?;
                io::sync_directory(&dir)
            })
            .await
    }

    /// Discards the whole log and restarts it after `(index, term)` (a snapshot install).
    ///
    /// Crash-safe: the new compaction point is recorded together with a truncation fence at
    /// the start of the oldest segment file, so an interrupted reset comes back as an empty
    /// log at `index`; then the files are deleted and the fence is cleared.
    pub async fn reset_to(&self, index: u64, term: u64) -> LogResult<()> {
        self.state.borrow().check_usable()?;
        let _permit = self.io_permit().await?;
        let mut meta = self.state.borrow().meta.clone();
        meta.compaction_index = index;
        meta.compaction_term = term;
        meta.hard_state.commit = meta.hard_state.commit.max(index);
        meta.truncation_fence = self
            .state
            .borrow()
            .segments
            .iter()
            .find(|segment| segment.file.is_some())
            .map(|segment| TruncationFence {
                segment_first_index: segment.first_index,
                offset: 0,
            });
        let fenced = meta.truncation_fence.is_some();
        self.write_meta(&meta, index).await?;
        meta.truncation_fence = None;
        let paths: Vec<PathBuf> = {
            let mut state = self.state.borrow_mut();
            state.meta = meta.clone();
            let paths = state
                .segments
                .iter()
                .rev()
                .filter(|s| s.file.is_some())
                .map(|s| s.path.clone())
                .collect();
            state.segments.clear();
            state.buffer.clear();
            state.cache.forget_before(u64::MAX);
            state.terms = TermIndex::new(index, term);
            state.first_index = index + 1;
            state.last_index = index;
            state.durable_index = index;
            state.written_index = index;
            paths
        };
        let dir = self.state.borrow().dir.clone();
        glommio::executor()
            .spawn_blocking(move || {
                remove_segment_files(paths.iter())?;
                io::sync_directory(&dir)
            })
            .await?;
        if fenced {
            self.write_meta(&meta, index).await?;
        }
        Ok(())
    }

    /// Flushes, persists the latest hard state and closes the files.
    pub async fn close(self) -> LogResult<()> {
        self.flush().await?;
        let _permit = self.io_permit().await?;
        let (meta, commit_dirty, prepared) = {
            let mut state = self.state.borrow_mut();
            (
                state.meta.clone(),
                state.commit_dirty(),
                state.prepared.take(),
            )
        };
        if commit_dirty {
            self.write_meta(&meta, self.durable_index()).await?;
        }
        // Cancel the preparation of the next segment and remove its file.
        drop(prepared);
        remove_prepared_leftovers(&self.state.borrow().dir)?;
        let (files, meta_file) = {
            let mut state = self.state.borrow_mut();
            let files: Vec<Rc<DmaFile>> = state
                .segments
                .iter_mut()
                .filter_map(|s| s.file.take())
                .collect();
            (files, state.meta_file.take())
        };
        for file in files {
            if let Ok(file) = Rc::try_unwrap(file) {
                let _ = file.close().await;
            }
        }
        if let Some(meta_file) = meta_file {
            meta_file.close().await?;
        }
        Ok(())
    }

    /// A `raft::Storage` view of this log (see `raft_storage`).
    pub fn raft_storage(&self) -> crate::log::raft_storage::RaftLogStorage {
        crate::log::raft_storage::RaftLogStorage::new(self.state.clone())
    }

    /// Exclusive use of the disk: waits for every flush in flight to end.
    async fn io_permit(&self) -> LogResult<glommio::sync::RwLockWriteGuard<'_, ()>> {
        self.gate.write().await.map_err(|_| LogError::Poisoned)
    }

    /// Writes the meta file. The stored commit index is clamped to `commit_bound` (what is
    /// durable), so a recovered log never has a commit index beyond its entries.
    pub(super) async fn write_meta(&self, meta: &MetaState, commit_bound: u64) -> LogResult<()> {
        let mut meta = meta.clone();
        meta.hard_state.commit = meta
            .hard_state
            .commit
            .min(commit_bound.max(meta.compaction_index));
        let mut meta_file = self
            .state
            .borrow_mut()
            .meta_file
            .take()
            .ok_or(LogError::Poisoned)?;
        let result = meta_file.write(&meta).await;
        let mut state = self.state.borrow_mut();
        state.meta_file = Some(meta_file);
        if result.is_ok() {
            // What was written, not what is set: a flush writes the meta it planned with,
            // and the bound may clamp the commit index; a newer one stays to be persisted
            // (`sim_store_agrees` seed 0x1: a flush's older commit index marked the newer
            // one persisted, `persist_commit_index` skipped it and a crash lost it).
            state.meta_written_commit = meta.hard_state.commit;
        } else {
            state.poisoned = true;
        }
        result
    }

    /// Gives a new segment its file: the prepared one if ready, else a fresh one.
    pub(super) async fn materialize_segment(&self, first_index: u64) -> LogResult<()> {
        let (dir, path, prepared, prepared_path) = {
            let mut state = self.state.borrow_mut();
            let path = state.segment(first_index).path.clone();
            let prepared_path = state.prepared_path();
            (
                state.dir.clone(),
                path,
                state.prepared.take(),
                prepared_path,
            )
        };
        // A flush never waits for a zero-fill still running (its followers' answers wait
        // on this flush): an unfinished preparation is cancelled and the segment made
        // with fallocate instead, at once.
        // Except for a new log's first segment: nothing is waiting on a log that has
        // never stored anything, and a zero-filled first segment keeps syncs fast.
        let first_of_the_log = self
            .state
            .borrow()
            .segments
            .iter()
            .all(|s| s.file.is_none());
        let prepared_file = match prepared {
            Some(task) if first_of_the_log => {
                let waited = glommio::timer::timeout(FIRST_SEGMENT_WAIT, async { Ok(task.await) });
                self.prepared_or_fallback(waited.await.ok(), &prepared_path, &path)
            }
            Some(mut task) => {
                let finished = futures_lite::future::poll_once(&mut task).await;
                drop(task);
                self.prepared_or_fallback(finished, &prepared_path, &path)
            }
            None => None,
        };
        let file = match prepared_file {
            Some(file) => {
                file.rename(&path)
                    .await
                    .map_err(|e| io::glommio_error("rename", &path, e))?;
                file
            }
            None => {
                let size = self.state.borrow().config.segment_size_bytes;
                create_segment_file(&path, size, Preparation::Fallocate).await?
            }
        };
        io::sync_directory_off_thread(&dir).await?;
        let sync = self.state.borrow().config.sync;
        // The preparation wrote through a plain handle (and synced); the flush's writes
        // go through one opened for its sync method.
        let file = match sync {
            SyncMethod::DsyncWrites => io::open_segment(&path, sync).await?,
            SyncMethod::Fdatasync => file,
        };
        self.state.borrow_mut().segment_mut(first_index).file = Some(file);
        self.start_preparing();
        Ok(())
    }

    /// The prepared file if its preparation finished (and succeeded); else removes what
    /// the cancelled preparation wrote and says so.
    fn prepared_or_fallback(
        &self,
        finished: Option<LogResult<Rc<DmaFile>>>,
        prepared_path: &Path,
        segment_path: &Path,
    ) -> Option<Rc<DmaFile>> {
        match finished {
            Some(result) => result.ok(),
            None => {
                let _ = std::fs::remove_file(prepared_path);
                warn!(
                    segment = %segment_path.display(),
                    "the next segment was not prepared in time; allocated without zero-fill"
                );
                None
            }
        }
    }

    fn start_preparing(&self) {
        self.state.borrow_mut().maybe_start_preparing();
    }

    /// Finds where the entry at `index` is stored.
    async fn locate(&self, index: u64) -> LogResult<EntryLocation> {
        if let Some(cached) = self.state.borrow().cache.get(index) {
            return Ok(cached.location);
        }
        let mut reader = {
            let state = self.state.borrow();
            EntryReader::new(index, index + 1, 0, state.config.max_entry_payload_bytes)
        };
        loop {
            let request = {
                let state = self.state.borrow();
                reader.next_request(&state.segments, &state.cache)
            };
            let Some(request) = request else { break };
            let file = request.file.clone().ok_or(LogError::Poisoned)?;
            let bytes = io::read_at(&file, &request.path, request.offset, request.length).await?;
            self.state.borrow_mut().disk_read_bytes += bytes.len() as u64;
            reader.feed(&request, &bytes)?;
        }
        reader
            .locations
            .first()
            .copied()
            .ok_or(LogError::Unavailable {
                index,
                last_index: self.last_index(),
            })
    }

    async fn truncate_on_disk(&self, from_index: u64, location: EntryLocation) -> LogResult<()> {
        let fence = TruncationFence {
            segment_first_index: location.segment_first_index,
            offset: location.offset,
        };
        let mut meta = self.state.borrow().meta.clone();
        meta.truncation_fence = Some(fence);
        self.write_meta(&meta, self.durable_index()).await?;
        let (removed, file, path, erase_end) = {
            let mut state = self.state.borrow_mut();
            let erase_end = io::align_up(state.segment(location.segment_first_index).data_end);
            let removed = state.truncate_in_memory(from_index, location);
            state.buffer.drop_from_segment(location.segment_first_index);
            let segment = state.segment(location.segment_first_index);
            (
                removed,
                segment.file.clone().ok_or(LogError::Poisoned)?,
                segment.path.clone(),
                erase_end,
            )
        };
        // The cut segment's index file no longer describes it (the fence is recorded, so
        // recovery ignores the index until the cut is finished).
        segment_index::remove(&path)?;
        let dir = self.state.borrow().dir.clone();
        glommio::executor()
            .spawn_blocking(move || {
                remove_segment_files(removed.iter().rev())?;
                io::sync_directory(&dir)
            })
            .await?;
        let prefix = erase_range(&file, &path, location.offset, erase_end).await?;
        {
            let mut state = self.state.borrow_mut();
            let block_start = io::align_down(location.offset);
            state
                .buffer
                .start_segment_at(location.segment_first_index, block_start, &prefix);
            state.written_index = from_index - 1;
            state.durable_index = state.durable_index.min(from_index - 1);
        }
        meta.truncation_fence = None;
        self.write_meta(&meta, self.durable_index()).await?;
        self.state.borrow_mut().meta.truncation_fence = None;
        Ok(())
    }
}

/// Zeros `[offset, erase_end)` of a segment (keeping the bytes of `offset`'s block before
/// it) and syncs. Returns those kept bytes.
async fn erase_range(
    file: &DmaFile,
    path: &Path,
    offset: u64,
    erase_end: u64,
) -> LogResult<Vec<u8>> {
    let block_start = io::align_down(offset);
    let prefix = io::read_at(file, path, block_start, (offset - block_start) as usize).await?;
    if prefix.len() != (offset - block_start) as usize {
        return Err(LogError::Corruption {
            path: path.to_path_buf(),
            offset,
            reason: "segment shorter than its recorded data".to_string(),
        });
    }
    let end = io::align_up(erase_end).max(block_start + BLOCK_SIZE_BYTES);
    let mut position = block_start;
    let mut first = true;
    while position < end {
        let length = ((end - position) as usize).min(WRITE_CHUNK_BYTES);
        let mut buffer = glommio::allocate_dma_buffer_global(length);
        buffer.as_bytes_mut().fill(0);
        if first {
            buffer.as_bytes_mut()[..prefix.len()].copy_from_slice(&prefix);
            first = false;
        }
        io::write_all_at(file, path, buffer, position).await?;
        position += length as u64;
    }
    io::fdatasync(file, path).await?;
    Ok(prefix)
}

fn remove_prepared_leftovers(dir: &Path) -> LogResult<()> {
    let listing = std::fs::read_dir(dir).map_err(|e| LogError::io("list directory", dir, e))?;
    for item in listing {
        let item = item.map_err(|e| LogError::io("list directory", dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        let path = item.path();
        let orphan_index =
            name.ends_with(segment_index::INDEX_SUFFIX) && !path.with_extension("segment").exists();
        if name.ends_with(PREPARED_FILE_SUFFIX) || name.ends_with(".index.tmp") || orphan_index {
            // A preparation task of a log dropped a moment ago may still be finishing
            // (glommio cancels dropped tasks asynchronously) and remove its file first.
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(LogError::io("remove leftover", &path, error)),
            }
        }
    }
    Ok(())
}

/// Removes segment files and their index files (index first: an index without its segment
/// is cleaned up at open, a segment without its index is scanned).
fn remove_segment_files<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> LogResult<()> {
    for path in paths {
        segment_index::remove(path)?;
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(LogError::io("remove segment", path, error)),
        }
    }
    Ok(())
}

/// How a new segment file is made ready.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Preparation {
    /// fallocate only.
    Fallocate,
    /// Zero-fill, at most this many bytes per second (`None`: as fast as the disk goes).
    ZeroFill(Option<u64>),
}

/// Creates a segment file ready for writes: zero-filled and synced, or fallocated.
async fn create_segment_file(
    path: &Path,
    size: u64,
    preparation: Preparation,
) -> LogResult<Rc<DmaFile>> {
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| LogError::io("remove", path, e))?;
    }
    let file = io::open_read_write(path, true).await?;
    match preparation {
        Preparation::ZeroFill(limit) => zero_fill(&file, path, size, limit).await?,
        Preparation::Fallocate => file
            .pre_allocate(size, false)
            .await
            .map_err(|e| io::glommio_error("fallocate", path, e))?,
    }
    io::fdatasync(&file, path).await?;
    Ok(file)
}

/// Writes zeros over `size` bytes in small sequential writes, paced to `limit` bytes per
/// second: a background job that must not queue big writes ahead of the foreground's
/// small synced ones.
async fn zero_fill(file: &DmaFile, path: &Path, size: u64, limit: Option<u64>) -> LogResult<()> {
    let chunk = ZERO_FILL_CHUNK_BYTES.min(size as usize);
    let mut zeros = glommio::allocate_dma_buffer_global(chunk);
    zeros.as_bytes_mut().fill(0);
    let zeros = Rc::new(zeros);
    let started = std::time::Instant::now();
    let mut position = 0;
    while position + chunk as u64 <= size {
        io::write_shared_at(file, path, zeros.clone(), position).await?;
        position += chunk as u64;
        if let Some(limit) = limit {
            let due =
                started + std::time::Duration::from_secs_f64(position as f64 / limit.max(1) as f64);
            let now = std::time::Instant::now();
            if due > now {
                glommio::timer::sleep(due - now).await;
            }
        }
    }
    if position < size {
        let tail = io::aligned_buffer_from(&vec![0u8; (size - position) as usize]);
        io::write_all_at(file, path, tail, position).await?;
    }
    Ok(())
}

async fn apply_recovery(
    dir: &Path,
    plan: &RecoveryPlan,
    meta_file: &mut MetaFile,
    meta: &mut MetaState,
) -> LogResult<()> {
    for path in plan.delete.iter().rev() {
        warn!(path = %path.display(), "removing a segment beyond the end of the log or below the compaction point");
    }
    remove_segment_files(plan.delete.iter().rev())?;
    if !plan.delete.is_empty() {
        io::sync_directory(dir)?;
    }
    if let Some(cut) = &plan.tail_cut {
        log_tail_cut(cut);
        segment_index::remove(&cut.path)?;
        let deleted = plan.delete.contains(&cut.path);
        if !deleted && (cut.erase_end > cut.offset || cut.defect.is_none()) {
            let file = io::open_read_write(&cut.path, false).await?;
            erase_range(&file, &cut.path, cut.offset, cut.erase_end).await?;
        }
    }
    if meta.truncation_fence.is_some() {
        meta.truncation_fence = None;
        meta_file.write(meta).await?;
    }
    Ok(())
}

fn log_tail_cut(cut: &TailCut) {
    match cut.defect {
        Some(defect) => warn!(
            path = %cut.path.display(), offset = cut.offset, first_lost_index = cut.first_lost_index,
            ?defect, torn_write = cut.torn_write, erase_end = cut.erase_end,
            "torn write at the end of the log (unsynced, never acknowledged): truncating"
        ),
        None => info!(
            path = %cut.path.display(), offset = cut.offset,
            "finishing a suffix truncation interrupted by a crash"
        ),
    }
}

/// Feeds a recovered segment's term runs into the log's term index, skipping entries at or
/// below the compaction point.
fn push_term_runs(terms: &mut TermIndex, scanned: &ScannedSegment, compaction_index: u64) {
    let runs = &scanned.term_runs;
    for (position, &(start, term)) in runs.iter().enumerate() {
        let end = runs
            .get(position + 1)
            .map_or(scanned.last_index, |&(next, _)| next - 1);
        let start = start.max(compaction_index + 1);
        if start <= end {
            terms.push_run(start, end, term);
        }
    }
}

async fn build_state(
    dir: &Path,
    config: LogConfig,
    lock: DirLock,
    plan: RecoveryPlan,
    meta: MetaState,
    meta_file: MetaFile,
) -> LogResult<LogState> {
    let last_index = plan.last_index(&meta);
    let mut terms = TermIndex::new(meta.compaction_index, meta.compaction_term);
    let mut segments = Vec::with_capacity(plan.keep.len());
    let mut buffer = WriteBuffer::default();
    let kept = plan.keep.len();
    for (position, scanned) in plan.keep.into_iter().enumerate() {
        let mut segment = Segment::new_empty(dir, scanned.first_index);
        segment.sparse = SparseIndex::from_points(scanned.points.clone());
        segment.term_runs = scanned.term_runs.clone();
        segment.index_persisted = scanned.from_index_file;
        push_term_runs(&mut terms, &scanned, meta.compaction_index);
        segment.last_index = scanned.last_index;
        segment.data_end = scanned.data_end;
        segment.fill_clock = FillClock::new(segment.data_end);
        let file = io::open_segment(&segment.path, config.sync).await?;
        if position + 1 == kept {
            if scanned.file_length < config.segment_size_bytes {
                let reserved = file
                    .pre_allocate(config.segment_size_bytes, false)
                    .await
                    .map_err(|e| io::glommio_error("fallocate", &segment.path, e));
                match reserved {
                    // A full disk must not keep the log from opening: what it holds is
                    // read as usual, and a write that needs space fails then, clearly.
                    Err(error) if error.is_no_space() => {
                        warn!(segment = %segment.path.display(), %error, "the active segment could not be extended: the disk is full; the log opens for reads, writes need space first")
                    }
                    other => other?,
                }
            }
            let block_start = io::align_down(segment.data_end);
            buffer.start_segment_at(segment.first_index, block_start, &scanned.tail_block);
        }
        segment.file = Some(file);
        segments.push(segment);
    }
    assert_eq!(
        terms.last_index(),
        last_index,
        "term index must cover the recovered log"
    );
    info!(dir = %dir.display(), first_index = meta.compaction_index + 1, last_index, segments = segments.len(), "log opened");
    let meta_written_commit = meta.hard_state.commit;
    Ok(LogState {
        dir: dir.to_path_buf(),
        cache: TailCache::new(config.tail_cache_bytes),
        config,
        lock: Some(lock),
        segments,
        terms,
        buffer,
        first_index: meta.compaction_index + 1,
        meta,
        meta_file: Some(meta_file),
        meta_generation: 0,
        meta_written_generation: 0,
        meta_written_commit,
        last_index,
        durable_index: last_index,
        written_index: last_index,
        poisoned: false,
        prepared: None,
        prepared_count: 0,
        in_flight_bytes: 0,
        writes_chain: None,
        sync_chain: None,
        snapshot: None,
        snapshot_wanted: false,
        catch_up: Default::default(),
        disk_read_bytes: 0,
    })
}

impl LogState {
    pub(super) fn check_usable(&self) -> LogResult<()> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        Ok(())
    }

    pub(super) fn meta_dirty(&self) -> bool {
        self.meta_generation != self.meta_written_generation
    }

    /// The commit index set differs from the one the meta file holds.
    fn commit_dirty(&self) -> bool {
        self.meta.hard_state.commit != self.meta_written_commit
    }

    pub(crate) fn out_of_range(&self, index: u64) -> LogError {
        if index < self.first_index {
            LogError::Compacted {
                index,
                first_index: self.first_index,
            }
        } else {
            LogError::Unavailable {
                index,
                last_index: self.last_index,
            }
        }
    }

    pub(crate) fn check_range(&self, low: u64, high: u64) -> LogResult<()> {
        if low < self.first_index {
            return Err(LogError::Compacted {
                index: low,
                first_index: self.first_index,
            });
        }
        if high > self.last_index + 1 {
            return Err(LogError::Unavailable {
                index: high - 1,
                last_index: self.last_index,
            });
        }
        if low > high {
            return Err(LogError::InvalidRequest(format!(
                "empty range [{low}, {high})"
            )));
        }
        Ok(())
    }

    pub(super) fn segment(&self, first_index: u64) -> &Segment {
        let position = self
            .segments
            .partition_point(|s| s.first_index < first_index);
        let segment = &self.segments[position];
        assert_eq!(segment.first_index, first_index, "no segment {first_index}");
        segment
    }

    fn segment_mut(&mut self, first_index: u64) -> &mut Segment {
        let position = self
            .segments
            .partition_point(|s| s.first_index < first_index);
        let segment = &mut self.segments[position];
        assert_eq!(segment.first_index, first_index, "no segment {first_index}");
        segment
    }

    fn validate_append(&self, entries: &[Entry]) -> LogResult<()> {
        let mut last_index = self.last_index;
        let mut last_term = self.terms.last_term();
        let mut bytes = self.buffer.unflushed_bytes() + self.in_flight_bytes;
        for entry in entries {
            if entry.context.len() > usize::from(u16::MAX) {
                return Err(LogError::ContextTooLarge {
                    context_bytes: entry.context.len(),
                });
            }
            let payload = (entry.data.len() + entry.context.len()) as u64;
            if payload > u64::from(self.config.max_entry_payload_bytes) {
                return Err(LogError::EntryTooLarge {
                    payload_bytes: payload,
                    max_bytes: self.config.max_entry_payload_bytes,
                });
            }
            if entry.index != last_index + 1 || entry.term < last_term {
                return Err(LogError::NotContiguous {
                    index: entry.index,
                    term: entry.term,
                    last_index,
                    last_term,
                });
            }
            bytes += stored_size_bytes(payload as u32);
            if bytes > self.config.max_unflushed_bytes {
                return Err(LogError::WriteBufferFull {
                    unflushed_bytes: bytes,
                    limit_bytes: self.config.max_unflushed_bytes,
                });
            }
            last_index = entry.index;
            last_term = entry.term;
        }
        Ok(())
    }

    fn append_one(&mut self, entry: &Entry) {
        let entry_type = match entry.get_entry_type() {
            RaftEntryType::EntryNormal => EntryType::Normal,
            RaftEntryType::EntryConfChange => EntryType::ConfChange,
            RaftEntryType::EntryConfChangeV2 => EntryType::ConfChangeV2,
        };
        let payload = (entry.data.len() + entry.context.len()) as u32;
        let size = stored_size_bytes(payload);
        let needs_segment = match self.segments.last() {
            Some(active) => active.data_end + size > self.config.segment_size_bytes,
            None => true,
        };
        if needs_segment {
            self.segments
                .push(Segment::new_empty(&self.dir, entry.index));
        }
        let header = encode_header(
            entry.term,
            entry.index,
            entry_type,
            &entry.context,
            &entry.data,
        );
        let Some(segment) = self.segments.last_mut() else {
            unreachable!()
        };
        let offset = segment.data_end;
        let segment_first_index = segment.first_index;
        let padding = [0u8; 8];
        let padding_length = (size - HEADER_SIZE_BYTES as u64 - u64::from(payload)) as usize;
        self.buffer.write(segment_first_index, offset, &header);
        self.buffer.write(
            segment_first_index,
            offset + HEADER_SIZE_BYTES as u64,
            &entry.context,
        );
        let data_offset = offset + HEADER_SIZE_BYTES as u64 + entry.context.len() as u64;
        self.buffer
            .write(segment_first_index, data_offset, &entry.data);
        self.buffer.write(
            segment_first_index,
            data_offset + entry.data.len() as u64,
            &padding[..padding_length],
        );
        segment.sparse.observe(entry.index, offset);
        segment.observe_term(entry.index, entry.term);
        segment.data_end += size;
        segment.last_index = entry.index;
        self.terms.push(entry.index, entry.term);
        self.cache.push(CachedEntry {
            entry: entry.clone(),
            location: EntryLocation {
                segment_first_index,
                offset,
            },
        });
        self.last_index = entry.index;
    }

    /// Starts preparing the next segment file once the active one is a quarter full (or
    /// when there is no active segment). Adaptive preparation zero-fills (fastest small
    /// fdatasyncs later) unless the active segment fills faster than the zero-fill limit,
    /// where a second write of every segment would cost real bandwidth and big flushes
    /// amortize the extent conversion anyway.
    /// Where the current preparation of the next segment writes.
    fn prepared_path(&self) -> PathBuf {
        self.dir.join(format!(
            "next-{}{PREPARED_FILE_SUFFIX}",
            self.prepared_count
        ))
    }

    fn maybe_start_preparing(&mut self) {
        if let Some(active) = self.segments.last_mut() {
            let data_end = active.data_end;
            active.fill_clock.observe(data_end);
        }
        if self.prepared.is_some() {
            return;
        }
        let segment_size = self.config.segment_size_bytes;
        let preparation = match self.segments.last() {
            Some(active) if active.file.is_some() || active.data_end > 0 => {
                if active.data_end < segment_size / 4 {
                    return;
                }
                let fill_rate = active.fill_clock.rate(active.data_end);
                // Zero-fill at four times the fill rate: done well before the active
                // segment is full, gentle on the disk meanwhile.
                let paced = Preparation::ZeroFill(Some(
                    ((fill_rate * 4.0) as u64).max(MIN_ZERO_FILL_BYTES_PER_SECOND),
                ));
                match self.config.preallocation {
                    Preallocation::ZeroFill => paced,
                    Preallocation::Fallocate => Preparation::Fallocate,
                    Preallocation::Adaptive
                        if fill_rate < ADAPTIVE_ZERO_FILL_MAX_BYTES_PER_SECOND as f64 =>
                    {
                        paced
                    }
                    Preallocation::Adaptive => Preparation::Fallocate,
                }
            }
            // The first segment of a log is needed at once.
            _ if self.config.preallocation == Preallocation::Fallocate => Preparation::Fallocate,
            _ => Preparation::ZeroFill(None),
        };
        // Unique across every log instance of the process: a dropped instance's
        // preparation may still be running when the directory is opened again.
        self.prepared_count = PREPARATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let path = self.prepared_path();
        tracing::debug!(path = %path.display(), ?preparation, "preparing the next segment");
        let task = glommio::spawn_local(async move {
            let started = std::time::Instant::now();
            let file = create_segment_file(&path, segment_size, preparation).await;
            tracing::debug!(path = %path.display(), took = ?started.elapsed(), ok = file.is_ok(), "next segment prepared");
            file
        });
        self.prepared = Some(task);
    }

    pub(super) fn plan_flush(&mut self) -> FlushPlan {
        let pending_writes = self.buffer.take_for_flush();
        let mut missing_files: Vec<u64> = Vec::new();
        for write in &pending_writes {
            let segment = self.segment(write.segment_first_index);
            if segment.file.is_none() && !missing_files.contains(&segment.first_index) {
                missing_files.push(segment.first_index);
            }
        }
        self.written_index = self.last_index;
        let meta = if self.meta_dirty() {
            Some((self.meta.clone(), self.meta_generation))
        } else {
            None
        };
        let bytes: u64 = pending_writes.iter().map(|w| w.length_bytes()).sum();
        self.in_flight_bytes += bytes;
        FlushPlan {
            missing_files,
            pending_writes,
            bytes,
            upto_index: self.last_index,
            meta,
        }
    }

    /// Cuts the in-memory log at `from_index` (stored at `location`); returns the paths of
    /// segments that were wholly after it.
    fn truncate_in_memory(&mut self, from_index: u64, location: EntryLocation) -> Vec<PathBuf> {
        let keep = self
            .segments
            .partition_point(|s| s.first_index <= location.segment_first_index);
        let removed: Vec<PathBuf> = self.segments.drain(keep..).map(|s| s.path).collect();
        let segment = self.segment_mut(location.segment_first_index);
        segment.last_index = from_index - 1;
        segment.data_end = location.offset;
        segment.sparse.truncate_from(from_index);
        segment.truncate_terms_from(from_index);
        segment.index_persisted = false;
        self.terms.truncate_after(from_index - 1);
        self.cache.truncate_from(from_index);
        self.buffer
            .truncate(location.segment_first_index, location.offset);
        self.last_index = from_index - 1;
        self.durable_index = self.durable_index.min(from_index - 1);
        removed
    }

    /// Forgets entries up to `up_to_index`; returns the segment files that can be deleted
    /// (every entry at or below the point; the newest segment always stays).
    fn forget_prefix(&mut self, up_to_index: u64) -> Vec<PathBuf> {
        self.first_index = up_to_index + 1;
        self.terms.forget_before(up_to_index);
        self.cache.forget_before(up_to_index + 1);
        let mut removed = Vec::new();
        while self.segments.len() > 1 && self.segments[0].last_index <= up_to_index {
            removed.push(self.segments.remove(0).path);
        }
        removed
    }
}
