//! The applied state of one shard's replica group: the topics its log holds and, per
//! partition, the offsets of its batches and where they are in the log (the partition's
//! consume index), and the idempotent producers' table (`broker::producers`). Rebuilt by
//! applying the log after the snapshot at its compaction point (or from its start); pure
//! (no I/O).
//!
//! Every group's log holds its topics: the controller group's by the admin's entries,
//! a data group's by the entries its leader copies from the controller
//! (`replication::topic_mirror`). Apply consults only those, so every replica decides
//! the same at the same index. The controller's list as this node last heard it
//! (`controller_copy`) serves requests and is never consulted at apply: replicas hear it
//! at different times.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::broker::access::AccessControl;
use crate::broker::group_entry::GroupEntry;
use crate::broker::groups::{CommittedOffset, ConsumerGroups, GroupApplied};
use crate::broker::log_entry::{BrokerEntry, EntryDecodeError};
use crate::broker::producers::{ProducerSequence, ProducerTable};
use crate::broker::replica_moves::ReplicaMoves;

/// A topic as the controller knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// Never reused id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Each partition's replica group, recorded when the topic was created, so that
    /// groups added to the cluster later never move a partition; empty for a topic
    /// created before groups were recorded (its partitions follow the bootstrap spread,
    /// `controller::placement`).
    pub groups: Vec<u32>,
}

/// A replica group placed after the cluster's bootstrap, by a topic's creation: its
/// replicas, all voters, as (node, shard running it there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedGroup {
    /// The group's id (never reused).
    pub id: u32,
    /// Its replicas: (node, shard), on distinct nodes.
    pub replicas: Vec<(u64, u32)>,
}

/// Topics by name, and the groups placed for them (the controller's metadata).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topics {
    pub(crate) by_name: BTreeMap<String, TopicInfo>,
    pub(crate) next_id: u32,
    /// The ids of `by_name`'s topics (a batch's topic is looked up by id).
    ids: BTreeSet<u32>,
    /// Groups placed by topic creations, by id (kept when their topic is deleted: ids are
    /// never reused). Only the controller group's log places groups.
    pub(crate) placed: BTreeMap<u32, PlacedGroup>,
    /// Replica moves under way and done (`broker::replica_moves`).
    pub(crate) moves: ReplicaMoves,
    /// Users and access rules (`broker::access`; only the controller group's log has
    /// any). Shared: the topics are copied to every shard at each change, the tables
    /// only when they change.
    pub(crate) access: std::sync::Arc<AccessControl>,
}

impl Topics {
    /// Topics from their list by name and the groups placed (a snapshot's).
    pub(crate) fn from_parts(
        by_name: BTreeMap<String, TopicInfo>,
        next_id: u32,
        placed: BTreeMap<u32, PlacedGroup>,
    ) -> Topics {
        let ids = by_name.values().map(|info| info.id).collect();
        Topics {
            by_name,
            next_id,
            ids,
            placed,
            moves: ReplicaMoves::default(),
            access: Default::default(),
        }
    }

    /// Replica moves under way and done.
    pub fn moves(&self) -> &ReplicaMoves {
        &self.moves
    }

    /// Users and access rules.
    pub fn access(&self) -> &AccessControl {
        &self.access
    }

    /// The groups placed by topic creations, in id order.
    pub fn placed_groups(&self) -> impl Iterator<Item = &PlacedGroup> {
        self.placed.values()
    }

    /// Applies a creation that places `new_groups` too: nothing happens if the name
    /// exists or a group id is taken (two creations raced), else the topic and its
    /// groups are added together.
    pub fn apply_create_placing(&mut self, info: TopicInfo, new_groups: Vec<PlacedGroup>) -> bool {
        if new_groups.iter().any(|g| self.placed.contains_key(&g.id)) {
            self.next_id = self.next_id.max(info.id + 1);
            return false;
        }
        if !self.apply_create(info) {
            return false;
        }
        for group in new_groups {
            self.placed.insert(group.id, group);
        }
        true
    }

    /// A topic by name.
    pub fn get(&self, name: &str) -> Option<&TopicInfo> {
        self.by_name.get(name)
    }

