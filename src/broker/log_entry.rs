//! What the broker writes into a replica group's log: record batches of partitions, and
//! (in the controller group) topic changes. Decoding refuses anything malformed: the
//! bytes come from our own log (crc32c-checked), but a bug or a version mismatch must
//! surface as an error, not a panic.
//!
//! ```text
//! kind u8 | version u8 | 0 u16 | body
//! kind 1 v2, record batch : topic_id u32 | partition u32 | record_count u32 | batch_crc32c u32
//!                           | proposed_at_ms u64 | batch
//! kind 1 v1 (still read)  : topic_id u32 | partition u32 | record_count u32 | batch_crc32c u32
//!                           | batch                  (proposed_at_ms reads as 0: unknown)
//! kind 2 v2, create topic : topic_id u32 | partitions u32 | name_length u16 | name (UTF-8)
//!                           | group_count u32 (0 or partitions) | group u32 per partition
//! kind 2 v1 (still read)  : topic_id u32 | partitions u32 | name_length u16 | name
//!                           (no groups: the bootstrap spread, `controller::placement`)
//! kind 3 v1, delete topic : topic_id u32
//! kinds 4-7                : consumer group changes (`broker::group_entry`)
//! kind 8                   : replica moves (`broker::replica_moves`)
//! kind 9                   : users and access rules (`broker::access`)
//! ```
//!
//! `proposed_at_ms` is the leader's wall clock when it proposed the batch: the one clock
//! every replica sees the same, so time-based decisions at apply (idle producers expire)
//! are deterministic.

use crate::broker::access::{AccessEntry, ACCESS_KIND};
use crate::broker::group_entry::{GroupEntry, FIRST_GROUP_KIND, LAST_GROUP_KIND};
use crate::broker::replica_moves::{MoveEntry, MOVE_KIND};
use crate::broker::state::PlacedGroup;

/// Version of the topic entries' format.
pub const ENTRY_VERSION: u8 = 1;

/// Version of the record batch entry's format (2: with `proposed_at_ms`).
pub const RECORD_BATCH_VERSION: u8 = 2;

/// Version of the topic creation entry's format (3: with the groups the creation places;
/// 2, still read, places none; 1, still read, records no partition's group either).
pub const CREATE_TOPIC_VERSION: u8 = 3;

/// The topic creation format that first recorded each partition's group.
const CREATE_TOPIC_WITH_GROUPS: u8 = 2;

/// Most groups one topic creation places, and most replicas of one group: what a decoded
/// entry may claim (a creation places one group of at most 5 replicas).
const MAX_PLACED_GROUPS: usize = 64;
const MAX_PLACED_REPLICAS: usize = 16;
const PREFIX_BYTES: usize = 4;

/// One broker entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerEntry<'a> {
    /// Records for one partition, stored as the producer sent them.
    RecordBatch {
        /// Topic.
        topic_id: u32,
        /// Partition of the topic.
        partition: u32,
        /// Records in the batch (the offsets it takes).
        record_count: u32,
        /// crc32c of `batch`.
        batch_crc32c: u32,
        /// The leader's wall clock when it proposed the batch, in milliseconds since the
        /// Unix epoch (0: unknown, an entry of format version 1).
        proposed_at_ms: u64,
        /// The batch bytes.
        batch: &'a [u8],
    },
    /// A new topic.
    CreateTopic {
        /// Its id (never reused).
        topic_id: u32,
        /// Number of partitions.
        partitions: u32,
        /// Its name.
        name: &'a str,
        /// Each partition's replica group (`TopicInfo::groups`; empty from a version 1
        /// entry).
        groups: Vec<u32>,
        /// Groups this creation places (a topic whose replication factor is not the
        /// cluster's gets a group of its own; empty before version 3).
        new_groups: Vec<PlacedGroup>,
    },
    /// A topic removed.
    DeleteTopic {
        /// Its id.
        topic_id: u32,
    },
    /// A consumer group change (in the group's coordinator).
    Group(GroupEntry<'a>),
    /// A replica move's step (in the controller group).
    Move(MoveEntry),
    /// A user or access rule change (in the controller group).
    Access(AccessEntry),
}

