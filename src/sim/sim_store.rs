//! `SimLogStore`: the log store's contract in memory, with what a crash keeps.
//!
//! It models the contract of the `CommitLog`, not its bytes: appends change memory and
//! are visible to raft-rs at once; a flush captures what it covers and only its
//! completion makes it durable; a crash keeps the durable prefix, maybe a prefix of the
//! entries unfinished flushes were writing (a torn tail; nothing after a hole), and the
//! old meta or one an unfinished flush wrote, never a mix (`CrashOutcome`). Disk work
//! (cutting written entries, installing a snapshot, removing a prefix) happens when the
//! world completes it.
//!
//! The meta (hard state, configuration, compaction point) is durable as the `CommitLog`
//! writes its meta file, no more often: a flush writes the meta it captured only if the
//! term, vote or configuration changed since a flush last wrote it (a commit index alone
//! waits); `PersistCommitIndex` writes it when the commit index differs from the one
//! written; cutting written entries, removing a prefix and installing a snapshot write
//! it too. Each write takes the whole meta as set then, the commit index clamped to what
//! is durable. `log::tests::sim_store_agrees` checks this against the real log.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::log::raft_storage::{from_conf_state, snapshot_for, to_conf_state};
use crate::log::{ConfStateRecord, HardStateRecord};
use crate::replication::events::DiskWork;
use crate::replication::log_store::{FetchMiss, LogStore, SegmentSummary, StorageFailure};
use crate::replication::prng::Prng;
use crate::replication::replica::entry_bytes;

/// What a flush covers, captured when it starts.
#[derive(Clone, Debug)]
pub struct PendingFlush {
    /// Every entry up to here is durable once it completes.
    pub upto_index: u64,
    /// The meta it writes after the entries, if it changed since a flush last wrote it.
    pub meta: Option<PlannedMeta>,
}

/// The meta a flush captured to write.
#[derive(Clone, Debug)]
pub struct PlannedMeta {
    /// Term, vote, commit.
    pub hard_state: HardStateRecord,
    /// Configuration.
    pub conf_state: ConfStateRecord,
    /// Its change count (`SimLog::meta_generation`).
    pub generation: u64,
}

/// What a crash keeps of the flushes it interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashOutcome {
    /// Entries up to here survive: the durable index, or into what unfinished flushes
    /// were writing.
    pub landed: u64,
    /// The unfinished flush (its position in `in_flight`) whose meta write was the last
    /// to land; `None`: the durable meta stands.
    pub meta_of: Option<usize>,
}

/// The durable part of the meta.
#[derive(Clone, Debug, Default)]
pub struct DurableMeta {
    /// Term, vote, commit.
    pub hard_state: HardStateRecord,
    /// Configuration.
    pub conf_state: ConfStateRecord,
    /// Compaction point.
    pub compaction: (u64, u64),
}

/// The simulated log of one replica.
#[derive(Debug, Default)]
pub struct SimLog {
    /// Entries from `compaction.0 + 1` on.
    pub entries: Vec<Entry>,
    /// Index and term of the last removed entry.
    pub compaction: (u64, u64),
    /// Current hard state.
    pub hard_state: HardStateRecord,
    /// Current configuration.
    pub conf_state: ConfStateRecord,
    /// What raft-rs is handed as the snapshot.
    pub snapshot: Option<Snapshot>,
    /// A peer needs a snapshot newer than `snapshot`.
    pub snapshot_wanted: bool,
    /// Last index handed to a flush.
    pub written_index: u64,
    /// Last durable index.
    pub durable_index: u64,
    /// The meta as the last completed write left it.
    pub durable_meta: DurableMeta,
    /// Snapshot files, durable.
    pub snapshot_files: BTreeMap<u64, Snapshot>,
    /// Flushes started and not completed, in order.
    pub in_flight: Vec<PendingFlush>,
    /// Changes of term, vote or configuration so far (the `CommitLog`'s meta generation).
    pub meta_generation: u64,
    /// The newest generation a flush wrote.
    pub meta_written_generation: u64,
    /// Entries per simulated segment (retention works on whole segments).
    pub segment_entries: u64,
    /// The next append fails without poisoning (an `EntryTooLarge` between nodes with
    /// different limits): the H2 fault.
    pub refuse_next_append: bool,
    /// A failed store takes no more writes.
    pub poisoned: bool,
    /// Entries kept in memory for followers (the tail cache): older ones are read off
    /// the Ready path (0: all in memory).
    pub cache_entries: u64,
    /// Catch-up reads asked for, and entries read for them.
    pub catch_up: crate::log::raft_storage::CatchUp,
}