    /// Every topic, by name.
    pub fn list(&self) -> impl Iterator<Item = &TopicInfo> {
        self.by_name.values()
    }

    /// Whether a topic with this id exists.
    pub fn contains_id(&self, topic_id: u32) -> bool {
        self.ids.contains(&topic_id)
    }

    /// The id the next topic gets.
    pub fn next_id(&self) -> u32 {
        self.next_id.max(1)
    }

    /// Applies a create (ignored if the name exists: two creates raced).
    pub fn apply_create(&mut self, info: TopicInfo) -> bool {
        self.next_id = self.next_id.max(info.id + 1);
        if self.by_name.contains_key(&info.name) {
            return false;
        }
        self.ids.insert(info.id);
        self.by_name.insert(info.name.clone(), info);
        true
    }

    /// Applies a delete. The id counts as given out from now on (a data group may delete
    /// a topic its log never created: batches came first), so later batches for it are
    /// refused.
    pub fn apply_delete(&mut self, topic_id: u32) -> bool {
        self.next_id = self.next_id.max(topic_id.saturating_add(1));
        self.by_name.retain(|_, info| info.id != topic_id);
        self.ids.remove(&topic_id)
    }

    /// Whether a batch for `topic_id` is for a deleted topic: its id was given out (below
    /// the next id) and the topic is gone. Ids are never reused, so the answer never
    /// changes back; an id not yet given out here is a topic created since.
    pub fn was_deleted(&self, topic_id: u32) -> bool {
        topic_id < self.next_id && !self.ids.contains(&topic_id)
    }
}

/// Where one stored batch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLocation {
    /// Offset of its first record.
    pub base_offset: u64,
    /// Records in it.
    pub record_count: u32,
    /// Its log index.
    pub log_index: u64,
}

/// One partition's batches, in offset order.
#[derive(Clone, Debug, Default)]
pub struct PartitionIndex {
    pub(crate) batches: Vec<BatchLocation>,
    pub(crate) next_offset: u64,
}

impl PartitionIndex {
    /// One past the last offset.
    pub fn high_watermark(&self) -> u64 {
        self.next_offset
    }

    /// The first offset still stored (the high watermark when retention removed all).
    pub fn start_offset(&self) -> u64 {
        self.batches
            .first()
            .map_or(self.next_offset, |b| b.base_offset)
    }

    /// The batches from the one holding `offset` on (empty if `offset` is at the end).
    pub fn from_offset(&self, offset: u64) -> &[BatchLocation] {
        let position = self
            .batches
            .partition_point(|b| b.base_offset + u64::from(b.record_count) <= offset);
        &self.batches[position..]
    }

    /// What a fetch from `offset` reads: the batches from the one holding `offset` on, at
    /// most `max_batches` of them. A binary search and a bounded slice, O(log n), whatever
    /// the partition's length; the caller copies only this slice.
    pub fn fetch_window(&self, offset: u64, max_batches: usize) -> &[BatchLocation] {
        let from = self.from_offset(offset);
        &from[..from.len().min(max_batches)]
    }

    fn append(&mut self, record_count: u32, log_index: u64) -> u64 {
        let base_offset = self.next_offset;
        assert!(
            self.batches
                .last()
                .is_none_or(|last| last.log_index < log_index),
            "log order"
        );
        self.batches.push(BatchLocation {
            base_offset,
            record_count,
            log_index,
        });
        self.next_offset += u64::from(record_count);
        base_offset
    }
}

/// The idempotent producer of a stored batch, if it has one: (id, epoch, base sequence).
/// The batch was verified when it was received; a batch that no longer parses is
/// treated as not idempotent.
pub(crate) fn batch_producer(batch: &[u8]) -> Option<(u64, u16, u32)> {
    let options = crate::protocol::codec::verifier_options(batch.len());
    let parsed =
        flatbuffers::root_with_opts::<crate::protocol::records::RecordBatch>(&options, batch)
            .ok()?;
    (parsed.producer_id() != 0).then(|| {
        (
            parsed.producer_id(),
            parsed.producer_epoch(),
            parsed.base_sequence(),
        )
    })
}

