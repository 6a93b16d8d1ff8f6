//! Snapshots of the applied state and retention cuts, decided from the store's segment
//! layout and the ticks' wall-clock time; the files themselves are the driver's work.
//!
//! ```text
//! applied passes a sealed segment's end ─▶ WriteSnapshotFile ─▶ DiskDone: kept
//! every RETENTION_CHECK_TICKS: cut = oldest segments over the byte budget or too old
//!     ─▶ RemovePrefix at the first kept snapshot at or after the cut ─▶ DiskDone:
//!        the store hands that snapshot out; the state forgets batches below it
//! every commit_persist_ticks: the commit index alone changed ─▶ PersistCommitIndex
//! ```

use raft::eraftpb::Snapshot;

use crate::broker::snapshot::encode_state;
use crate::log::raft_storage::to_conf_state;
use crate::replication::events::{DiskWork, Effect, OpId};
use crate::replication::log_store::{LogStore, StorageFailure};
use crate::replication::replica::Replica;

/// Ticks between two retention checks.
pub const RETENTION_CHECK_TICKS: u64 = 100;

/// Snapshots of the applied state kept in memory as retention points.
pub const MAX_KEPT_SNAPSHOTS: usize = 2;

impl<S: LogStore> Replica<S> {
    /// Once the applied index passes the end of a newly sealed segment, writes a snapshot
    /// of the applied state there (a future retention point). Not while the configuration
    /// in force is ahead of the applied index (a learner replaying the log below the
    /// change that added it, a restart replaying below its stored configuration): the
    /// configuration as of the applied index is not known then, and a snapshot carrying a
    /// later one would hand a joining replica changes it then applies a second time.
    pub(crate) fn maybe_take_snapshot(&mut self, effects: &mut Vec<Effect>) {
        if !self.config.retention.enabled() || self.disk_work_running(is_snapshot_write) {
            return;
        }
        let sealed = self.store.last_sealed_index();
        let applied = self.state.applied_index();
        if sealed <= self.last_snapshot_index || applied < sealed {
            return;
        }
        self.write_snapshot_of_applied(effects);
    }

    /// A peer needs a snapshot the store does not hold (a replica added after the one at
    /// the compaction point is not in its configuration, and would refuse it): a leader
    /// writes one of its applied state now and hands it out once written.
    pub(crate) fn take_snapshot_for_a_peer(&mut self, effects: &mut Vec<Effect>) {
        if !self.store.take_snapshot_wanted() {
            return;
        }
        if !self.is_leader() || self.disk_work_running(is_snapshot_write) {
            return; // raft-rs asks again at its next probe
        }
        self.snapshot_for_a_peer = self.write_snapshot_of_applied(effects);
    }