impl SimLog {
    fn first_index(&self) -> u64 {
        self.compaction.0 + 1
    }

    fn last_index(&self) -> u64 {
        self.compaction.0 + self.entries.len() as u64
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index < self.first_index() {
            return None;
        }
        self.entries.get((index - self.first_index()) as usize)
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.compaction.0 {
            return Some(self.compaction.1);
        }
        self.entry(index).map(|e| e.term)
    }

    fn cut_from(&mut self, from_index: u64) {
        let keep = from_index.saturating_sub(self.first_index()) as usize;
        self.entries.truncate(keep);
        self.written_index = self.written_index.min(from_index - 1);
        self.durable_index = self.durable_index.min(from_index - 1);
    }

    /// Entries `[low, high)` up to about `max_size` bytes (at least one).
    pub fn read(&self, low: u64, high: u64, max_size: Option<u64>) -> Vec<Entry> {
        let first = self.first_index();
        let start = low.saturating_sub(first) as usize;
        let end = (high.min(self.last_index() + 1).saturating_sub(first) as usize).max(start);
        let mut entries = self.entries[start.min(self.entries.len())..end].to_vec();
        raft::util::limit_size(&mut entries, max_size);
        entries
    }

    /// Starts a flush of everything appended so far.
    pub fn begin_flush(&mut self) -> PendingFlush {
        self.written_index = self.last_index();
        let meta_changed = self.meta_generation != self.meta_written_generation;
        let flush = PendingFlush {
            upto_index: self.last_index(),
            meta: meta_changed.then(|| PlannedMeta {
                hard_state: self.hard_state,
                conf_state: self.conf_state.clone(),
                generation: self.meta_generation,
            }),
        };
        self.in_flight.push(flush.clone());
        flush
    }

    /// Completes the oldest flush: its entries and meta are durable.
    pub fn complete_flush(
        &mut self,
        failure: Option<StorageFailure>,
    ) -> Result<u64, StorageFailure> {
        let flush = if self.in_flight.is_empty() {
            None
        } else {
            Some(self.in_flight.remove(0))
        };
        if self.poisoned {
            return Err(StorageFailure::Io {
                detail: "the log failed earlier".to_string(),
            });
        }
        if let Some(failure) = failure {
            self.poisoned = true;
            return Err(failure);
        }
        if let Some(flush) = flush {
            if let Some(meta) = flush.meta {
                if meta.generation > self.meta_written_generation {
                    self.write_meta(meta.hard_state, meta.conf_state, flush.upto_index);
                    self.meta_written_generation = meta.generation;
                }
            }
            self.durable_index = self
                .durable_index
                .max(flush.upto_index.min(self.last_index()));
        }
        Ok(self.durable_index)
    }

    /// The meta file is written: this hard state and configuration, the compaction
    /// point, the commit index clamped to `commit_bound` (what is durable).
    fn write_meta(
        &mut self,
        mut hard_state: HardStateRecord,
        conf_state: ConfStateRecord,
        commit_bound: u64,
    ) {
        hard_state.commit = hard_state.commit.min(commit_bound.max(self.compaction.0));
        self.durable_meta = DurableMeta {
            hard_state,
            conf_state,
            compaction: self.compaction,
        };
    }

    /// The meta file is written with the meta as set now.
    fn write_current_meta(&mut self, commit_bound: u64) {
        self.write_meta(self.hard_state, self.conf_state.clone(), commit_bound);
    }

    fn set_hard_state(&mut self, hard_state: HardStateRecord) {
        let old = self.hard_state;
        self.hard_state = hard_state;
        if old.term != hard_state.term || old.vote != hard_state.vote {
            self.meta_generation += 1;
        }
    }

    fn set_conf_state(&mut self, conf_state: ConfStateRecord) {
        if self.conf_state != conf_state {
            self.conf_state = conf_state;
            self.meta_generation += 1;
        }
    }

    /// The log a crash leaves: the durable prefix, maybe a torn part of what unfinished
    /// flushes wrote, the old or a new meta.
    pub fn recover_after_crash(&self, rng: &mut Prng) -> SimLog {
        let outcome = self.draw_crash_outcome(rng);
        self.recover_as(outcome)
    }

