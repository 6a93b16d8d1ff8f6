//! `SimLogStore`: the log store's contract in memory, with what a crash keeps.
//!
//! It models the contract of the `CommitLog`, not its bytes: appends change memory and
//! are visible to raft-rs at once; a flush captures what it covers (entries and meta)
//! and only its completion makes them durable; a crash keeps the durable prefix, maybe a
//! prefix of the entries an unfinished flush was writing (a torn tail; nothing after a
//! hole), and the old or the new meta, never a mix. Disk work (cutting written entries,
//! installing a snapshot, removing a prefix) happens when the world completes it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::log::raft_storage::{from_conf_state, to_conf_state};
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
    /// The meta it writes after the entries.
    pub hard_state: HardStateRecord,
    /// The configuration it writes.
    pub conf_state: ConfStateRecord,
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
        let flush = PendingFlush {
            upto_index: self.last_index(),
            hard_state: self.hard_state,
            conf_state: self.conf_state.clone(),
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
            self.durable_index = self
                .durable_index
                .max(flush.upto_index.min(self.last_index()));
            self.durable_meta.hard_state = flush.hard_state;
            self.durable_meta.hard_state.commit = flush.hard_state.commit.min(self.durable_index);
            self.durable_meta.conf_state = flush.conf_state;
        }
        Ok(self.durable_index)
    }

    /// The log a crash leaves: the durable prefix, maybe a torn part of what unfinished
    /// flushes wrote, the old or the new meta.
    pub fn recover_after_crash(&self, rng: &mut Prng) -> SimLog {
        let mut recovered = SimLog {
            compaction: self.durable_meta.compaction,
            durable_meta: self.durable_meta.clone(),
            snapshot_files: self.snapshot_files.clone(),
            segment_entries: self.segment_entries,
            cache_entries: self.cache_entries,
            ..Default::default()
        };
        let mut keep_upto = self.durable_index;
        if let Some(flush) = self.in_flight.first() {
            // Writes of an unfinished flush may have landed, in any order: a prefix of
            // them survives (recovery cuts at the first hole).
            if rng.chance(1, 2) && flush.upto_index > keep_upto {
                let landed = rng.range(keep_upto, flush.upto_index.min(self.last_index()) + 1);
                if landed == flush.upto_index && rng.chance(1, 2) {
                    recovered.durable_meta.hard_state = flush.hard_state;
                    recovered.durable_meta.conf_state = flush.conf_state.clone();
                }
                keep_upto = landed;
            }
        }
        for index in recovered.compaction.0 + 1..=keep_upto {
            if let Some(entry) = self.entry(index) {
                recovered.entries.push(entry.clone());
            }
        }
        let last = recovered.last_index();
        recovered.durable_meta.hard_state.commit = recovered
            .durable_meta
            .hard_state
            .commit
            .min(last)
            .max(recovered.compaction.0);
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

    /// Disk work completed: entries from `from_index` on are gone.
    pub fn truncate_suffix(&mut self, from_index: u64) -> Result<(), StorageFailure> {
        if from_index <= self.durable_meta.hard_state.commit.max(self.compaction.0) {
            return Err(StorageFailure::Io {
                detail: format!("refused to cut committed entries from {from_index}"),
            });
        }
        self.cut_from(from_index);
        Ok(())
    }

    /// Disk work completed: the snapshot is durable and the log restarts after it.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) {
        let metadata = snapshot.get_metadata();
        let (index, term) = (metadata.index, metadata.term);
        self.snapshot_files.insert(index, snapshot.clone());
        self.snapshot_files.retain(|&i, _| i >= index);
        self.entries.clear();
        self.compaction = (index, term);
        self.written_index = index;
        self.durable_index = index;
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.conf_state = from_conf_state(metadata.get_conf_state());
        self.durable_meta.compaction = (index, term);
        self.durable_meta.conf_state = self.conf_state.clone();
        self.durable_meta.hard_state.commit = self.durable_meta.hard_state.commit.max(index);
        self.snapshot = Some(snapshot.clone());
    }

    /// Disk work completed: entries up to `up_to_index` are removed.
    pub fn remove_prefix(&mut self, up_to_index: u64) -> Result<(), StorageFailure> {
        if up_to_index > self.durable_index {
            return Err(StorageFailure::Io {
                detail: format!("cannot remove up to {up_to_index}: not durable"),
            });
        }
        let Some(term) = self.term_of(up_to_index) else {
            return Ok(());
        };
        let drop = (up_to_index - self.compaction.0) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.compaction = (up_to_index, term);
        self.durable_meta.compaction = self.compaction;
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

    /// Disk work completed: the commit index alone is durable.
    pub fn persist_commit_index(&mut self) {
        self.durable_meta.hard_state.commit = self.hard_state.commit.min(self.durable_index);
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
        self.log.borrow_mut().hard_state = hard_state;
    }

    fn set_conf_state(&mut self, conf_state: ConfStateRecord) -> Result<(), StorageFailure> {
        self.log.borrow_mut().conf_state = conf_state;
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

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let log = self.log.borrow();
        match &log.snapshot {
            Some(snapshot) if snapshot.get_metadata().index >= request_index => {
                Ok(snapshot.clone())
            }
            _ => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}
