//! The applied state of a shard as bytes: what a Raft snapshot of the group carries and
//! what a shard keeps on disk next to its log, so that the log's prefix can be removed
//! (retention) and a follower behind the removed prefix can still catch up.
//!
//! Layout (little-endian): magic "KSNP", version u16, applied index u64; topics (next id
//! u32, count u32, then id u32, partitions u32, name length u16, name); partitions (count
//! u32, then topic u32, partition u32, next offset u64, batch count u32, then base offset
//! u64, record count u32, log index u64 per batch); producers (count u32, then producer
//! u64, topic u32, partition u32, epoch u16, base sequence u32, record count u32, batch
//! crc32c u32, base offset u64, last used ms u64, last use stamp u64); the producer
//! table's clock ms u64; the consumer groups (`broker::group_snapshot`); crc32c u32 of
//! everything before it.
//!
//! From version 4 each topic also records its partitions' replica groups (count u32, 0
//! or the partition count, then group u32 per partition, after the name); versions 1-3
//! read with none (the bootstrap spread). From version 5 the groups placed by topic
//! creations follow the topics (count u32, then per group its id u32, replica count u32
//! and (node u64, shard u32) per replica); versions 1-4 read with none. From version 6
//! the replica moves follow them (`broker::replica_moves`: count u32 of moves under way,
//! each group u32, from u64, to node u64, to shard u32, config index u64, voters and
//! learners as count u32 then u64s; count u32 of groups replaced, each group u32 and
//! replicas as count u32 then (node u64, shard u32); count u32 of groups with retired
//! nodes, each group u32 and nodes as count u32 then u64s); versions 1-5 read with none.
//! From version 7 the nodes' service states follow (count u32, then node u64 and state
//! u8: 1 draining, 2 removed); versions 1-6 read every node active. From version 8 the
//! nodes that joined after the bootstrap follow (count u32, then each as a join entry
//! records it: `replica_moves::encode_node`); versions 1-7 read with none. From version 9
//! the preferred leaders recorded follow (count u32, then group u32 and node u64);
//! versions 1-8 read with none. From version 10 the users and access rules follow
//! (`broker::access`: count u32 of users, each name and credential; count u32 of rules,
//! each as an access entry writes it); versions 1-9 read with none.
//!
//! Version 1 (still read) has neither the two last-use fields nor the clock: its
//! producers read as last used by a batch without a time (`broker::producers`). Versions
//! 1 and 2 have no consumer groups.

use std::collections::{BTreeMap, HashMap};

use crate::broker::access::AccessControl;
use crate::broker::group_snapshot::{decode_groups, encode_groups};
use crate::broker::groups::ConsumerGroups;
use crate::broker::producers::{ProducerSequence, ProducerTable};
use crate::broker::replica_moves::{
    decode_node, encode_node, NodeService, ReplicaMove, ReplicaMoves,
};
use crate::broker::state::{
    BatchLocation, PartitionIndex, PlacedGroup, ShardState, TopicInfo, Topics,
};

const MAGIC: &[u8; 4] = b"KSNP";
const VERSION: u16 = 10;

/// The version before the producer table kept last-use times and its clock.
const VERSION_WITHOUT_LAST_USE: u16 = 1;

/// The version before consumer groups (`broker::group_snapshot`).
const VERSION_WITHOUT_GROUPS: u16 = 2;

/// The version before topics recorded each partition's replica group.
const VERSION_WITHOUT_PARTITION_GROUPS: u16 = 3;

/// The version before the groups placed by topic creations were recorded.
const VERSION_WITHOUT_PLACED_GROUPS: u16 = 4;

/// The version before replica moves were recorded.
const VERSION_WITHOUT_MOVES: u16 = 5;

/// The version before nodes' service states (draining, removed) were recorded.
const VERSION_WITHOUT_NODE_STATES: u16 = 6;

/// The version before the nodes that joined were recorded.
const VERSION_WITHOUT_JOINED_NODES: u16 = 7;

/// The version before preferred leaders were recorded.
const VERSION_WITHOUT_PREFERRED_LEADERS: u16 = 8;

/// The version before users and access rules were recorded.
const VERSION_WITHOUT_ACCESS: u16 = 9;