    /// How far a crash may keep entries that unfinished flushes were writing: into the
    /// last of them. Every running flush may have reached the disk before the crash with
    /// nobody told yet (`sim_store_agrees` seed 0x2: with two flushes running, only the
    /// first one's entries could come back, while the CommitLog brought back both).
    fn crash_reach(&self) -> u64 {
        let reach = self.in_flight.last().map_or(0, |flush| flush.upto_index);
        reach.min(self.last_index()).max(self.durable_index)
    }

    /// Unfinished flushes (positions in `in_flight`) whose meta write may have landed when
    /// the entries up to `landed` did: each writes its meta after all its entries, if it
    /// carries one newer than the last written.
    fn meta_candidates(&self, landed: u64) -> Vec<usize> {
        let mut written = self.meta_written_generation;
        let mut candidates = Vec::new();
        for (position, flush) in self.in_flight.iter().enumerate() {
            if flush.upto_index > landed {
                break;
            }
            if let Some(meta) = flush.meta.as_ref().filter(|m| m.generation > written) {
                written = meta.generation;
                candidates.push(position);
            }
        }
        candidates
    }

    fn draw_crash_outcome(&self, rng: &mut Prng) -> CrashOutcome {
        let mut outcome = CrashOutcome {
            landed: self.durable_index,
            meta_of: None,
        };
        let reach = self.crash_reach();
        // Writes of unfinished flushes may have landed, in any order: a prefix of them
        // survives (recovery cuts at the first hole).
        if reach > self.durable_index && rng.chance(1, 2) {
            outcome.landed = rng.range(self.durable_index, reach + 1);
            let candidates = self.meta_candidates(outcome.landed);
            let pick = rng.range(0, candidates.len() as u64 + 1) as usize;
            outcome.meta_of = candidates.get(pick).copied();
        }
        outcome
    }

    /// Whether a crash now may have this outcome.
    pub fn crash_outcome_possible(&self, outcome: CrashOutcome) -> bool {
        let landed = outcome.landed >= self.durable_index && outcome.landed <= self.crash_reach();
        landed
            && outcome
                .meta_of
                .is_none_or(|position| self.meta_candidates(outcome.landed).contains(&position))
    }

    /// The log a crash with this outcome leaves (`crash_outcome_possible`).
    pub fn recover_as(&self, outcome: CrashOutcome) -> SimLog {
        let mut recovered = SimLog {
            compaction: self.durable_meta.compaction,
            durable_meta: self.durable_meta.clone(),
            snapshot_files: self.snapshot_files.clone(),
            segment_entries: self.segment_entries,
            cache_entries: self.cache_entries,
            ..Default::default()
        };
        if let Some(position) = outcome.meta_of {
            let flush = &self.in_flight[position];
            if let Some(meta) = &flush.meta {
                let mut hard_state = meta.hard_state;
                hard_state.commit = hard_state
                    .commit
                    .min(flush.upto_index.max(recovered.compaction.0));
                recovered.durable_meta.hard_state = hard_state;
                recovered.durable_meta.conf_state = meta.conf_state.clone();
            }
        }
        for index in recovered.compaction.0 + 1..=outcome.landed {
            if let Some(entry) = self.entry(index) {
                recovered.entries.push(entry.clone());
            }
        }
        let last = recovered.last_index();
        // Taken as written, as the CommitLog's recovery does (no clamping that would hide
        // a bad write): above the last entry it refuses to open (committed data lost),
        // below the compaction point raft-rs refuses the hard state.
        let commit = recovered.durable_meta.hard_state.commit;
        assert!(
            commit >= recovered.compaction.0 && commit <= last,
            "the durable commit index {commit} lies outside the recovered log ({}, {last}]",
            recovered.compaction.0
        );
        recovered.hard_state = recovered.durable_meta.hard_state;
        recovered.conf_state = recovered.durable_meta.conf_state.clone();
        recovered.written_index = last;
        recovered.durable_index = last;
        recovered.snapshot = recovered
            .snapshot_files
            .get(&recovered.compaction.0)
            .cloned();
        recovered
    }