/// Why an entry could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryDecodeError {
    /// Fewer bytes than the format needs.
    #[error("broker entry cut short")]
    Truncated,
    /// An unknown kind or version.
    #[error("unknown broker entry kind {kind} version {version}")]
    Unknown {
        /// The kind byte.
        kind: u8,
        /// The version byte.
        version: u8,
    },
    /// A topic name that is not UTF-8.
    #[error("topic name is not UTF-8")]
    BadName,
    /// A topic creation whose groups are neither one per partition nor none.
    #[error("a topic's groups do not match its partitions")]
    BadGroups,
    /// A joined node's record with an id, host or rack out of bounds.
    #[error("a joined node's record is malformed")]
    BadNode,
    /// A user or access rule out of bounds or malformed.
    #[error("a user or access rule entry is malformed")]
    BadAccess,
}

/// A topic creation's body: id, partitions, name, and from version 2 each partition's
/// group (a count, which must be 0 or the partition count, then the groups).
fn decode_create_topic(version: u8, body: &[u8]) -> Result<BrokerEntry<'_>, EntryDecodeError> {
    let raw = body.get(8..10).ok_or(EntryDecodeError::Truncated)?;
    let length = usize::from(u16::from_le_bytes([raw[0], raw[1]]));
    let name = body
        .get(10..10 + length)
        .ok_or(EntryDecodeError::Truncated)?;
    let partitions = u32_at(body, 4)?;
    let mut groups = Vec::new();
    let mut new_groups = Vec::new();
    if version >= CREATE_TOPIC_WITH_GROUPS {
        let at = 10 + length;
        let count = u32_at(body, at)?;
        if count != 0 && count != partitions {
            return Err(EntryDecodeError::BadGroups);
        }
        let end = at + 4 + 4 * count as usize;
        let raw = body.get(at + 4..end).ok_or(EntryDecodeError::Truncated)?;
        groups = raw
            .chunks_exact(4)
            .map(|g| u32::from_le_bytes([g[0], g[1], g[2], g[3]]))
            .collect();
        if version >= CREATE_TOPIC_VERSION {
            new_groups = decode_placed_groups(body, end)?;
        }
    }
    Ok(BrokerEntry::CreateTopic {
        topic_id: u32_at(body, 0)?,
        partitions,
        name: std::str::from_utf8(name).map_err(|_| EntryDecodeError::BadName)?,
        groups,
        new_groups,
    })
}

