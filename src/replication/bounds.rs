//! The replica's memory bounds as one check: what each of its queues, tables and maps
//! may hold. The simulator runs it after every step; it reads and never changes state.
//!
//! The outbox (persisted messages waiting for their flush) holds one entry per Ready taken
//! while flushes run; at `MAX_OUTBOX_READIES` no Ready is taken until a flush completes
//! (the inputs meanwhile merge into the next Ready). The simulator also reports the
//! largest it saw.

use crate::constants::{MAX_CATCH_UP_READS, MAX_OUTBOX_READIES};
use crate::replication::log_store::LogStore;
use crate::replication::ready_cycle::MAX_FLUSHES_IN_FLIGHT;
use crate::replication::replica::{Replica, MAX_PARKED_INPUTS};
use crate::replication::retention::MAX_KEPT_SNAPSHOTS;

/// Disk work running at once: a parked Ready's, a snapshot file, a retention cut and the
/// commit index (one of each kind).
pub const MAX_DISK_WORK: usize = 4;

impl<S: LogStore> Replica<S> {
    /// The first bound that does not hold: (what, held, bound).
    pub fn broken_bound(&self) -> Option<(&'static str, usize, usize)> {
        let parked_inputs = self.parked.as_ref().map_or(0, |p| p.queue.len());
        let checks = [
            (
                "waiting proposals",
                self.waiters.len(),
                self.config.max_waiting_proposals,
            ),
            (
                "flushes in flight",
                self.flushes.len(),
                MAX_FLUSHES_IN_FLIGHT,
            ),
            (
                "early flush results",
                self.early_flushes.len(),
                MAX_FLUSHES_IN_FLIGHT,
            ),
            (
                "inputs queued behind a parked Ready",
                parked_inputs,
                MAX_PARKED_INPUTS,
            ),
            ("catch-up reads", self.catch_up.len(), MAX_CATCH_UP_READS),
            (
                "Readies waiting in the outbox",
                self.outbox.len(),
                MAX_OUTBOX_READIES,
            ),
            (
                "snapshots in flight",
                self.snapshots_in_flight.len(),
                self.voter_count(),
            ),
            ("disk work", self.disk_ops.len(), MAX_DISK_WORK),
            // One more while a retention cut pins an older one.
            (
                "kept snapshots",
                self.kept_snapshots.len(),
                MAX_KEPT_SNAPSHOTS + 1,
            ),
            (
                "idempotent producer entries",
                self.state.producer_entries(),
                self.state.max_producer_entries(),
            ),
        ];
        checks.into_iter().find(|(_, held, bound)| held > bound)
    }

    /// Readies whose messages wait for a flush.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }
}