    /// Disk work completed: entries from `from_index` on are gone. Cutting entries
    /// already written records the cut in the meta file (with the meta as set).
    pub fn truncate_suffix(&mut self, from_index: u64) -> Result<(), StorageFailure> {
        if from_index <= self.hard_state.commit.max(self.compaction.0) {
            return Err(StorageFailure::Io {
                detail: format!("refused to cut committed entries from {from_index}"),
            });
        }
        if from_index > self.last_index() {
            return Ok(());
        }
        let on_disk = from_index <= self.written_index;
        self.cut_from(from_index);
        if on_disk {
            self.write_current_meta(self.durable_index);
        }
        Ok(())
    }

    /// Disk work completed: the snapshot is durable and the log restarts after it, its
    /// configuration and compaction point written to the meta file together.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) {
        let metadata = snapshot.get_metadata();
        let (index, term) = (metadata.index, metadata.term);
        self.snapshot_files.insert(index, snapshot.clone());
        self.snapshot_files.retain(|&i, _| i >= index);
        self.set_conf_state(from_conf_state(metadata.get_conf_state(), metadata.index));
        self.entries.clear();
        self.compaction = (index, term);
        self.written_index = index;
        self.durable_index = index;
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.write_current_meta(index);
        self.snapshot = Some(snapshot.clone());
    }

    /// Disk work completed: entries up to `up_to_index` are removed (the new compaction
    /// point written to the meta file, with the meta as set) and older snapshot files.
    pub fn remove_prefix(&mut self, up_to_index: u64) -> Result<(), StorageFailure> {
        if up_to_index > self.durable_index {
            return Err(StorageFailure::Io {
                detail: format!("cannot remove up to {up_to_index}: not durable"),
            });
        }
        if up_to_index > self.compaction.0 {
            let Some(term) = self.term_of(up_to_index) else {
                unreachable!("a durable index past the compaction point has an entry")
            };
            let drop = (up_to_index - self.compaction.0) as usize;
            self.entries.drain(..drop.min(self.entries.len()));
            self.compaction = (up_to_index, term);
            self.write_current_meta(self.durable_index);
        }
        self.snapshot_files.retain(|&i, _| i >= up_to_index);
        Ok(())
    }

    /// Disk work completed, as the world carries it out for `Effect::Disk` (the driver's
    /// counterpart is `shard::group_driver::carry_out_disk_work`).
    pub fn carry_out(&mut self, work: &DiskWork) -> Result<(), StorageFailure> {
        match work {
            DiskWork::TruncateSuffix { from_index } => self.truncate_suffix(*from_index),
            DiskWork::InstallSnapshot { snapshot } => {
                self.install_snapshot(snapshot);
                Ok(())
            }
            DiskWork::WriteSnapshotFile { snapshot } => {
                self.snapshot_files
                    .insert(snapshot.get_metadata().index, snapshot.clone());
                Ok(())
            }
            DiskWork::RemovePrefix { up_to_index } => self.remove_prefix(*up_to_index),
            DiskWork::PersistCommitIndex => {
                self.persist_commit_index();
                Ok(())
            }
        }
    }

    /// Disk work completed: the meta is written if the commit index differs from the one
    /// written (the commit index clamped to what is durable).
    pub fn persist_commit_index(&mut self) {
        if self.hard_state.commit != self.durable_meta.hard_state.commit {
            self.write_current_meta(self.durable_index);
        }
    }
}

/// The store handed to a replica; the world keeps a clone to flush and crash it.
#[derive(Clone, Debug, Default)]
pub struct SimLogStore {
    /// The shared log.
    pub log: Rc<RefCell<SimLog>>,
}

impl SimLogStore {
    /// A store over `log`.
    pub fn new(log: SimLog) -> SimLogStore {
        SimLogStore {
            log: Rc::new(RefCell::new(log)),
        }
    }
}

impl LogStore for SimLogStore {
    type View = SimLogStore;