/// Groups placed by a creation: count u32, then per group its id u32, its replica count
/// u32 and (node u64, shard u32) per replica.
fn decode_placed_groups(body: &[u8], mut at: usize) -> Result<Vec<PlacedGroup>, EntryDecodeError> {
    let count = u32_at(body, at)? as usize;
    at += 4;
    if count > MAX_PLACED_GROUPS {
        return Err(EntryDecodeError::BadGroups);
    }
    let mut placed = Vec::with_capacity(count);
    for _ in 0..count {
        let id = u32_at(body, at)?;
        let replicas = u32_at(body, at + 4)? as usize;
        at += 8;
        if replicas == 0 || replicas > MAX_PLACED_REPLICAS {
            return Err(EntryDecodeError::BadGroups);
        }
        let mut slots = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            let raw = body.get(at..at + 8).ok_or(EntryDecodeError::Truncated)?;
            let mut node = [0u8; 8];
            node.copy_from_slice(raw);
            slots.push((u64::from_le_bytes(node), u32_at(body, at + 8)?));
            at += 12;
        }
        placed.push(PlacedGroup {
            id,
            replicas: slots,
        });
    }
    Ok(placed)
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, EntryDecodeError> {
    let raw = bytes.get(at..at + 4).ok_or(EntryDecodeError::Truncated)?;
    Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

impl<'a> BrokerEntry<'a> {
    /// Encodes the entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            BrokerEntry::RecordBatch {
                topic_id,
                partition,
                record_count,
                batch_crc32c,
                proposed_at_ms,
                batch,
            } => {
                out.reserve(PREFIX_BYTES + 24 + batch.len());
                out.extend_from_slice(&[1, RECORD_BATCH_VERSION, 0, 0]);
                for value in [*topic_id, *partition, *record_count, *batch_crc32c] {
                    out.extend_from_slice(&value.to_le_bytes());
                }
                out.extend_from_slice(&proposed_at_ms.to_le_bytes());
                out.extend_from_slice(batch);
            }
            BrokerEntry::CreateTopic {
                topic_id,
                partitions,
                name,
                groups,
                new_groups,
            } => {
                assert!(
                    name.len() <= usize::from(u16::MAX),
                    "topic names are checked before"
                );
                assert!(
                    new_groups.len() <= MAX_PLACED_GROUPS
                        && new_groups
                            .iter()
                            .all(|g| { (1..=MAX_PLACED_REPLICAS).contains(&g.replicas.len()) }),
                    "a creation places a few groups of a few replicas"
                );
                assert!(
                    groups.is_empty() || groups.len() == *partitions as usize,
                    "a topic records a group for every partition or none"
                );
                out.extend_from_slice(&[2, CREATE_TOPIC_VERSION, 0, 0]);
                out.extend_from_slice(&topic_id.to_le_bytes());
                out.extend_from_slice(&partitions.to_le_bytes());
                out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&(groups.len() as u32).to_le_bytes());
                for group in groups {
                    out.extend_from_slice(&group.to_le_bytes());
                }
                out.extend_from_slice(&(new_groups.len() as u32).to_le_bytes());
                for placed in new_groups {
                    out.extend_from_slice(&placed.id.to_le_bytes());
                    out.extend_from_slice(&(placed.replicas.len() as u32).to_le_bytes());
                    for (node, shard) in &placed.replicas {
                        out.extend_from_slice(&node.to_le_bytes());
                        out.extend_from_slice(&shard.to_le_bytes());
                    }
                }
            }
            BrokerEntry::DeleteTopic { topic_id } => {
                out.extend_from_slice(&[3, ENTRY_VERSION, 0, 0]);
                out.extend_from_slice(&topic_id.to_le_bytes());
            }
            BrokerEntry::Group(entry) => entry.encode(&mut out),
            BrokerEntry::Move(entry) => entry.encode(&mut out),
            BrokerEntry::Access(entry) => entry.encode(&mut out),
        }
        out
    }

    /// Decodes an entry.
    pub fn decode(bytes: &'a [u8]) -> Result<BrokerEntry<'a>, EntryDecodeError> {
        let prefix = bytes
            .get(..PREFIX_BYTES)
            .ok_or(EntryDecodeError::Truncated)?;
        let (kind, version) = (prefix[0], prefix[1]);
        let body = &bytes[PREFIX_BYTES..];
        match (kind, version) {
            (1, 1) => Ok(BrokerEntry::RecordBatch {
                topic_id: u32_at(body, 0)?,
                partition: u32_at(body, 4)?,
                record_count: u32_at(body, 8)?,
                batch_crc32c: u32_at(body, 12)?,
                proposed_at_ms: 0,
                batch: body.get(16..).ok_or(EntryDecodeError::Truncated)?,
            }),
            (1, RECORD_BATCH_VERSION) => {
                let raw = body.get(16..24).ok_or(EntryDecodeError::Truncated)?;
                let mut proposed_at_ms = [0u8; 8];
                proposed_at_ms.copy_from_slice(raw);
                Ok(BrokerEntry::RecordBatch {
                    topic_id: u32_at(body, 0)?,
                    partition: u32_at(body, 4)?,
                    record_count: u32_at(body, 8)?,
                    batch_crc32c: u32_at(body, 12)?,
                    proposed_at_ms: u64::from_le_bytes(proposed_at_ms),
                    batch: body.get(24..).ok_or(EntryDecodeError::Truncated)?,
                })
            }
            (1, _) => Err(EntryDecodeError::Unknown { kind, version }),
            (FIRST_GROUP_KIND..=LAST_GROUP_KIND, _) => {
                GroupEntry::decode(kind, version, body).map(BrokerEntry::Group)
            }
            (2, ENTRY_VERSION..=CREATE_TOPIC_VERSION) => decode_create_topic(version, body),
            (MOVE_KIND, _) => MoveEntry::decode(bytes).map(BrokerEntry::Move),
            (ACCESS_KIND, _) => AccessEntry::decode(bytes).map(BrokerEntry::Access),
            _ if version != ENTRY_VERSION => Err(EntryDecodeError::Unknown { kind, version }),
            (3, _) => Ok(BrokerEntry::DeleteTopic {
                topic_id: u32_at(body, 0)?,
            }),
            _ => Err(EntryDecodeError::Unknown { kind, version }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_round_trips() {
        let entries = [
            BrokerEntry::RecordBatch {
                topic_id: 3,
                partition: 7,
                record_count: 12,
                batch_crc32c: 99,
                proposed_at_ms: 1_700_000_000_123,
                batch: b"batch bytes",
            },
            BrokerEntry::CreateTopic {
                topic_id: 4,
                partitions: 3,
                name: "orders",
                groups: vec![2, 0, 1],
                new_groups: Vec::new(),
            },
            BrokerEntry::CreateTopic {
                topic_id: 5,
                partitions: 2,
                name: "legacy",
                groups: Vec::new(),
                new_groups: Vec::new(),
            },
            BrokerEntry::CreateTopic {
                topic_id: 6,
                partitions: 2,
                name: "alone",
                groups: vec![9, 9],
                new_groups: vec![PlacedGroup {
                    id: 9,
                    replicas: vec![(4, 1), (2, 0), (6, 3)],
                }],
            },
            BrokerEntry::DeleteTopic { topic_id: 4 },
            BrokerEntry::Access(AccessEntry::DeleteUser {
                name: "alice".into(),
            }),
        ];
        for entry in entries {
            assert_eq!(BrokerEntry::decode(&entry.encode()), Ok(entry.clone()));
        }
    }

    #[test]
    fn a_version_1_record_batch_still_decodes_with_an_unknown_time() {
        let mut old = vec![1, 1, 0, 0];
        for value in [3u32, 7, 12, 99] {
            old.extend_from_slice(&value.to_le_bytes());
        }
        old.extend_from_slice(b"batch bytes");
        assert_eq!(
            BrokerEntry::decode(&old),
            Ok(BrokerEntry::RecordBatch {
                topic_id: 3,
                partition: 7,
                record_count: 12,
                batch_crc32c: 99,
                proposed_at_ms: 0,
                batch: b"batch bytes",
            })
        );
    }

    /// A topic creation written before groups were recorded reads with none (its
    /// partitions follow the bootstrap spread); one whose groups do not match its
    /// partitions is refused.
    #[test]
    fn a_version_1_topic_creation_still_decodes_without_groups() {
        let mut old = vec![2, 1, 0, 0];
        old.extend_from_slice(&4u32.to_le_bytes());
        old.extend_from_slice(&16u32.to_le_bytes());
        old.extend_from_slice(&6u16.to_le_bytes());
        old.extend_from_slice(b"orders");
        assert_eq!(
            BrokerEntry::decode(&old),
            Ok(BrokerEntry::CreateTopic {
                topic_id: 4,
                partitions: 16,
                name: "orders",
                groups: Vec::new(),
                new_groups: Vec::new(),
            })
        );
        let two_partitions = BrokerEntry::CreateTopic {
            topic_id: 4,
            partitions: 2,
            name: "orders",
            groups: vec![1, 0],
            new_groups: Vec::new(),
        }
        .encode();
        // Version 2 (groups, none placed) still reads.
        let mut version_2 = two_partitions[..two_partitions.len() - 4].to_vec();
        version_2[1] = 2;
        assert_eq!(
            BrokerEntry::decode(&version_2),
            BrokerEntry::decode(&two_partitions)
        );
        assert_eq!(
            BrokerEntry::decode(&two_partitions[..two_partitions.len() - 1]),
            Err(EntryDecodeError::Truncated)
        );
        // The partition count says 3 while two groups follow.
        let mut mismatched = two_partitions;
        mismatched[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(
            BrokerEntry::decode(&mismatched),
            Err(EntryDecodeError::BadGroups)
        );
    }

    /// A creation claiming more placed groups or replicas than any creation places, or
    /// a group of no replica, is refused; one cut short is truncated.
    #[test]
    fn a_creation_placing_groups_out_of_bounds_is_refused() {
        let placing = |replicas: Vec<(u64, u32)>| {
            BrokerEntry::CreateTopic {
                topic_id: 6,
                partitions: 1,
                name: "alone",
                groups: vec![9],
                new_groups: vec![PlacedGroup { id: 9, replicas }],
            }
            .encode()
        };
        let good = placing(vec![(1, 0), (2, 0)]);
        assert!(BrokerEntry::decode(&good).is_ok());
        assert_eq!(
            BrokerEntry::decode(&good[..good.len() - 3]),
            Err(EntryDecodeError::Truncated)
        );
        // The replica count says 0, then 17.
        let count_at = good.len() - 2 * 12 - 4;
        for claimed in [0u32, MAX_PLACED_REPLICAS as u32 + 1] {
            let mut bad = good.clone();
            bad[count_at..count_at + 4].copy_from_slice(&claimed.to_le_bytes());
            assert_eq!(BrokerEntry::decode(&bad), Err(EntryDecodeError::BadGroups));
        }
        // The group count says 65.
        let mut bad = good.clone();
        let groups_at = count_at - 8;
        bad[groups_at..groups_at + 4].copy_from_slice(&65u32.to_le_bytes());
        assert_eq!(BrokerEntry::decode(&bad), Err(EntryDecodeError::BadGroups));
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = BrokerEntry::decode(&bytes);
        }
    }
}