/// What applying one entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A batch got offsets starting at `base_offset`.
    Batch {
        /// Topic.
        topic_id: u32,
        /// Partition.
        partition: u32,
        /// Offset of its first record.
        base_offset: u64,
    },
    /// Topics changed (controller group).
    TopicsChanged,
    /// A retried batch of an idempotent producer that is already stored: not stored
    /// again; its records are at `base_offset`.
    Duplicate {
        /// Offset the batch got the first time.
        base_offset: u64,
    },
    /// A batch of an idempotent producer out of sequence: refused, not stored.
    OutOfSequence {
        /// The sequence number expected next (0 for an unknown producer or a new epoch).
        expected: u32,
        /// Why.
        refusal: SequenceRefusal,
    },
    /// A batch for a topic this group's replicated topic list does not hold (deleted
    /// after the batch was proposed): refused, not stored, in the controller group.
    UnknownTopic,
    /// A consumer group change (joined, left, committed, refused...).
    Group(GroupApplied),
    /// A membership change of the group, at this index (`replication::membership`).
    MembershipChanged {
        /// Its log index.
        index: u64,
    },
    /// Nothing (the leader's empty entry, a create that lost a race).
    Nothing,
}

/// Why a batch of an idempotent producer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceRefusal {
    /// The partition does not know the producer (never seen, expired after idle time,
    /// evicted from a full table) and the batch's sequence is not 0: nobody can tell
    /// whether it continues what was stored.
    UnknownProducer,
    /// An epoch older than the producer's current one on the partition (a fenced, older
    /// instance or a batch from before the bump).
    StaleEpoch {
        /// The producer's current epoch on the partition.
        current: u16,
    },
    /// A newer epoch whose first batch does not start at sequence 0.
    NewEpochNotAtZero,
    /// Within the epoch, not the next sequence (a gap, or a reused number with other
    /// records).
    Gap,
}

impl SequenceRefusal {
    /// The wire error code of the refusal.
    pub fn code(&self) -> crate::protocol::wire::ErrorCode {
        use crate::protocol::wire::ErrorCode;
        match self {
            SequenceRefusal::UnknownProducer => ErrorCode::UnknownProducer,
            _ => ErrorCode::OutOfOrderSequence,
        }
    }
}

impl std::fmt::Display for SequenceRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SequenceRefusal::UnknownProducer => write!(
                f,
                "the partition does not know this producer (never seen, expired after idle \
                 time, or evicted): start a new epoch at sequence 0"
            ),
            SequenceRefusal::StaleEpoch { current } => {
                write!(
                    f,
                    "the producer's epoch is older than its current one ({current})"
                )
            }
            SequenceRefusal::NewEpochNotAtZero => {
                write!(f, "a new producer epoch starts at sequence 0")
            }
            SequenceRefusal::Gap => write!(f, "batch out of sequence"),
        }
    }
}

/// How the idempotent producer table is bounded. The same on every replica (the
/// constants); tests use small ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerLimits {
    /// A producer's entry on a partition is forgotten once the log's clock (the leaders'
    /// `proposed_at_ms`) is this far past its last stored batch.
    pub idle_expiry_ms: u64,
    /// Most entries (one per producer and partition); a new one beyond evicts the least
    /// recently used.
    pub max_entries: usize,
}

impl Default for ProducerLimits {
    fn default() -> Self {
        ProducerLimits {
            idle_expiry_ms: crate::constants::PRODUCER_IDLE_EXPIRY_MS,
            max_entries: crate::constants::MAX_PRODUCER_ENTRIES,
        }
    }
}

/// The state one shard's group builds by applying its log.
#[derive(Debug, Default)]
pub struct ShardState {
    /// The topics this group's log holds (authoritative in the controller group).
    pub topics: Topics,
    /// A data group's copy of the controller's topics, as this node last heard them:
    /// what requests see there. Never consulted at apply; not in snapshots.
    pub(crate) controller_copy: Option<Topics>,
    pub(crate) partitions: HashMap<(u32, u32), PartitionIndex>,
    /// Idempotent producers' last batch per (producer, topic, partition).
    pub(crate) producers: ProducerTable,
    /// The consumer groups this group coordinates.
    pub(crate) groups: ConsumerGroups,
    pub(crate) applied_index: u64,
}

