//! The properties every run checks (`../shared/TESTING.md` P1-P8, SIMULATION.md S1-S8),
//! as the run goes and at its end, with what only the world knows (every durable state).
//! S10, the consumer groups', lives with the group client that makes the history it reads
//! (`world::groups`).

use std::collections::BTreeMap;

use raft::eraftpb::{Message, MessageType};

use crate::broker::log_entry::BrokerEntry;
use crate::broker::snapshot::encode_state;
use crate::replication::membership::Membership;
use crate::replication::replica::Replica;
use crate::sim::sim_store::{SimLog, SimLogStore};
use crate::sim::workload::BatchRecord;

/// A broken property.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Which property (S1, S2, ..., P1, liveness).
    pub property: &'static str,
    /// What was seen.
    pub detail: String,
}

/// Checks made as the run goes.
#[derive(Default)]
pub struct Checker {
    /// Leader of each term seen.
    leaders: BTreeMap<u64, u64>,
    /// The one (term, crc32c) of every committed index (S2).
    committed: BTreeMap<u64, (u64, u32)>,
    /// Per node: highest commit checked.
    checked_commit: BTreeMap<u64, u64>,
}

fn violation(property: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { property, detail })
}

impl Checker {
    /// S1: at most one leader per term.
    pub fn leader(&mut self, node: u64, term: u64) -> Result<(), Violation> {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => violation(
                "S1",
                format!("nodes {other} and {node} both lead term {term}"),
            ),
            _ => Ok(()),
        }
    }

    /// S2 and S3 for a node whose commit index is `commit`: every newly committed entry
    /// matches the group's one committed entry at its index, and a majority of the voters
    /// of one of `configurations` (the one it was committed in; both sides of a joint one)
    /// holds it durably. Without `configurations`, S2 only.
    pub fn commit(
        &mut self,
        node: u64,
        commit: u64,
        logs: &BTreeMap<u64, SimLogStore>,
        configurations: Option<&[Membership]>,
    ) -> Result<(), Violation> {
        let from = self.checked_commit.get(&node).copied().unwrap_or(0);
        if commit <= from {
            return Ok(());
        }
        let Some(store) = logs.get(&node) else {
            return Ok(());
        };
        let log = store.log.borrow();
        for index in from + 1..=commit {
            let Some(entry) = log.entry(index) else {
                continue; // compacted: checked before it was removed
            };
            let seen = (entry.term, crc32c::crc32c(&entry.data));
            match self.committed.get(&index) {
                Some(canonical) if *canonical != seen => {
                    return violation(
                        "S2",
                        format!(
                            "node {node} committed index {index} as (term {}, crc {:#x}); \
                             the group committed (term {}, crc {:#x})",
                            seen.0, seen.1, canonical.0, canonical.1
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    self.committed.insert(index, seen);
                }
            }
        }
        let term = log.entry(commit).map(|e| e.term);
        drop(log);
        self.checked_commit.insert(node, commit);
        let (Some(term), Some(configurations)) = (term, configurations) else {
            return Ok(());
        };
        let held_by_majority = |voters: &Vec<u64>| {
            let holders = voters
                .iter()
                .filter(|id| {
                    logs.get(id)
                        .is_some_and(|s| durably_holds(&s.log.borrow(), commit, term))
                })
                .count();
            holders * 2 > voters.len()
        };
        let held = configurations.iter().any(|c| {
            held_by_majority(&c.voters) && (!c.is_joint() || held_by_majority(&c.outgoing))
        });
        if !held {
            let holders: Vec<u64> = logs
                .iter()
                .filter(|(_, s)| durably_holds(&s.log.borrow(), commit, term))
                .map(|(id, _)| *id)
                .collect();
            return violation(
                "S3",
                format!(
                    "node {node} reports commit {commit} (term {term}) but only {holders:?} hold \
                     it durably, no majority of {configurations:?}"
                ),
            );
        }
        Ok(())
    }

    /// A node restarted: its commit checks start again from what it recovered.
    pub fn restarted(&mut self, node: u64, commit: u64) {
        self.checked_commit.insert(node, commit);
    }

    /// S4: an acknowledgement or a granted vote leaves only once durable.
    pub fn outgoing(&self, from: u64, log: &SimLog, message: &Message) -> Result<(), Violation> {
        match message.get_msg_type() {
            MessageType::MsgAppendResponse
                if !message.reject && message.index > log.durable_index.max(log.compaction.0) =>
            {
                return violation(
                    "S4",
                    format!(
                        "node {from} acknowledges index {} to {} with {} durable",
                        message.index, message.to, log.durable_index
                    ),
                );
            }
            MessageType::MsgRequestVoteResponse if !message.reject => {
                let durable = log.durable_meta.hard_state;
                // Durable now: this term's vote for the candidate (or a later term, which
                // the node reached after persisting this one).
                let held = durable.term > message.term
                    || (durable.term == message.term && durable.vote == message.to);
                if !held {
                    return violation(
                        "S4",
                        format!(
                            "node {from} grants its vote of term {} to {} before it is durable \
                             (durable term {}, vote {})",
                            message.term, message.to, durable.term, durable.vote
                        ),
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn durably_holds(log: &SimLog, index: u64, term: u64) -> bool {
    if log.durable_meta.compaction.0 >= index {
        return true;
    }
    index <= log.durable_index && log.entry(index).is_some_and(|e| e.term == term)
}

/// At the end: every replica has the same applied state (S5), each partition's offsets
/// are dense (P5/P3), no idempotent batch is stored twice (P4), and every acknowledged
/// batch is at its offset with its bytes (P1).
pub fn check_final(
    replicas: &[(u64, &Replica<SimLogStore>)],
    history: &[BatchRecord],
    topic: Option<u32>,
) -> Result<(), Violation> {
    let mut hashes = BTreeMap::new();
    for (node, replica) in replicas {
        hashes.insert(*node, (replica.applied_index(), state_crc(replica.state())));
        check_partitions(*node, replica, history, topic)?;
    }
    let distinct: Vec<_> = hashes.values().collect();
    if distinct.windows(2).any(|w| w[0] != w[1]) {
        return violation(
            "S5",
            format!("replicas differ at the end (applied index, state crc): {hashes:?}"),
        );
    }
    Ok(())
}

/// The crc32c of a replica's encoded state, without the crc32c the encoding ends with:
/// over the whole encoding (a message followed by its own crc32c) it is the same constant
/// (0x48674bc7, the CRC-32C residue) for every state, and S5 compared applied indexes only.
fn state_crc(state: &crate::broker::state::ShardState) -> u32 {
    let state = encode_state(state, false);
    let body = &state[..state.len() - 4];
    crc32c::crc32c(body)
}

/// `topic`: the producers' topic (`history` is its batches); others (a churned topic)
/// are checked for density and duplicates only.
fn check_partitions(
    node: u64,
    replica: &Replica<SimLogStore>,
    history: &[BatchRecord],
    topic: Option<u32>,
) -> Result<(), Violation> {
    let state = replica.state();
    let topics: Vec<u32> = state.topics.list().map(|t| t.id).collect();
    if let Some(((orphan, _), _)) = state
        .partitions
        .iter()
        .find(|((t, _), _)| !topics.contains(t))
    {
        return violation(
            "S5",
            format!("node {node} keeps partitions of topic {orphan}, which it deleted"),
        );
    }
    let log = replica.store().log.borrow();
    let mut stored: BTreeMap<(u32, u64), (u32, u64, u32)> = BTreeMap::new();
    let mut seen_sequences = BTreeMap::new();
    for ((topic_id, partition), index) in sorted_partitions(state) {
        stored.clear();
        let batches = index.batches.clone();
        for pair in batches.windows(2) {
            if pair[0].base_offset + u64::from(pair[0].record_count) != pair[1].base_offset {
                return violation(
                    "P5",
                    format!("node {node} partition {partition}: offsets not dense at {pair:?}"),
                );
            }
        }
        for location in batches {
            let Some(entry) = log.entry(location.log_index) else {
                continue;
            };
            let Ok(BrokerEntry::RecordBatch {
                batch_crc32c,
                batch,
                ..
            }) = BrokerEntry::decode(&entry.data)
            else {
                return violation("P5", format!("node {node}: index points at a non-batch"));
            };
            if let Some((producer, epoch, sequence)) = crate::broker::state::batch_producer(batch) {
                if let Some(other) = seen_sequences
                    .insert((producer, epoch, partition, sequence), location.base_offset)
                {
                    return violation(
                        "P4",
                        format!(
                            "node {node} partition {partition}: producer {producer} epoch \
                             {epoch} sequence {sequence} stored at offsets {other} and {}",
                            location.base_offset
                        ),
                    );
                }
            }
            stored.insert(
                (partition, location.base_offset),
                (location.record_count, location.log_index, batch_crc32c),
            );
        }
        if Some(topic_id) != topic {
            continue;
        }
        let start = index.start_offset();
        for record in history.iter().filter(|r| r.partition == partition) {
            for offset in &record.acked_offsets {
                if *offset < start {
                    continue; // removed by retention
                }
                match stored.get(&(partition, *offset)) {
                    Some((count, _, crc))
                        if *count == record.record_count && *crc == record.crc => {}
                    other => {
                        return violation(
                            "P1",
                            format!(
                                "node {node} partition {partition}: producer {} sequence {} \
                                 acknowledged at offset {offset}, stored there: {other:?}",
                                record.producer, record.sequence
                            ),
                        )
                    }
                }
            }
        }
    }
    Ok(())
}

fn sorted_partitions(
    state: &crate::broker::state::ShardState,
) -> Vec<((u32, u32), &crate::broker::state::PartitionIndex)> {
    let mut partitions: Vec<_> = state.partitions.iter().map(|(k, v)| (*k, v)).collect();
    partitions.sort_by_key(|(k, _)| *k);
    partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::state::ShardState;

    /// S5 compared `crc32c(encode_state(..))`, the same constant for every state (the
    /// encoding ends with its own crc32c): states that differ must hash apart.
    #[test]
    fn states_that_differ_have_different_crcs() {
        let mut one = ShardState::default();
        let mut other = ShardState::default();
        let create = |name| {
            BrokerEntry::CreateTopic {
                topic_id: 1,
                partitions: 1,
                name,
                groups: vec![0],
                new_groups: Vec::new(),
            }
            .encode()
        };
        one.apply(1, &create("a")).expect("applies");
        other.apply(1, &create("b")).expect("applies");
        let whole = |state: &ShardState| crc32c::crc32c(&encode_state(state, false));
        assert_eq!(
            whole(&one),
            whole(&other),
            "the residue: why S5 saw nothing"
        );
        assert_ne!(state_crc(&one), state_crc(&other));
    }
}
