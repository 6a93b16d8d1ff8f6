//! Catch-up reads: entries for a follower that are no longer in the store's memory are
//! read off the Ready path (R9).
//!
//! ```text
//! raft-rs send_append ─▶ view: not cached ─▶ FetchMiss, LogTemporarilyUnavailable
//! after the input ─▶ take_misses ─▶ ReadEntries (≤ MAX_CATCH_UP_READS, ≤ bytes budget;
//!                                   a miss over the bound is dropped: raft-rs asks again
//!                                   at the follower's next heartbeat answer)
//! ReadDone(entries) ─▶ stage ─▶ on_entries_fetched ─▶ raft-rs takes them, sends the append
//! ```
//!
//! The shard never waits for these reads: it keeps ticking, heartbeating and serving.

use std::collections::BTreeMap;

use raft::eraftpb::Entry;

use crate::constants::{MAX_CATCH_UP_READS, MAX_CATCH_UP_READ_BYTES};
use crate::replication::events::{Effect, OpId};
use crate::replication::log_store::{FetchMiss, LogStore, StorageFailure};
use crate::replication::replica::Replica;

/// Catch-up reads in flight.
#[derive(Default)]
pub struct CatchUpReads {
    reads: BTreeMap<OpId, FetchMiss>,
    bytes: u64,
}

impl CatchUpReads {
    /// Reads in flight.
    pub fn len(&self) -> usize {
        self.reads.len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }
}

impl<S: LogStore> Replica<S> {
    /// Turns the store's misses into reads, within the bounds.
    pub(crate) fn start_catch_up_reads(&mut self, effects: &mut Vec<Effect>) {
        for miss in self.store.take_misses() {
            let in_flight = self.catch_up.reads.values().any(|r| r.low == miss.low);
            let room = self.catch_up.reads.len() < MAX_CATCH_UP_READS
                && self.catch_up.bytes + miss.max_bytes.min(MAX_CATCH_UP_READ_BYTES)
                    <= MAX_CATCH_UP_READ_BYTES;
            if in_flight || !room || !self.is_leader() {
                continue;
            }
            let op = self.next_op_id();
            let max_bytes = miss.max_bytes.min(MAX_CATCH_UP_READ_BYTES);
            self.catch_up.bytes += max_bytes;
            effects.push(Effect::ReadEntries {
                op,
                low: miss.low,
                high: miss.high,
                max_bytes,
            });
            self.catch_up.reads.insert(op, miss);
        }
        assert!(
            self.catch_up.reads.len() <= MAX_CATCH_UP_READS,
            "catch-up reads stay bounded (A8)"
        );
    }

    /// A catch-up read ended: hand its entries to raft-rs.
    pub(crate) fn on_read_done(&mut self, op: OpId, outcome: Result<Vec<Entry>, StorageFailure>) {
        let Some(miss) = self.catch_up.reads.remove(&op) else {
            return;
        };
        self.catch_up.bytes -= miss.max_bytes.min(MAX_CATCH_UP_READ_BYTES);
        match outcome {
            Ok(entries) if entries.first().is_some_and(|e| e.index == miss.low) => {
                self.store.stage_fetched(miss.low, entries);
                self.raw.on_entries_fetched(miss.context);
                self.store.unstage(miss.low);
            }
            Ok(_) => {}
            Err(failure) => {
                // Compacted meanwhile, or unreadable: raft-rs asks again (and sends a
                // snapshot if the entries are gone).
                tracing::debug!(group = self.config.group_id, %failure, low = miss.low, "catch-up read failed");
            }
        }
    }
}