impl ShardState {
    /// The topics requests see: the controller's copy in a data group once heard, else
    /// the log's.
    pub fn request_topics(&self) -> &Topics {
        self.controller_copy.as_ref().unwrap_or(&self.topics)
    }

    /// Sets the producer table's bounds (tests; every replica must use the same).
    pub fn set_producer_limits(&mut self, limits: ProducerLimits) {
        self.producers.set_limits(limits);
    }

    /// Most entries the idempotent producer table keeps.
    pub fn max_producer_entries(&self) -> usize {
        self.producers.max_entries()
    }

    /// Entries in the idempotent producer table (one per producer and partition).
    pub fn producer_entries(&self) -> usize {
        self.producers.len()
    }

    /// Applies the committed entry at `index` (entries arrive in order, each once).
    pub fn apply(&mut self, index: u64, data: &[u8]) -> Result<Applied, EntryDecodeError> {
        assert!(
            index > self.applied_index,
            "applied {index} after {}",
            self.applied_index
        );
        self.applied_index = index;
        if data.is_empty() {
            return Ok(Applied::Nothing);
        }
        Ok(match BrokerEntry::decode(data)? {
            BrokerEntry::RecordBatch {
                topic_id,
                partition,
                record_count,
                batch_crc32c,
                proposed_at_ms,
                batch,
            } => self.apply_batch(
                index,
                (topic_id, partition),
                record_count,
                batch_crc32c,
                proposed_at_ms,
                batch,
            ),
            BrokerEntry::CreateTopic {
                topic_id,
                partitions,
                name,
                groups,
                new_groups,
            } => {
                let info = TopicInfo {
                    id: topic_id,
                    name: name.to_string(),
                    partitions,
                    groups,
                };
                if self.topics.apply_create_placing(info, new_groups) {
                    let counts = self.partition_counts();
                    let partitions_of = |topic| counts.get(&topic).copied().unwrap_or(0);
                    self.groups.topic_created(topic_id, &partitions_of);
                    Applied::TopicsChanged
                } else {
                    Applied::Nothing
                }
            }
            BrokerEntry::DeleteTopic { topic_id } => {
                self.partitions.retain(|&(topic, _), _| topic != topic_id);
                self.producers.remove_topic(topic_id);
                let mut counts = self.partition_counts();
                counts.remove(&topic_id);
                let partitions_of = |topic| counts.get(&topic).copied().unwrap_or(0);
                self.groups.topic_deleted(topic_id, &partitions_of);
                if self.topics.apply_delete(topic_id) {
                    Applied::TopicsChanged
                } else {
                    Applied::Nothing
                }
            }
            BrokerEntry::Group(entry) => Applied::Group(self.apply_group(index, entry)),
            BrokerEntry::Move(entry) => {
                if self.topics.moves.apply(entry) {
                    Applied::TopicsChanged
                } else {
                    Applied::Nothing
                }
            }
            BrokerEntry::Access(entry) => {
                if std::sync::Arc::make_mut(&mut self.topics.access).apply(entry) {
                    Applied::TopicsChanged
                } else {
                    Applied::Nothing
                }
            }
        })
    }

    /// Partitions per topic id, as this log's topics say.
    fn partition_counts(&self) -> BTreeMap<u32, u32> {
        self.topics.list().map(|t| (t.id, t.partitions)).collect()
    }

    /// Applies a consumer group change.
    fn apply_group(&mut self, index: u64, entry: GroupEntry<'_>) -> GroupApplied {
        // Partition counts only for the entries that may rebalance (a commit never does).
        let topics = &self.topics;
        let partitions_of = |topic| {
            topics
                .list()
                .find(|t| t.id == topic)
                .map_or(0, |t| t.partitions)
        };
        match entry {
            GroupEntry::Join(join) => self.groups.join(index, join, &partitions_of),
            GroupEntry::Leave {
                group,
                member,
                generation,
            } => self.groups.leave(group, member, generation, &partitions_of),
            GroupEntry::Commit {
                group,
                member,
                generation,
                offsets,
            } => {
                let offsets: Vec<_> = offsets
                    .into_iter()
                    .map(|(tp, offset, metadata)| {
                        let metadata = metadata.to_string();
                        (tp, CommittedOffset { offset, metadata })
                    })
                    .collect();
                self.groups.commit(group, member, generation, &offsets)
            }
            GroupEntry::Delete { group } => self.groups.delete(group),
        }
    }

