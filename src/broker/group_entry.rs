//! Consumer group changes as log entries (kinds 4 to 7 of `broker::log_entry`): joins,
//! leaves and removals, offset commits, deletions. Decoding refuses anything malformed
//! (a bug or a version mismatch surfaces as an error, never a panic).
//!
//! ```text
//! str: length u16 | UTF-8 bytes
//! kind 4 v1, join   : group str | member str | client str | instance str | mode u8
//!                     | strategy u8 | session_timeout_ms u32 | count u16 | topic_id u32 ...
//! kind 5 v1, leave  : group str | member str | has_generation u8 | generation u64
//! kind 6 v1, commit : group str | member str | generation u64 | count u32
//!                     | (topic_id u32 | partition u32 | offset u64 | metadata str) ...
//! kind 7 v1, delete : group str
//! ```

use crate::broker::groups::{AssignStrategy, GroupMode, Join, TopicPartition};
use crate::broker::log_entry::EntryDecodeError;

/// First kind byte of group entries.
pub const FIRST_GROUP_KIND: u8 = 4;
/// Last kind byte of group entries.
pub const LAST_GROUP_KIND: u8 = 7;

/// One offset of a commit: partition, next offset, metadata.
pub type OffsetEntry<'a> = (TopicPartition, u64, &'a str);

/// A consumer group change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEntry<'a> {
    /// A member joins (empty member id: a new one) or joins again.
    Join(Join<'a>),
    /// A member leaves; with a generation, a removal after its session timed out (void
    /// if the group moved on since).
    Leave {
        /// The group.
        group: &'a str,
        /// The member.
        member: &'a str,
        /// The generation the removal was decided at.
        generation: Option<u64>,
    },
    /// Offsets committed by a member at a generation (empty member: a tool, for an
    /// empty group).
    Commit {
        /// The group.
        group: &'a str,
        /// The member.
        member: &'a str,
        /// Its generation.
        generation: u64,
        /// The offsets.
        offsets: Vec<OffsetEntry<'a>>,
    },
    /// An empty group removed with its offsets.
    Delete {
        /// The group.
        group: &'a str,
    },
}

const VERSION: u8 = 1;

