//! The idempotent producers a replica group remembers: per (producer, topic, partition)
//! the last stored batch, to answer a retry with its first offset and to refuse what is
//! out of sequence. Bounded by idle time and by number, both decided at apply from data
//! in the log — the leaders' `proposed_at_ms` in each record batch entry and the entries'
//! order — never from this replica's clock, so every replica keeps the same table. The
//! table and its clock are part of the snapshot (`broker::snapshot`). Pure (no I/O).
//!
//! A batch of producer P, epoch E, base sequence S on a partition:
//! ```text
//! P unknown here (never seen, expired, evicted)  S == 0: stored   else UnknownProducer
//! E newer than P's epoch here                     S == 0: stored   else NewEpochNotAtZero
//! E older                                         StaleEpoch (a fenced instance)
//! E same: the last batch again (S, count, crc)    Duplicate (answered with its offset)
//!         S == the next sequence                  stored
//!         otherwise                               Gap
//! ```
//!
//! Expiry: the table's clock is the newest `proposed_at_ms` applied (so a leader with a
//! slower clock never turns it back); an entry whose last stored batch is more than
//! `idle_expiry_ms` behind it is removed. Cap: a new entry beyond `max_entries` evicts the
//! least recently used (the one whose last stored batch is oldest in the log). Entries
//! last stored by a batch without a time (entry format 1, written before this existed)
//! never expire by time, sort before every other (by key) for eviction, and take a time
//! at their next batch.

use std::collections::{BTreeSet, HashMap};

use crate::broker::state::{Applied, ProducerLimits, SequenceRefusal};

/// (producer id, topic id, partition).
pub type ProducerKey = (u64, u32, u32);

/// What the broker remembers of an idempotent producer's last batch on a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProducerSequence {
    pub(crate) epoch: u16,
    pub(crate) base_sequence: u32,
    pub(crate) record_count: u32,
    pub(crate) batch_crc32c: u32,
    pub(crate) base_offset: u64,
    /// The table's clock when its last batch was stored (0: unknown, never expires).
    pub(crate) last_used_ms: u64,
    /// Log index of its last stored batch (0: a batch without a time): the LRU order.
    pub(crate) last_use_stamp: u64,
}

/// The producers' table of one replica group.
#[derive(Debug, Default)]
pub struct ProducerTable {
    entries: HashMap<ProducerKey, ProducerSequence>,
    /// Every entry as (last use stamp, key), least recently used first.
    by_last_use: BTreeSet<(u64, ProducerKey)>,
    /// The newest `proposed_at_ms` applied (0: none yet).
    clock_ms: u64,
    limits: ProducerLimits,
}

impl ProducerTable {
    /// Most entries the table keeps.
    pub fn max_entries(&self) -> usize {
        self.limits.max_entries.max(1)
    }

    /// A table from snapshot contents (the entries and the clock).
    pub(crate) fn restore(
        entries: Vec<(ProducerKey, ProducerSequence)>,
        clock_ms: u64,
    ) -> ProducerTable {
        let mut table = ProducerTable {
            clock_ms,
            ..ProducerTable::default()
        };
        for (key, entry) in entries {
            table.by_last_use.insert((entry.last_use_stamp, key));
            table.entries.insert(key, entry);
        }
        table
    }

    /// Sets the bounds (every replica must use the same).
    pub(crate) fn set_limits(&mut self, limits: ProducerLimits) {
        self.limits = limits;
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The table's clock: the newest `proposed_at_ms` applied.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Every entry, sorted by key (a deterministic snapshot).
    pub(crate) fn sorted(&self) -> Vec<(ProducerKey, ProducerSequence)> {
        let mut entries: Vec<_> = self.entries.iter().map(|(k, v)| (*k, *v)).collect();
        entries.sort_by_key(|(key, _)| *key);
        entries
    }

    /// Moves the clock to a record batch entry's `proposed_at_ms` (never back) and forgets
    /// the entries idle for longer than the expiry.
    pub(crate) fn advance_clock(&mut self, proposed_at_ms: u64) {
        self.clock_ms = self.clock_ms.max(proposed_at_ms);
        // Entries with a time, oldest first (their times grow with their stamps).
        while let Some(&(stamp, key)) = self.by_last_use.range((1, (0, 0, 0))..).next() {
            let last_used_ms = self.entries.get(&key).map_or(0, |e| e.last_used_ms);
            if self.clock_ms.saturating_sub(last_used_ms) <= self.limits.idle_expiry_ms {
                break;
            }
            self.by_last_use.remove(&(stamp, key));
            self.entries.remove(&key);
        }
        self.check_invariants();
    }

    /// The idempotence check of a batch against what is known of its producer here.
    pub(crate) fn check(
        &self,
        key: &ProducerKey,
        epoch: u16,
        base_sequence: u32,
        record_count: u32,
        batch_crc32c: u32,
    ) -> Result<(), Applied> {
        let refuse = |expected, refusal| Err(Applied::OutOfSequence { expected, refusal });
        let Some(last) = self.entries.get(key) else {
            if base_sequence == 0 {
                return Ok(());
            }
            return refuse(0, SequenceRefusal::UnknownProducer);
        };
        let expected = last.base_sequence.wrapping_add(last.record_count);
        if epoch > last.epoch {
            if base_sequence == 0 {
                return Ok(());
            }
            return refuse(0, SequenceRefusal::NewEpochNotAtZero);
        }
        if epoch < last.epoch {
            let current = last.epoch;
            return refuse(expected, SequenceRefusal::StaleEpoch { current });
        }
        if base_sequence == last.base_sequence
            && record_count == last.record_count
            && batch_crc32c == last.batch_crc32c
        {
            return Err(Applied::Duplicate {
                base_offset: last.base_offset,
            });
        }
        if base_sequence != expected {
            return refuse(expected, SequenceRefusal::Gap);
        }
        Ok(())
    }

    /// Records a stored batch of `key` at log `index` (proposed at `proposed_at_ms`, 0 if
    /// unknown); a new entry in a full table evicts the least recently used one.
    pub(crate) fn record(
        &mut self,
        key: ProducerKey,
        mut entry: ProducerSequence,
        index: u64,
        proposed_at_ms: u64,
    ) {
        let timed = proposed_at_ms != 0;
        entry.last_use_stamp = if timed { index } else { 0 };
        entry.last_used_ms = if timed { self.clock_ms } else { 0 };
        match self.entries.get(&key) {
            Some(old) => {
                self.by_last_use.remove(&(old.last_use_stamp, key));
            }
            None => {
                while self.entries.len() >= self.limits.max_entries.max(1) {
                    let Some((stamp, victim)) = self.by_last_use.pop_first() else {
                        break;
                    };
                    assert!(stamp <= entry.last_use_stamp || !timed, "LRU order");
                    self.entries.remove(&victim);
                }
            }
        }
        self.by_last_use.insert((entry.last_use_stamp, key));
        self.entries.insert(key, entry);
        self.check_invariants();
    }

    /// Forgets every producer of a deleted topic.
    pub(crate) fn remove_topic(&mut self, topic_id: u32) {
        self.entries.retain(|&(_, topic, _), _| topic != topic_id);
        self.by_last_use
            .retain(|&(_, (_, topic, _))| topic != topic_id);
        self.check_invariants();
    }

    fn check_invariants(&self) {
        assert_eq!(
            self.entries.len(),
            self.by_last_use.len(),
            "producer table and its LRU order disagree"
        );
    }
}