    /// The consumer groups this group coordinates.
    pub fn consumer_groups(&self) -> &ConsumerGroups {
        &self.groups
    }

    /// Applies a record batch entry: the producer table's clock moves to its time, its
    /// producer's sequence is checked, and it gets its offsets.
    fn apply_batch(
        &mut self,
        index: u64,
        (topic_id, partition): (u32, u32),
        record_count: u32,
        batch_crc32c: u32,
        proposed_at_ms: u64,
        batch: &[u8],
    ) -> Applied {
        if self.topics.was_deleted(topic_id) {
            // Proposed before a deletion, committed after it: storing it would make a
            // partition of a topic that no longer exists (found by the simulator's topic
            // churn, seed 0x0).
            return Applied::UnknownTopic;
        }
        self.producers.advance_clock(proposed_at_ms);
        let producer = batch_producer(batch);
        if let Some((producer_id, epoch, base_sequence)) = producer {
            let key = (producer_id, topic_id, partition);
            let checked =
                self.producers
                    .check(&key, epoch, base_sequence, record_count, batch_crc32c);
            if let Err(refused) = checked {
                return refused;
            }
        }
        let partition_index = self.partitions.entry((topic_id, partition)).or_default();
        let base_offset = partition_index.append(record_count, index);
        if let Some((producer_id, epoch, base_sequence)) = producer {
            let entry = ProducerSequence {
                epoch,
                base_sequence,
                record_count,
                batch_crc32c,
                base_offset,
                last_used_ms: 0,
                last_use_stamp: 0,
            };
            let key = (producer_id, topic_id, partition);
            self.producers.record(key, entry, index, proposed_at_ms);
        }
        Applied::Batch {
            topic_id,
            partition,
            base_offset,
        }
    }

    /// The last applied log index.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The topics the group stored batches for, in order.
    pub fn stored_topic_ids(&self) -> std::collections::BTreeSet<u32> {
        self.partitions.keys().map(|&(topic, _)| topic).collect()
    }

    /// Records stored in the group's partitions (their next offsets, summed; retention
    /// does not lower it): its rate is the group's produce rate.
    pub fn records_stored(&self) -> u64 {
        self.partitions.values().map(|p| p.high_watermark()).sum()
    }

    /// A partition's index, if it holds any batch.
    pub fn partition(&self, topic_id: u32, partition: u32) -> Option<&PartitionIndex> {
        self.partitions.get(&(topic_id, partition))
    }