fn put_str(out: &mut Vec<u8>, text: &str) {
    assert!(
        text.len() <= usize::from(u16::MAX),
        "group names and metadata are checked before"
    );
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

impl GroupEntry<'_> {
    /// Encodes the entry with its kind and version prefix.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            GroupEntry::Join(join) => {
                out.extend_from_slice(&[4, VERSION, 0, 0]);
                for text in [join.group, join.member_id, join.client, join.instance] {
                    put_str(out, text);
                }
                out.extend_from_slice(&[join.mode.code(), join.strategy.code()]);
                out.extend_from_slice(&join.session_timeout_ms.to_le_bytes());
                // MAX_GROUP_SUBSCRIPTIONS is checked before an entry is made.
                let count = u16::try_from(join.topics.len()).expect("subscriptions are bounded");
                out.extend_from_slice(&count.to_le_bytes());
                for topic in &join.topics {
                    out.extend_from_slice(&topic.to_le_bytes());
                }
            }
            GroupEntry::Leave {
                group,
                member,
                generation,
            } => {
                out.extend_from_slice(&[5, VERSION, 0, 0]);
                put_str(out, group);
                put_str(out, member);
                out.push(u8::from(generation.is_some()));
                out.extend_from_slice(&generation.unwrap_or(0).to_le_bytes());
            }
            GroupEntry::Commit {
                group,
                member,
                generation,
                offsets,
            } => {
                out.extend_from_slice(&[6, VERSION, 0, 0]);
                put_str(out, group);
                put_str(out, member);
                out.extend_from_slice(&generation.to_le_bytes());
                out.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
                for ((topic, partition), offset, metadata) in offsets {
                    out.extend_from_slice(&topic.to_le_bytes());
                    out.extend_from_slice(&partition.to_le_bytes());
                    out.extend_from_slice(&offset.to_le_bytes());
                    put_str(out, metadata);
                }
            }
            GroupEntry::Delete { group } => {
                out.extend_from_slice(&[7, VERSION, 0, 0]);
                put_str(out, group);
            }
        }
    }

    /// Decodes the body of a group entry of `kind` and `version`.
    pub fn decode(kind: u8, version: u8, body: &[u8]) -> Result<GroupEntry<'_>, EntryDecodeError> {
        if version != VERSION {
            return Err(EntryDecodeError::Unknown { kind, version });
        }
        let mut r = Reader { bytes: body };
        Ok(match kind {
            4 => {
                let (group, member_id, client, instance) = (r.str()?, r.str()?, r.str()?, r.str()?);
                let mode = GroupMode::from_code(r.u8()?).ok_or(EntryDecodeError::Truncated)?;
                let strategy =
                    AssignStrategy::from_code(r.u8()?).ok_or(EntryDecodeError::Truncated)?;
                let session_timeout_ms = r.u32()?;
                let count = usize::from(r.u16()?);
                let topics = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
                GroupEntry::Join(Join {
                    group,
                    member_id,
                    client,
                    instance,
                    mode,
                    strategy,
                    session_timeout_ms,
                    topics,
                })
            }
            5 => {
                let (group, member) = (r.str()?, r.str()?);
                let has_generation = r.u8()? != 0;
                let generation = r.u64()?;
                GroupEntry::Leave {
                    group,
                    member,
                    generation: has_generation.then_some(generation),
                }
            }
            6 => {
                let (group, member, generation) = (r.str()?, r.str()?, r.u64()?);
                let count = r.u32()? as usize;
                // Each offset takes at least 18 bytes: a count beyond the body is refused
                // before anything is allocated for it.
                if count > r.bytes.len() / 18 {
                    return Err(EntryDecodeError::Truncated);
                }
                let mut offsets = Vec::with_capacity(count);
                for _ in 0..count {
                    let tp = (r.u32()?, r.u32()?);
                    offsets.push((tp, r.u64()?, r.str()?));
                }
                GroupEntry::Commit {
                    group,
                    member,
                    generation,
                    offsets,
                }
            }
            7 => GroupEntry::Delete { group: r.str()? },
            _ => return Err(EntryDecodeError::Unknown { kind, version }),
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryDecodeError> {
        if self.bytes.len() < n {
            return Err(EntryDecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, EntryDecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, EntryDecodeError> {
        let raw = self.take(2)?;
        Ok(u16::from_le_bytes([raw[0], raw[1]]))
    }

    fn u32(&mut self) -> Result<u32, EntryDecodeError> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(raw))
    }

    fn u64(&mut self) -> Result<u64, EntryDecodeError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }

    fn str(&mut self) -> Result<&'a str, EntryDecodeError> {
        let length = usize::from(self.u16()?);
        std::str::from_utf8(self.take(length)?).map_err(|_| EntryDecodeError::BadName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::log_entry::BrokerEntry;
    use proptest::prelude::*;

    fn samples() -> Vec<GroupEntry<'static>> {
        vec![
            GroupEntry::Join(Join {
                group: "orders",
                member_id: "",
                client: "billing",
                instance: "host-1",
                mode: GroupMode::Broadcasting,
                strategy: AssignStrategy::RoundRobin,
                session_timeout_ms: 10_000,
                topics: vec![3, 9],
            }),
            GroupEntry::Leave {
                group: "orders",
                member: "billing-7",
                generation: Some(4),
            },
            GroupEntry::Leave {
                group: "orders",
                member: "billing-7",
                generation: None,
            },
            GroupEntry::Commit {
                group: "orders",
                member: "billing-7",
                generation: 4,
                offsets: vec![((3, 0), 100, "done"), ((3, 1), 0, "")],
            },
            GroupEntry::Delete { group: "orders" },
        ]
    }

    #[test]
    fn every_group_entry_round_trips_as_a_broker_entry() {
        for entry in samples() {
            let broker = BrokerEntry::Group(entry.clone());
            assert_eq!(BrokerEntry::decode(&broker.encode()), Ok(broker));
        }
    }

    proptest! {
        #[test]
        fn decoding_cut_or_flipped_group_entries_never_panics(
            pick in 0usize..5,
            cut in 0usize..80,
            flip in 0usize..80,
        ) {
            let mut bytes = BrokerEntry::Group(samples()[pick].clone()).encode();
            if flip < bytes.len() {
                bytes[flip] ^= 0x5a;
            }
            bytes.truncate(cut.max(4));
            let _ = BrokerEntry::decode(&bytes);
        }
    }
}