    /// Writes a snapshot of the applied state to its file; whether one was started.
    fn write_snapshot_of_applied(&mut self, effects: &mut Vec<Effect>) -> bool {
        let applied = self.state.applied_index();
        let conf_state = self.store.conf_state();
        if conf_state.index > applied || applied == 0 {
            return false;
        }
        let Some(term) = self.store.term(applied) else {
            return false;
        };
        let mut snapshot = Snapshot {
            data: encode_state(&self.state, false).into(),
            ..Default::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = applied;
        metadata.term = term;
        metadata.set_conf_state(to_conf_state(&conf_state));
        self.start_disk_work(DiskWork::WriteSnapshotFile { snapshot }, effects);
        true
    }

    /// Periodic storage upkeep, from the tick: retention cuts and the commit index.
    pub(crate) fn maintain_storage(&mut self, effects: &mut Vec<Effect>) {
        let commit = self.store.hard_state().commit;
        if self
            .ticks
            .is_multiple_of(self.config.commit_persist_ticks.max(1))
            && commit > self.persisted_commit
            && !self.disk_work_running(|w| matches!(w, DiskWork::PersistCommitIndex))
        {
            self.persisted_commit = commit;
            self.start_disk_work(DiskWork::PersistCommitIndex, effects);
        }
        if self.ticks.is_multiple_of(RETENTION_CHECK_TICKS) {
            self.enforce_retention(effects);
        }
    }

    fn enforce_retention(&mut self, effects: &mut Vec<Effect>) {
        if !self.config.retention.enabled()
            || self.disk_work_running(|w| matches!(w, DiskWork::RemovePrefix { .. }))
        {
            return;
        }
        let cut = self.retention_cut();
        if cut == 0 {
            return;
        }
        let durable = self.durable_index;
        let compaction = self.store.compaction_point().0;
        let Some(at) = self
            .kept_snapshots
            .keys()
            .copied()
            .find(|&i| i >= cut && i <= durable && i > compaction)
        else {
            return;
        };
        self.start_disk_work(DiskWork::RemovePrefix { up_to_index: at }, effects);
    }

    /// The last index retention would remove: as many of the oldest sealed segments as
    /// bring the log within the byte budget, and every sealed one older than the age.
    fn retention_cut(&self) -> u64 {
        let layout = self.store.segments();
        let sealed = &layout[..layout.len().saturating_sub(1)];
        let mut cut = 0;
        if let Some(budget) = self.config.retention.bytes {
            let mut remaining: u64 = layout.iter().map(|s| s.bytes).sum();
            for segment in sealed {
                if remaining <= budget {
                    break;
                }
                remaining -= segment.bytes;
                cut = segment.last_index;
            }
        }
        if let Some(age_ms) = self.config.retention.age_ms {
            for segment in sealed {
                if self.now_ms.saturating_sub(segment.written_at_ms) <= age_ms {
                    break;
                }
                cut = cut.max(segment.last_index);
            }
        }
        cut
    }

    fn disk_work_running(&self, kind: fn(&DiskWork) -> bool) -> bool {
        self.disk_ops.values().any(kind)
    }

    fn start_disk_work(&mut self, work: DiskWork, effects: &mut Vec<Effect>) {
        let op = self.next_op_id();
        self.disk_ops.insert(op, work.clone());
        effects.push(Effect::Disk { op, work });
    }

    /// Disk work that did not park a Ready ended.
    pub(crate) fn on_disk_done(
        &mut self,
        op: OpId,
        outcome: Result<(), StorageFailure>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(work) = self.disk_ops.remove(&op) else {
            return;
        };
        if let Err(failure) = outcome {
            // Snapshot files and retention are retried later; the log itself is fine.
            tracing::warn!(group = self.config.group_id, %failure, ?op, "disk work failed; retried later");
            if matches!(work, DiskWork::PersistCommitIndex) {
                self.persisted_commit = 0;
            }
            return;
        }
        match work {
            DiskWork::WriteSnapshotFile { snapshot } => {
                let index = snapshot.get_metadata().index;
                self.last_snapshot_index = self.last_snapshot_index.max(index);
                if std::mem::take(&mut self.snapshot_for_a_peer) {
                    self.store.set_snapshot(snapshot.clone());
                }
                self.kept_snapshots.insert(index, snapshot);
                self.forget_old_snapshots();
            }
            DiskWork::RemovePrefix { up_to_index } => {
                // The snapshot the cut was started at is pinned while it runs: without it
                // the store is compacted with no snapshot to send (seed 0xae9e).
                // A leader's snapshot installed meanwhile at or past the cut replaced the
                // log and its snapshot (seed 0x3).
                if up_to_index <= self.installed_at {
                    return;
                }
                let snapshot = self.kept_snapshots.get(&up_to_index).cloned();
                let snapshot = snapshot.unwrap_or_else(|| {
                    panic!(
                        "the snapshot at {up_to_index} was forgotten while the log was cut there"
                    )
                });
                self.store.set_snapshot(snapshot);
                self.kept_snapshots.retain(|&i, _| i >= up_to_index);
                self.state.forget_below(up_to_index + 1);
                tracing::info!(
                    group = self.config.group_id,
                    up_to = up_to_index,
                    "retention removed the log's oldest segments"
                );
            }
            DiskWork::TruncateSuffix { .. }
            | DiskWork::InstallSnapshot { .. }
            | DiskWork::PersistCommitIndex => {}
        }
        let _ = effects;
    }

    /// Keeps the newest `MAX_KEPT_SNAPSHOTS` snapshots, and any a running cut needs.
    fn forget_old_snapshots(&mut self) {
        let pinned: Vec<u64> = self
            .disk_ops
            .values()
            .filter_map(|w| match w {
                DiskWork::RemovePrefix { up_to_index } => Some(*up_to_index),
                _ => None,
            })
            .collect();
        let mut removable: Vec<u64> = self
            .kept_snapshots
            .keys()
            .copied()
            .filter(|i| !pinned.contains(i))
            .collect();
        removable.reverse();
        while self.kept_snapshots.len() > MAX_KEPT_SNAPSHOTS {
            let Some(oldest) = removable.pop() else { break };
            self.kept_snapshots.remove(&oldest);
        }
    }

    /// The snapshot kept at `index`, for the driver's prefix removal.
    pub fn kept_snapshot(&self, index: u64) -> Option<&Snapshot> {
        self.kept_snapshots.get(&index)
    }
}

fn is_snapshot_write(work: &DiskWork) -> bool {
    matches!(work, DiskWork::WriteSnapshotFile { .. })
}