    fn view(&self) -> SimLogStore {
        self.clone()
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageFailure> {
        let mut log = self.log.borrow_mut();
        if log.poisoned {
            return Err(StorageFailure::Io {
                detail: "the log failed earlier".to_string(),
            });
        }
        if std::mem::take(&mut log.refuse_next_append) {
            return Err(StorageFailure::Io {
                detail: "entry payload exceeds this node's limit".to_string(),
            });
        }
        for entry in entries {
            assert_eq!(
                entry.index,
                log.last_index() + 1,
                "appends continue the log"
            );
            log.entries.push(entry.clone());
        }
        Ok(())
    }

    fn truncate_unwritten_suffix(&mut self, from_index: u64) -> Result<(), StorageFailure> {
        let mut log = self.log.borrow_mut();
        assert!(
            from_index > log.written_index,
            "only unwritten entries are cut in memory"
        );
        if from_index <= log.last_index() {
            log.cut_from(from_index);
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardStateRecord) {
        self.log.borrow_mut().set_hard_state(hard_state);
    }

    fn set_conf_state(&mut self, conf_state: ConfStateRecord) -> Result<(), StorageFailure> {
        self.log.borrow_mut().set_conf_state(conf_state);
        Ok(())
    }

    fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.log.borrow_mut().snapshot = Some(snapshot);
    }

    fn hard_state(&self) -> HardStateRecord {
        self.log.borrow().hard_state
    }

    fn conf_state(&self) -> ConfStateRecord {
        self.log.borrow().conf_state.clone()
    }

    fn first_index(&self) -> u64 {
        self.log.borrow().first_index()
    }

    fn last_index(&self) -> u64 {
        self.log.borrow().last_index()
    }

    fn written_index(&self) -> u64 {
        self.log.borrow().written_index
    }

    fn durable_index(&self) -> u64 {
        self.log.borrow().durable_index
    }

    fn compaction_point(&self) -> (u64, u64) {
        self.log.borrow().compaction
    }

    fn term(&self, index: u64) -> Option<u64> {
        self.log.borrow().term_of(index)
    }

    fn unflushed_bytes(&self) -> u64 {
        let log = self.log.borrow();
        let durable = log.durable_index;
        log.entries
            .iter()
            .rev()
            .take_while(|e| e.index > durable)
            .map(entry_bytes)
            .sum()
    }

    fn last_sealed_index(&self) -> u64 {
        let log = self.log.borrow();
        let per = log.segment_entries.max(1);
        let last = log.last_index();
        if last == 0 {
            return 0;
        }
        ((last - 1) / per) * per
    }

    fn take_snapshot_wanted(&mut self) -> bool {
        std::mem::take(&mut self.log.borrow_mut().snapshot_wanted)
    }

    fn take_misses(&mut self) -> Vec<FetchMiss> {
        std::mem::take(&mut self.log.borrow_mut().catch_up.misses)
    }

    fn stage_fetched(&mut self, low: u64, entries: Vec<Entry>) {
        self.log.borrow_mut().catch_up.staged.insert(low, entries);
    }

    fn unstage(&mut self, low: u64) {
        self.log.borrow_mut().catch_up.staged.remove(&low);
    }

    fn segments(&self) -> Vec<SegmentSummary> {
        let log = self.log.borrow();
        let per = log.segment_entries.max(1);
        let mut segments: Vec<SegmentSummary> = Vec::new();
        for entry in &log.entries {
            let first = ((entry.index - 1) / per) * per + 1;
            match segments.last_mut() {
                Some(s) if s.first_index == first.max(log.first_index()) => {
                    s.last_index = entry.index;
                    s.bytes += entry_bytes(entry);
                }
                _ => segments.push(SegmentSummary {
                    first_index: first.max(log.first_index()),
                    last_index: entry.index,
                    bytes: entry_bytes(entry),
                    written_at_ms: 0,
                }),
            }
        }
        segments
    }
}

impl Storage for SimLogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let log = self.log.borrow();
        let mut hard_state = HardState::default();
        hard_state.term = log.hard_state.term;
        hard_state.vote = log.hard_state.vote;
        hard_state.commit = log.hard_state.commit;
        let conf_state: ConfState = to_conf_state(&log.conf_state);
        Ok(RaftState::new(hard_state, conf_state))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let mut log = self.log.borrow_mut();
        if low < log.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > log.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let cached_from = log.last_index().saturating_sub(log.cache_entries);
        if log.cache_entries > 0 && low <= cached_from && context.can_async() {
            return log.catch_up.serve(low, high, max_size.into(), context);
        }
        Ok(log.read(low, high, max_size.into()))
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let log = self.log.borrow();
        log.term_of(index).ok_or_else(|| {
            if index < log.compaction.0 {
                raft::Error::Store(StorageError::Compacted)
            } else {
                raft::Error::Store(StorageError::Unavailable)
            }
        })
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.log.borrow().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.log.borrow().last_index())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let mut log = self.log.borrow_mut();
        let log = &mut *log;
        snapshot_for(
            log.snapshot.as_ref(),
            request_index,
            to,
            &mut log.snapshot_wanted,
        )
    }
}