    /// Forgets the batches stored below log index `first_index` (retention removed them);
    /// offsets and producer sequences are kept.
    pub fn forget_below(&mut self, first_index: u64) {
        for index in self.partitions.values_mut() {
            let keep = index.batches.partition_point(|b| b.log_index < first_index);
            index.batches.drain(..keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(topic_id: u32, partition: u32, record_count: u32) -> Vec<u8> {
        BrokerEntry::RecordBatch {
            topic_id,
            partition,
            record_count,
            batch_crc32c: 0,
            proposed_at_ms: 0,
            batch: b"x",
        }
        .encode()
    }

    #[test]
    fn offsets_are_assigned_per_partition_in_log_order() {
        let mut state = ShardState::default();
        assert_eq!(state.apply(1, &[]).unwrap(), Applied::Nothing);
        assert_eq!(
            state.apply(2, &batch(1, 0, 3)).unwrap(),
            Applied::Batch {
                topic_id: 1,
                partition: 0,
                base_offset: 0
            }
        );
        assert_eq!(
            state.apply(3, &batch(1, 1, 5)).unwrap(),
            Applied::Batch {
                topic_id: 1,
                partition: 1,
                base_offset: 0
            }
        );
        assert_eq!(
            state.apply(4, &batch(1, 0, 2)).unwrap(),
            Applied::Batch {
                topic_id: 1,
                partition: 0,
                base_offset: 3
            }
        );
        let p0 = state.partition(1, 0).unwrap();
        assert_eq!(p0.high_watermark(), 5);
        assert_eq!(p0.from_offset(0).len(), 2);
        assert_eq!(p0.from_offset(2)[0].log_index, 2);
        assert_eq!(p0.from_offset(3)[0].log_index, 4);
        assert!(p0.from_offset(5).is_empty());
    }

    /// A partition of `batches` batches of 3 records each, at log indexes 1, 2, ...
    fn long_partition(batches: u64) -> ShardState {
        let mut state = ShardState::default();
        let entry = batch(1, 0, 3);
        for index in 1..=batches {
            state.apply(index, &entry).unwrap();
        }
        state
    }

    /// Issue 11, item 10: a fetch takes the batches from the one holding its offset, in
    /// order, and at most `max_batches` of them, from the start, the middle or the end.
    #[test]
    fn a_fetch_window_starts_at_the_batch_holding_the_offset_and_is_bounded() {
        let state = long_partition(10);
        let index = state.partition(1, 0).unwrap();
        let window = index.fetch_window(0, 4);
        assert_eq!(
            window.iter().map(|b| b.base_offset).collect::<Vec<_>>(),
            vec![0, 3, 6, 9]
        );
        // Offset 13 is the second record of the batch at 12 (log index 5).
        let window = index.fetch_window(13, 2);
        assert_eq!(window[0].base_offset, 12);
        assert_eq!(window[0].log_index, 5);
        assert_eq!(window.len(), 2);
        // Near the end: what is left; at the end: nothing.
        assert_eq!(index.fetch_window(27, 100).len(), 1);
        assert!(index.fetch_window(30, 100).is_empty());
        assert!(index.fetch_window(0, 0).is_empty());
        // After retention removed the first batches, the window starts at the first kept.
        let mut state = long_partition(10);
        state.forget_below(4);
        let index = state.partition(1, 0).unwrap();
        assert_eq!(index.fetch_window(0, 1)[0].base_offset, 9);
    }

    /// Issue 11, item 10: what a fetch copies is bounded by the constant, whatever the
    /// partition's length and wherever the fetch starts (before: every location from the
    /// offset to the end, 200,000 here, copied on each poll).
    #[test]
    fn a_fetch_copies_a_bounded_number_of_locations_from_a_long_partition() {
        use crate::constants::MAX_BATCHES_PER_FETCH;
        let batches = 200_000u64;
        let state = long_partition(batches);
        let index = state.partition(1, 0).unwrap();
        for offset in [0, 3 * batches / 2, 3 * batches - 3 * 5000] {
            let copied = index.fetch_window(offset, MAX_BATCHES_PER_FETCH).to_vec();
            assert_eq!(copied.len(), MAX_BATCHES_PER_FETCH, "from offset {offset}");
            assert_eq!(copied[0].base_offset, offset);
        }
        let last = index.fetch_window(3 * batches - 3, MAX_BATCHES_PER_FETCH);
        assert_eq!(last.len(), 1);
    }

    #[test]
    fn topics_are_created_once_and_deleted() {
        let mut state = ShardState::default();
        let create = BrokerEntry::CreateTopic {
            topic_id: 1,
            partitions: 4,
            name: "a",
            groups: vec![1, 2, 3, 0],
            new_groups: Vec::new(),
        }
        .encode();
        assert_eq!(state.apply(1, &create).unwrap(), Applied::TopicsChanged);
        assert_eq!(
            state.topics.get("a").map(|t| t.groups.clone()),
            Some(vec![1, 2, 3, 0])
        );
        let again = BrokerEntry::CreateTopic {
            topic_id: 2,
            partitions: 4,
            name: "a",
            groups: Vec::new(),
            new_groups: Vec::new(),
        }
        .encode();
        assert_eq!(state.apply(2, &again).unwrap(), Applied::Nothing);
        assert_eq!(state.topics.next_id(), 3);
        assert_eq!(
            state
                .apply(3, &BrokerEntry::DeleteTopic { topic_id: 1 }.encode())
                .unwrap(),
            Applied::TopicsChanged
        );
        assert!(state.topics.get("a").is_none());
    }

    /// A creation placing a group whose id is taken (two creations raced to it) creates
    /// nothing, on every replica alike; the group placed first stays.
    #[test]
    fn a_creation_racing_to_a_group_id_creates_nothing() {
        let mut state = ShardState::default();
        let create = |topic_id, name, replicas| {
            BrokerEntry::CreateTopic {
                topic_id,
                partitions: 1,
                name,
                groups: vec![5],
                new_groups: vec![PlacedGroup { id: 5, replicas }],
            }
            .encode()
        };
        let first = create(1, "one", vec![(2, 0)]);
        assert_eq!(state.apply(1, &first).unwrap(), Applied::TopicsChanged);
        let second = create(2, "other", vec![(3, 0)]);
        assert_eq!(state.apply(2, &second).unwrap(), Applied::Nothing);
        assert!(state.topics.get("other").is_none());
        let placed: Vec<_> = state.topics.placed_groups().cloned().collect();
        assert_eq!(
            placed,
            vec![PlacedGroup {
                id: 5,
                replicas: vec![(2, 0)]
            }]
        );
        assert!(
            state.topics.next_id() > 2,
            "the refused topic's id is spent"
        );
    }

    fn idempotent_batch(sequence: u32, count: u32, epoch: u16, value: u8) -> Vec<u8> {
        producer_batch(77, sequence, count, epoch, value, 0)
    }

    /// A batch of producer `producer_id` on topic 1 partition 0, proposed at `at_ms`.
    fn producer_batch(
        producer_id: u64,
        sequence: u32,
        count: u32,
        epoch: u16,
        value: u8,
        at_ms: u64,
    ) -> Vec<u8> {
        use crate::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
        let records: Vec<RecordData> = (0..count)
            .map(|_| RecordData {
                value: vec![value],
                ..Default::default()
            })
            .collect();
        let producer = BatchProducer {
            producer_id,
            producer_epoch: epoch,
            base_sequence: sequence,
        };
        let (bytes, crc) = encode_record_batch(producer, 0, &records);
        BrokerEntry::RecordBatch {
            topic_id: 1,
            partition: 0,
            record_count: count,
            batch_crc32c: crc,
            proposed_at_ms: at_ms,
            batch: &bytes,
        }
        .encode()
    }

    #[test]
    fn idempotent_producers_are_stored_once_and_in_sequence() {
        let mut state = ShardState::default();
        assert_eq!(
            state.apply(1, &idempotent_batch(0, 3, 0, 1)).unwrap(),
            Applied::Batch {
                topic_id: 1,
                partition: 0,
                base_offset: 0
            }
        );
        // The same batch again (a retry): answered with the original offset, not stored.
        assert_eq!(
            state.apply(2, &idempotent_batch(0, 3, 0, 1)).unwrap(),
            Applied::Duplicate { base_offset: 0 }
        );
        assert_eq!(state.partition(1, 0).unwrap().high_watermark(), 3);
        // A gap is refused; the next in sequence is stored.
        assert_eq!(
            state.apply(3, &idempotent_batch(5, 2, 0, 2)).unwrap(),
            Applied::OutOfSequence {
                expected: 3,
                refusal: SequenceRefusal::Gap
            }
        );
        assert_eq!(
            state.apply(4, &idempotent_batch(3, 2, 0, 2)).unwrap(),
            Applied::Batch {
                topic_id: 1,
                partition: 0,
                base_offset: 3
            }
        );
        // Same sequence but other records: not a duplicate.
        assert_eq!(
            state.apply(5, &idempotent_batch(3, 2, 0, 9)).unwrap(),
            Applied::OutOfSequence {
                expected: 5,
                refusal: SequenceRefusal::Gap
            }
        );
        // A new epoch starts over; an old epoch is refused.
        assert_eq!(
            state.apply(6, &idempotent_batch(0, 1, 1, 3)).unwrap(),
            Applied::Batch {
                topic_id: 1,
                partition: 0,
                base_offset: 5
            }
        );
        assert_eq!(
            state.apply(7, &idempotent_batch(5, 1, 0, 3)).unwrap(),
            Applied::OutOfSequence {
                expected: 1,
                refusal: SequenceRefusal::StaleEpoch { current: 1 }
            }
        );
        assert_eq!(state.partition(1, 0).unwrap().high_watermark(), 6);
    }

    fn stored(applied: Applied) -> bool {
        matches!(applied, Applied::Batch { .. })
    }

    const UNKNOWN: Applied = Applied::OutOfSequence {
        expected: 0,
        refusal: SequenceRefusal::UnknownProducer,
    };

    /// Issue 11, item 11: an idle producer is forgotten by the log's clock (the leaders'
    /// `proposed_at_ms`), and then a batch of it that does not start an epoch at sequence
    /// 0 is refused as UnknownProducer (before: the table never forgot, and an unknown
    /// producer was taken at any sequence).
    #[test]
    fn an_idle_producer_expires_by_the_log_clock_and_must_start_again_at_sequence_0() {
        let mut state = ShardState::default();
        state.set_producer_limits(ProducerLimits {
            idle_expiry_ms: 1000,
            max_entries: 100,
        });
        // (log index, producer, sequence, epoch, proposed at ms): one record each.
        let mut apply = |index, producer, sequence, epoch, at_ms| {
            let entry = producer_batch(producer, sequence, 1, epoch, 1, at_ms);
            state.apply(index, &entry).unwrap()
        };
        assert!(stored(apply(1, 1, 0, 0, 10_000)));
        // Entries without a time (format 1) and an older leader's clock move nothing.
        assert!(stored(apply(2, 3, 0, 0, 0)));
        assert!(stored(apply(3, 3, 1, 0, 9_000)));
        assert!(stored(apply(4, 1, 1, 0, 10_500)));
        assert!(stored(apply(5, 2, 0, 0, 11_200)));
        // 1,001 ms after producer 1's last batch, it is gone; producer 2 is not.
        assert!(stored(apply(6, 4, 0, 0, 11_501)));
        assert_eq!(apply(7, 1, 2, 0, 11_502), UNKNOWN);
        assert!(stored(apply(8, 2, 1, 0, 11_503)));
        // A new epoch at sequence 0 is taken; then it goes on in sequence.
        assert!(stored(apply(9, 1, 0, 1, 11_504)));
        assert!(stored(apply(10, 1, 1, 1, 11_505)));
        // A producer never seen must start at 0, and a new epoch too.
        assert_eq!(apply(11, 9, 5, 0, 11_506), UNKNOWN);
        assert_eq!(
            apply(12, 2, 4, 1, 11_507),
            Applied::OutOfSequence {
                expected: 0,
                refusal: SequenceRefusal::NewEpochNotAtZero
            }
        );
    }

    /// Issue 11, item 11: the table holds at most `max_entries`; a new producer beyond
    /// evicts the least recently used one at apply (before: no bound).
    #[test]
    fn a_full_producer_table_evicts_the_least_recently_used() {
        let mut state = ShardState::default();
        state.set_producer_limits(ProducerLimits {
            idle_expiry_ms: u64::MAX,
            max_entries: 3,
        });
        // (log index, producer, sequence): one record each, at 1000 + index ms.
        let mut apply = |index: u64, producer, sequence| {
            let entry = producer_batch(producer, sequence, 1, 0, 1, 1000 + index);
            state.apply(index, &entry).unwrap()
        };
        for producer in 1..=3 {
            assert!(stored(apply(producer, producer, 0)));
        }
        assert!(stored(apply(4, 1, 1)));
        // A fourth producer: producer 2 is the least recently used.
        assert!(stored(apply(5, 4, 0)));
        assert_eq!(apply(6, 2, 1), UNKNOWN);
        assert!(stored(apply(7, 1, 2)));
        assert!(stored(apply(8, 3, 1)));
        assert_eq!(state.producer_entries(), 3);
    }
}