/// A snapshot that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// Too short, a count beyond the data, a bad name.
    #[error("malformed state snapshot: {0}")]
    Malformed(&'static str),
    /// The checksum does not match.
    #[error("state snapshot checksum mismatch")]
    Checksum,
    /// Written by another version.
    #[error("state snapshot version {0} is not supported")]
    Version(u16),
}

/// Encodes the state (deterministically: sorted keys). Without batches, each partition
/// keeps only its next offset: what a snapshot at the compaction point needs, since every
/// batch at or below it is gone from the log.
pub fn encode_state(state: &ShardState, with_batches: bool) -> Vec<u8> {
    encode_versioned(state, with_batches, VERSION)
}

/// `encode_state` in the layout of `version` (2 and up; older ones only in tests, to
/// check they still read).
fn encode_versioned(state: &ShardState, with_batches: bool, version: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&state.applied_index.to_le_bytes());
    out.extend_from_slice(&state.topics.next_id.to_le_bytes());
    out.extend_from_slice(&(state.topics.by_name.len() as u32).to_le_bytes());
    for info in state.topics.by_name.values() {
        out.extend_from_slice(&info.id.to_le_bytes());
        out.extend_from_slice(&info.partitions.to_le_bytes());
        let name = info.name.as_bytes();
        out.extend_from_slice(&(name.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        out.extend_from_slice(&name[..name.len().min(usize::from(u16::MAX))]);
        if version > VERSION_WITHOUT_PARTITION_GROUPS {
            out.extend_from_slice(&(info.groups.len() as u32).to_le_bytes());
            for group in &info.groups {
                out.extend_from_slice(&group.to_le_bytes());
            }
        }
    }
    if version > VERSION_WITHOUT_PLACED_GROUPS {
        out.extend_from_slice(&(state.topics.placed.len() as u32).to_le_bytes());
        for placed in state.topics.placed.values() {
            out.extend_from_slice(&placed.id.to_le_bytes());
            out.extend_from_slice(&(placed.replicas.len() as u32).to_le_bytes());
            for (node, shard) in &placed.replicas {
                out.extend_from_slice(&node.to_le_bytes());
                out.extend_from_slice(&shard.to_le_bytes());
            }
        }
    }
    if version > VERSION_WITHOUT_MOVES {
        encode_moves(&state.topics.moves, &mut out);
    }
    if version > VERSION_WITHOUT_NODE_STATES {
        let states: Vec<_> = state.topics.moves.inactive_nodes().collect();
        out.extend_from_slice(&(states.len() as u32).to_le_bytes());
        for (node, service) in states {
            out.extend_from_slice(&node.to_le_bytes());
            out.push(service.to_code());
        }
    }
    if version > VERSION_WITHOUT_JOINED_NODES {
        out.extend_from_slice(&(state.topics.moves.joined.len() as u32).to_le_bytes());
        for node in state.topics.moves.joined() {
            encode_node(node, &mut out);
        }
    }
    if version > VERSION_WITHOUT_PREFERRED_LEADERS {
        let preferred = &state.topics.moves.preferred;
        out.extend_from_slice(&(preferred.len() as u32).to_le_bytes());
        for (group, node) in preferred {
            out.extend_from_slice(&group.to_le_bytes());
            out.extend_from_slice(&node.to_le_bytes());
        }
    }
    if version > VERSION_WITHOUT_ACCESS {
        state.topics.access.encode(&mut out);
    }
    let mut partitions: Vec<_> = state.partitions.iter().collect();
    partitions.sort_by_key(|(key, _)| **key);
    out.extend_from_slice(&(partitions.len() as u32).to_le_bytes());
    for ((topic, partition), index) in partitions {
        out.extend_from_slice(&topic.to_le_bytes());
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&index.next_offset.to_le_bytes());
        let batches: &[BatchLocation] = if with_batches { &index.batches } else { &[] };
        out.extend_from_slice(&(batches.len() as u32).to_le_bytes());
        for batch in batches {
            out.extend_from_slice(&batch.base_offset.to_le_bytes());
            out.extend_from_slice(&batch.record_count.to_le_bytes());
            out.extend_from_slice(&batch.log_index.to_le_bytes());
        }
    }
    let producers = state.producers.sorted();
    out.extend_from_slice(&(producers.len() as u32).to_le_bytes());
    for ((producer, topic, partition), sequence) in producers {
        out.extend_from_slice(&producer.to_le_bytes());
        out.extend_from_slice(&topic.to_le_bytes());
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&sequence.epoch.to_le_bytes());
        out.extend_from_slice(&sequence.base_sequence.to_le_bytes());
        out.extend_from_slice(&sequence.record_count.to_le_bytes());
        out.extend_from_slice(&sequence.batch_crc32c.to_le_bytes());
        out.extend_from_slice(&sequence.base_offset.to_le_bytes());
        out.extend_from_slice(&sequence.last_used_ms.to_le_bytes());
        out.extend_from_slice(&sequence.last_use_stamp.to_le_bytes());
    }
    out.extend_from_slice(&state.producers.clock_ms().to_le_bytes());
    if version > VERSION_WITHOUT_GROUPS {
        encode_groups(&state.groups, &mut out);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads bytes written by `encode_state`; never panics on any input.
pub fn decode_state(bytes: &[u8]) -> Result<ShardState, SnapshotError> {
    if bytes.len() < MAGIC.len() + 2 + 4 {
        return Err(SnapshotError::Malformed("too short"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(crc);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc_bytes) {
        return Err(SnapshotError::Checksum);
    }
    let mut reader = Reader { bytes: body };
    if reader.take(4)? != MAGIC {
        return Err(SnapshotError::Malformed("not a state snapshot"));
    }
    let version = reader.u16()?;
    if !(VERSION_WITHOUT_LAST_USE..=VERSION).contains(&version) {
        return Err(SnapshotError::Version(version));
    }
    let applied_index = reader.u64()?;
    let next_id = reader.u32()?;
    let topic_count = reader.count(10)?;
    let mut by_name = BTreeMap::new();
    for _ in 0..topic_count {
        let id = reader.u32()?;
        let partitions = reader.u32()?;
        let length = usize::from(reader.u16()?);
        let name = std::str::from_utf8(reader.take(length)?)
            .map_err(|_| SnapshotError::Malformed("topic name is not UTF-8"))?
            .to_string();
        let mut groups = Vec::new();
        if version > VERSION_WITHOUT_PARTITION_GROUPS {
            let count = reader.count(4)?;
            if count != 0 && count != partitions as usize {
                return Err(SnapshotError::Malformed(
                    "a topic's groups do not match its partitions",
                ));
            }
            for _ in 0..count {
                groups.push(reader.u32()?);
            }
        }
        by_name.insert(
            name.clone(),
            TopicInfo {
                id,
                name,
                partitions,
                groups,
            },
        );
    }
    let mut placed = BTreeMap::new();
    if version > VERSION_WITHOUT_PLACED_GROUPS {
        for _ in 0..reader.count(8)? {
            let id = reader.u32()?;
            let replicas = (0..reader.count(12)?)
                .map(|_| Ok((reader.u64()?, reader.u32()?)))
                .collect::<Result<Vec<_>, SnapshotError>>()?;
            placed.insert(id, PlacedGroup { id, replicas });
        }
    }
    let mut moves = if version > VERSION_WITHOUT_MOVES {
        decode_moves(&mut reader)?
    } else {
        ReplicaMoves::default()
    };
    if version > VERSION_WITHOUT_NODE_STATES {
        for _ in 0..reader.count(9)? {
            let node = reader.u64()?;
            let code = reader.take(1)?[0];
            let service = NodeService::of_code(code)
                .ok_or(SnapshotError::Malformed("unknown node service state"))?;
            moves.node_states.insert(node, service);
        }
    }
    if version > VERSION_WITHOUT_JOINED_NODES {
        for _ in 0..reader.count(16)? {
            let (node, used) = decode_node(reader.bytes, 0)
                .map_err(|_| SnapshotError::Malformed("a joined node's record"))?;
            reader.take(used)?;
            moves.joined.insert(u64::from(node.node_id), node);
        }
    }
    if version > VERSION_WITHOUT_PREFERRED_LEADERS {
        for _ in 0..reader.count(12)? {
            let group = reader.u32()?;
            moves.preferred.insert(group, reader.u64()?);
        }
    }
    let access = if version > VERSION_WITHOUT_ACCESS {
        let (access, used) = AccessControl::decode(reader.bytes)
            .map_err(|_| SnapshotError::Malformed("users and access rules"))?;
        reader.take(used)?;
        access
    } else {
        AccessControl::default()
    };
    let partition_count = reader.count(20)?;
    let mut partitions = HashMap::with_capacity(partition_count);
    for _ in 0..partition_count {
        let topic = reader.u32()?;
        let partition = reader.u32()?;
        let next_offset = reader.u64()?;
        let batch_count = reader.count(20)?;
        let mut batches = Vec::with_capacity(batch_count);
        for _ in 0..batch_count {
            batches.push(BatchLocation {
                base_offset: reader.u64()?,
                record_count: reader.u32()?,
                log_index: reader.u64()?,
            });
        }
        partitions.insert(
            (topic, partition),
            PartitionIndex {
                batches,
                next_offset,
            },
        );
    }
    let producers = decode_producers(&mut reader, version)?;
    let groups = if version > VERSION_WITHOUT_GROUPS {
        decode_groups(&mut reader)?
    } else {
        ConsumerGroups::default()
    };
    if !reader.bytes.is_empty() {
        return Err(SnapshotError::Malformed("trailing bytes"));
    }
    let mut topics = Topics::from_parts(by_name, next_id, placed);
    topics.moves = moves;
    topics.access = std::sync::Arc::new(access);
    Ok(ShardState {
        topics,
        partitions,
        producers,
        groups,
        applied_index,
        controller_copy: None,
    })
}

/// The producer table: its entries (with last-use fields from version 2) and its clock.
fn decode_producers(reader: &mut Reader<'_>, version: u16) -> Result<ProducerTable, SnapshotError> {
    let with_last_use = version != VERSION_WITHOUT_LAST_USE;
    let producer_count = reader.count(if with_last_use { 54 } else { 38 })?;
    let mut entries = Vec::with_capacity(producer_count);
    for _ in 0..producer_count {
        let key = (reader.u64()?, reader.u32()?, reader.u32()?);
        let mut sequence = ProducerSequence {
            epoch: reader.u16()?,
            base_sequence: reader.u32()?,
            record_count: reader.u32()?,
            batch_crc32c: reader.u32()?,
            base_offset: reader.u64()?,
            last_used_ms: 0,
            last_use_stamp: 0,
        };
        if with_last_use {
            sequence.last_used_ms = reader.u64()?;
            sequence.last_use_stamp = reader.u64()?;
        }
        entries.push((key, sequence));
    }
    let clock_ms = if with_last_use { reader.u64()? } else { 0 };
    Ok(ProducerTable::restore(entries, clock_ms))
}

/// Reads little-endian fields off a byte slice, failing (never panicking) at its end.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, length: usize) -> Result<&'a [u8], SnapshotError> {
        if self.bytes.len() < length {
            return Err(SnapshotError::Malformed("truncated"));
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(taken)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items of at least `item_bytes` each, checked against what is left.
    pub(crate) fn count(&mut self, item_bytes: usize) -> Result<usize, SnapshotError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(item_bytes) > self.bytes.len() {
            return Err(SnapshotError::Malformed("count beyond the data"));
        }
        Ok(count)
    }
}

/// The replica moves section (version 6).
fn encode_moves(moves: &ReplicaMoves, out: &mut Vec<u8>) {
    let nodes = |out: &mut Vec<u8>, nodes: &mut dyn Iterator<Item = u64>, count: usize| {
        out.extend_from_slice(&(count as u32).to_le_bytes());
        for node in nodes {
            out.extend_from_slice(&node.to_le_bytes());
        }
    };
    out.extend_from_slice(&(moves.under_way.len() as u32).to_le_bytes());
    for moving in moves.under_way.values() {
        out.extend_from_slice(&moving.group.to_le_bytes());
        out.extend_from_slice(&moving.from.to_le_bytes());
        out.extend_from_slice(&moving.to.0.to_le_bytes());
        out.extend_from_slice(&moving.to.1.to_le_bytes());
        out.extend_from_slice(&moving.join_index.to_le_bytes());
        let voters = &moving.join_voters;
        nodes(out, &mut voters.iter().copied(), voters.len());
        let learners = &moving.join_learners;
        nodes(out, &mut learners.iter().copied(), learners.len());
    }
    out.extend_from_slice(&(moves.replaced.len() as u32).to_le_bytes());
    for (group, replicas) in &moves.replaced {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&(replicas.len() as u32).to_le_bytes());
        for (node, shard) in replicas {
            out.extend_from_slice(&node.to_le_bytes());
            out.extend_from_slice(&shard.to_le_bytes());
        }
    }
    out.extend_from_slice(&(moves.retired.len() as u32).to_le_bytes());
    for (group, retired) in &moves.retired {
        out.extend_from_slice(&group.to_le_bytes());
        nodes(out, &mut retired.iter().copied(), retired.len());
    }
}

fn decode_moves(reader: &mut Reader<'_>) -> Result<ReplicaMoves, SnapshotError> {
    let mut moves = ReplicaMoves::default();
    let nodes = |reader: &mut Reader<'_>| -> Result<Vec<u64>, SnapshotError> {
        (0..reader.count(8)?).map(|_| reader.u64()).collect()
    };
    for _ in 0..reader.count(40)? {
        let group = reader.u32()?;
        let moving = ReplicaMove {
            group,
            from: reader.u64()?,
            to: (reader.u64()?, reader.u32()?),
            join_index: reader.u64()?,
            join_voters: nodes(reader)?,
            join_learners: nodes(reader)?,
        };
        moves.under_way.insert(group, moving);
    }
    for _ in 0..reader.count(8)? {
        let group = reader.u32()?;
        let replicas = (0..reader.count(12)?)
            .map(|_| Ok((reader.u64()?, reader.u32()?)))
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        moves.replaced.insert(group, replicas);
    }
    for _ in 0..reader.count(8)? {
        let group = reader.u32()?;
        moves
            .retired
            .insert(group, nodes(reader)?.into_iter().collect());
    }
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::access::AccessEntry;
    use crate::broker::group_entry::GroupEntry;
    use crate::broker::groups::{AssignStrategy, GroupMode, Join};
    use crate::broker::log_entry::BrokerEntry;
    use crate::broker::replica_moves::MoveEntry;
    use crate::broker::state::{Applied, ProducerLimits, SequenceRefusal};
    use crate::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
    use crate::security::scram::StoredCredential;

    fn populated() -> ShardState {
        let mut state = ShardState::default();
        let mut index = 0;
        let mut apply = |state: &mut ShardState, entry: BrokerEntry<'_>| {
            index += 1;
            state.apply(index, &entry.encode()).unwrap();
        };
        apply(
            &mut state,
            BrokerEntry::CreateTopic {
                topic_id: 1,
                partitions: 2,
                name: "orders",
                groups: vec![1, 0],
                new_groups: vec![crate::broker::state::PlacedGroup {
                    id: 7,
                    replicas: vec![(1, 0), (3, 2)],
                }],
            },
        );
        // Replica moves: one of group 7 done (node 1 left it), one of group 0 under way.
        let start = |group, from, to| {
            BrokerEntry::Move(MoveEntry::Start(ReplicaMove {
                group,
                from,
                to: (to, 1),
                join_voters: vec![1, 3],
                join_learners: vec![to],
                join_index: 9,
            }))
        };
        apply(&mut state, start(7, 1, 4));
        let replicas = vec![(3, 2), (4, 1)];
        apply(
            &mut state,
            BrokerEntry::Move(MoveEntry::Finish {
                group: 7,
                from: 1,
                to: 4,
                replicas,
            }),
        );
        apply(&mut state, start(0, 2, 5));
        assert!(state.topics.moves().has_left(7, 1));
        let draining = MoveEntry::Node {
            node: 1,
            state: NodeService::Draining,
        };
        apply(&mut state, BrokerEntry::Move(draining));
        let joined = crate::config::PeerAddress {
            node_id: 6,
            host: "10.0.0.6".into(),
            base_port: 9700,
            peer_port: 9800,
            rack: Some("east".into()),
        };
        apply(&mut state, BrokerEntry::Move(MoveEntry::Join(joined)));
        let leader = MoveEntry::Leader { group: 7, node: 4 };
        apply(&mut state, BrokerEntry::Move(leader));
        let user = AccessEntry::SetUser {
            name: "alice".into(),
            credential: StoredCredential::from_password("pw", b"salt-of-alice", 4096),
        };
        apply(&mut state, BrokerEntry::Access(user));
        let rule = crate::security::acl::Rule {
            principal: Some("alice".into()),
            pattern: crate::security::acl::Pattern::TopicPrefix("orders".into()),
            operation: Some(crate::security::acl::Operation::Produce),
            allow: true,
        };
        apply(&mut state, BrokerEntry::Access(AccessEntry::AddRule(rule)));
        for n in 0..5u32 {
            let records = vec![RecordData {
                value: vec![n as u8; 3],
                ..Default::default()
            }];
            // Partition 0 gets n = 0, 2, 4 and partition 1 n = 1, 3: sequences from 0.
            let producer = BatchProducer {
                producer_id: 7,
                producer_epoch: 1,
                base_sequence: n / 2,
            };
            let (batch, crc) = encode_record_batch(producer, 0, &records);
            apply(
                &mut state,
                BrokerEntry::RecordBatch {
                    topic_id: 1,
                    partition: n % 2,
                    record_count: 1,
                    batch_crc32c: crc,
                    proposed_at_ms: 10_000 + u64::from(n),
                    batch: &batch,
                },
            );
        }
        apply(&mut state, BrokerEntry::Group(join_entry("billing")));
        let group = state.groups.get("billing").unwrap();
        let member = group.members.keys().next().unwrap().clone();
        apply(
            &mut state,
            BrokerEntry::Group(GroupEntry::Commit {
                group: "billing",
                member: &member,
                generation: 1,
                offsets: vec![((1, 0), 3, "three"), ((1, 1), 2, "")],
            }),
        );
        state
    }

    fn join_entry(group: &str) -> GroupEntry<'_> {
        GroupEntry::Join(Join {
            group,
            member_id: "",
            client: "app",
            instance: "",
            mode: GroupMode::Clustering,
            strategy: AssignStrategy::Sticky,
            session_timeout_ms: 10_000,
            topics: vec![1],
        })
    }

    /// Consumer groups (members, assignment, offsets) come back from a snapshot as they
    /// were, and a version 2 snapshot (before groups) still reads, without groups.
    #[test]
    fn consumer_groups_survive_a_snapshot_and_version_2_still_reads() {
        let original = populated();
        let group = original.groups.get("billing").unwrap();
        assert_eq!(group.offsets.len(), 2, "{group:?}");
        let copy = decode_state(&encode_state(&original, true)).unwrap();
        assert_eq!(copy.groups, original.groups);
        let old = decode_state(&encode_versioned(&original, true, 2)).unwrap();
        assert_eq!(old.topics, without_partition_groups(&original.topics));
        assert_eq!(old.groups, ConsumerGroups::default());
    }

    /// Topics keep the groups their partitions were placed in through a snapshot, and a
    /// version 3 snapshot (before they were recorded) reads with none, everything else
    /// the same.
    #[test]
    fn partition_groups_survive_a_snapshot_and_version_3_still_reads() {
        let original = populated();
        let orders = original.topics.get("orders").unwrap();
        assert_eq!(orders.groups, vec![1, 0]);
        let copy = decode_state(&encode_state(&original, true)).unwrap();
        assert_eq!(copy.topics, original.topics);
        assert_eq!(
            copy.topics
                .placed_groups()
                .map(|g| g.id)
                .collect::<Vec<_>>(),
            [7]
        );
        let version_4 = decode_state(&encode_versioned(&original, true, 4)).unwrap();
        assert_eq!(version_4.topics.placed_groups().count(), 0);
        assert_eq!(
            version_4.topics.get("orders"),
            original.topics.get("orders")
        );
        let old = decode_state(&encode_versioned(&original, true, 3)).unwrap();
        assert_eq!(old.topics, without_partition_groups(&original.topics));
        assert_eq!(old.groups, original.groups);
        assert_eq!(old.partitions.len(), original.partitions.len());
    }

    fn without_partition_groups(topics: &Topics) -> Topics {
        let by_name = topics
            .list()
            .map(|topic| {
                let info = TopicInfo {
                    groups: Vec::new(),
                    ..topic.clone()
                };
                (topic.name.clone(), info)
            })
            .collect();
        Topics::from_parts(by_name, topics.next_id(), BTreeMap::new())
    }

    #[test]
    fn users_and_rules_survive_a_snapshot_and_version_9_reads_none() {
        let original = populated();
        assert_eq!(original.topics.access().users().count(), 1);
        assert_eq!(original.topics.access().rules().len(), 1);
        let copy = decode_state(&encode_state(&original, true)).unwrap();
        assert_eq!(copy.topics.access(), original.topics.access());
        let v9 = decode_state(&encode_versioned(&original, true, 9)).unwrap();
        assert_eq!(v9.topics.access(), &AccessControl::default());
        assert_eq!(v9.topics.moves(), original.topics.moves());
    }

    #[test]
    fn joined_nodes_survive_a_snapshot_and_version_7_reads_none() {
        let original = populated();
        assert_eq!(original.topics.moves().joined().count(), 1);
        let copy = decode_state(&encode_state(&original, true)).unwrap();
        assert_eq!(copy.topics.moves(), original.topics.moves());
        let v7 = decode_state(&encode_versioned(&original, true, 7)).unwrap();
        assert_eq!(v7.topics.moves().joined().count(), 0);
        assert_eq!(v7.topics.moves().inactive_nodes().count(), 1);
        let v8 = decode_state(&encode_versioned(&original, true, 8)).unwrap();
        assert_eq!(v8.topics.moves().joined().count(), 1);
        assert_eq!(v8.topics.moves().preferred_leaders().count(), 0);
        assert_eq!(
            copy.topics.moves().preferred_leaders().collect::<Vec<_>>(),
            vec![(7, 4)]
        );
    }

    #[test]
    fn a_state_survives_the_round_trip_and_goes_on_the_same() {
        let mut original = populated();
        let bytes = encode_state(&original, true);
        let mut copy = decode_state(&bytes).unwrap();
        assert_eq!(encode_state(&copy, true), bytes, "deterministic");
        assert_eq!(copy.applied_index(), original.applied_index());
        assert_eq!(copy.topics, original.topics);
        // Both go on identically: same offsets, same duplicate detection.
        let records = vec![RecordData::default()];
        let (batch, crc) = encode_record_batch(
            BatchProducer {
                producer_id: 7,
                producer_epoch: 1,
                base_sequence: 3,
            },
            0,
            &records,
        );
        let retry = BrokerEntry::RecordBatch {
            topic_id: 1,
            partition: 0,
            record_count: 1,
            batch_crc32c: crc,
            proposed_at_ms: 0,
            batch: &batch,
        }
        .encode();
        let next = original.applied_index() + 1;
        let applied = original.apply(next, &retry).unwrap();
        assert!(matches!(applied, Applied::Batch { .. }), "{applied:?}");
        assert_eq!(applied, copy.apply(next, &retry).unwrap());
        for p in 0..2 {
            assert_eq!(
                original.partition(1, p).map(|i| i.high_watermark()),
                copy.partition(1, p).map(|i| i.high_watermark())
            );
        }
    }

    #[test]
    fn damaged_snapshots_are_refused_without_panicking() {
        let bytes = encode_state(&populated(), true);
        for cut in 0..bytes.len() {
            assert!(decode_state(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for position in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[position] ^= 0x10;
            assert!(decode_state(&flipped).is_err(), "flip at {position}");
        }
    }

    #[test]
    fn without_batches_only_offsets_remain() {
        let state = populated();
        let copy = decode_state(&encode_state(&state, false)).unwrap();
        let index = copy.partition(1, 0).unwrap();
        assert!(index.from_offset(0).is_empty());
        assert_eq!(index.start_offset(), index.high_watermark());
        assert_eq!(
            index.high_watermark(),
            state.partition(1, 0).unwrap().high_watermark()
        );
    }

    #[test]
    fn forgetting_removed_batches_keeps_offsets_going() {
        let mut state = populated();
        let before = state.partition(1, 0).unwrap().high_watermark();
        // The batches are at indexes 10 to 14 (after the creation, six move entries, a
        // user and a rule).
        state.forget_below(11);
        let index = state.partition(1, 0).unwrap();
        assert_eq!(index.high_watermark(), before);
        assert!(index.start_offset() > 0);
        assert!(index.from_offset(0).iter().all(|b| b.log_index >= 11));
    }

    /// A batch of producer `producer` (epoch 0) on topic 1 partition 0.
    fn producer_entry(producer: u64, sequence: u32, at_ms: u64) -> Vec<u8> {
        let records = vec![RecordData {
            value: vec![sequence as u8],
            ..Default::default()
        }];
        let identity = BatchProducer {
            producer_id: producer,
            producer_epoch: 0,
            base_sequence: sequence,
        };
        let (batch, crc) = encode_record_batch(identity, 0, &records);
        BrokerEntry::RecordBatch {
            topic_id: 1,
            partition: 0,
            record_count: 1,
            batch_crc32c: crc,
            proposed_at_ms: at_ms,
            batch: &batch,
        }
        .encode()
    }

    /// The producer table's last uses and clock are in the snapshot: a state restored
    /// from it expires and evicts exactly as the one that wrote it.
    #[test]
    fn producer_expiry_and_eviction_go_on_the_same_after_a_snapshot() {
        let limits = ProducerLimits {
            idle_expiry_ms: 1000,
            max_entries: 3,
        };
        let mut original = ShardState::default();
        original.set_producer_limits(limits);
        for producer in 1..=3u64 {
            let entry = producer_entry(producer, 0, 10_000 + 400 * producer);
            original.apply(producer, &entry).unwrap();
        }
        let bytes = encode_state(&original, true);
        let mut copy = decode_state(&bytes).unwrap();
        copy.set_producer_limits(limits);
        assert_eq!(encode_state(&copy, true), bytes);
        let unknown = Applied::OutOfSequence {
            expected: 0,
            refusal: SequenceRefusal::UnknownProducer,
        };
        // Producer 4 evicts producer 1 (the least recently used); at 11,801 ms producer 2
        // (last used at 10,800) has been idle too long; producer 3 has not.
        let steps = [
            (4, 4, 0, 11_000),
            (5, 2, 1, 11_801),
            (6, 1, 1, 11_802),
            (7, 3, 1, 11_803),
        ];
        for (index, producer, sequence, at_ms) in steps {
            let entry = producer_entry(producer, sequence, at_ms);
            let applied = original.apply(index, &entry).unwrap();
            assert_eq!(applied, copy.apply(index, &entry).unwrap());
            let expected_stored = producer == 4 || producer == 3;
            assert_eq!(
                matches!(applied, Applied::Batch { .. }),
                expected_stored,
                "{index}: {applied:?}"
            );
            if !expected_stored {
                assert_eq!(applied, unknown);
            }
        }
        assert_eq!(encode_state(&copy, true), encode_state(&original, true));
    }

    /// A snapshot of version 1 (no last-use fields, no clock) is still read: its
    /// producers are kept (a retry is still recognised) and never expire by time.
    #[test]
    fn a_version_1_snapshot_still_decodes() {
        let mut state = populated();
        state.groups = ConsumerGroups::default();
        let v2 = encode_versioned(&state, true, 2);
        let producers = state.producers.sorted();
        // It ends with: count, 54 bytes per producer, clock u64, crc32c.
        let prefix = v2.len() - 4 - 4 - 54 * producers.len() - 8;
        let mut v1 = v2[..prefix].to_vec();
        v1[4..6].copy_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&(producers.len() as u32).to_le_bytes());
        for record in v2[prefix + 4..prefix + 4 + 54 * producers.len()].chunks(54) {
            v1.extend_from_slice(&record[..38]);
        }
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let mut copy = decode_state(&v1).unwrap();
        assert_eq!(copy.producer_entries(), producers.len());
        assert_eq!(copy.topics, without_partition_groups(&state.topics));
        copy.set_producer_limits(ProducerLimits {
            idle_expiry_ms: 1,
            max_entries: 100,
        });
        // Producer 7's last batch on partition 1 (n = 3, sequence 1), retried much later.
        let records = vec![RecordData {
            value: vec![3; 3],
            ..Default::default()
        }];
        let identity = BatchProducer {
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 1,
        };
        let (batch, crc) = encode_record_batch(identity, 0, &records);
        let retry = BrokerEntry::RecordBatch {
            topic_id: 1,
            partition: 1,
            record_count: 1,
            batch_crc32c: crc,
            proposed_at_ms: u64::MAX / 2,
            batch: &batch,
        }
        .encode();
        let next = copy.applied_index() + 1;
        assert!(matches!(
            copy.apply(next, &retry).unwrap(),
            Applied::Duplicate { .. }
        ));
    }
}
