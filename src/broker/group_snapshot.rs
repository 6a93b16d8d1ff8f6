//! Consumer groups in a state snapshot (`broker::snapshot`, version 3 on): after the
//! producer table, sorted by name, so every replica writes the same bytes.
//!
//! ```text
//! count u32, then per group: name str | generation u64 | mode u8 | strategy u8
//!   | members u32, then per member: id str | client str | instance str
//!       | session_timeout_ms u32 | topics u32, topic_id u32 ... | assigned u32,
//!         (topic_id u32 | partition u32) ...
//!   | offsets u32, then per offset: owner str | topic_id u32 | partition u32
//!       | offset u64 | metadata str
//! str: length u16 | UTF-8 bytes
//! ```

use std::collections::BTreeMap;

use crate::broker::groups::{
    AssignStrategy, CommittedOffset, ConsumerGroups, Group, GroupMode, Member,
};
use crate::broker::snapshot::{Reader, SnapshotError};

fn put_str(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    out.extend_from_slice(&(value as u32).to_le_bytes());
}

/// Appends the groups.
pub(crate) fn encode_groups(groups: &ConsumerGroups, out: &mut Vec<u8>) {
    put_u32(out, groups.groups.len());
    for (name, group) in &groups.groups {
        put_str(out, name);
        out.extend_from_slice(&group.generation.to_le_bytes());
        out.extend_from_slice(&[group.mode.code(), group.strategy.code()]);
        put_u32(out, group.members.len());
        for (id, member) in &group.members {
            for text in [id, &member.client, &member.instance] {
                put_str(out, text);
            }
            out.extend_from_slice(&member.session_timeout_ms.to_le_bytes());
            put_u32(out, member.topics.len());
            for topic in &member.topics {
                out.extend_from_slice(&topic.to_le_bytes());
            }
            put_u32(out, member.assignment.len());
            for (topic, partition) in &member.assignment {
                out.extend_from_slice(&topic.to_le_bytes());
                out.extend_from_slice(&partition.to_le_bytes());
            }
        }
        put_u32(out, group.offsets.len());
        for ((owner, topic, partition), committed) in &group.offsets {
            put_str(out, owner);
            out.extend_from_slice(&topic.to_le_bytes());
            out.extend_from_slice(&partition.to_le_bytes());
            out.extend_from_slice(&committed.offset.to_le_bytes());
            put_str(out, &committed.metadata);
        }
    }
}

fn read_str(reader: &mut Reader<'_>) -> Result<String, SnapshotError> {
    let length = usize::from(reader.u16()?);
    std::str::from_utf8(reader.take(length)?)
        .map(str::to_string)
        .map_err(|_| SnapshotError::Malformed("a consumer group text is not UTF-8"))
}

/// Reads what `encode_groups` wrote; never panics on any input.
pub(crate) fn decode_groups(reader: &mut Reader<'_>) -> Result<ConsumerGroups, SnapshotError> {
    let count = reader.count(16)?;
    let mut groups = BTreeMap::new();
    for _ in 0..count {
        let name = read_str(reader)?;
        let generation = reader.u64()?;
        let [mode, strategy] = reader.array::<2>()?;
        let mode = GroupMode::from_code(mode).ok_or(SnapshotError::Malformed("group mode"))?;
        let strategy = AssignStrategy::from_code(strategy)
            .ok_or(SnapshotError::Malformed("group strategy"))?;
        let member_count = reader.count(18)?;
        let mut members = BTreeMap::new();
        for _ in 0..member_count {
            let (id, member) = decode_member(reader)?;
            members.insert(id, member);
        }
        let offset_count = reader.count(20)?;
        let mut offsets = BTreeMap::new();
        for _ in 0..offset_count {
            let owner = read_str(reader)?;
            let (topic, partition) = (reader.u32()?, reader.u32()?);
            let offset = reader.u64()?;
            let metadata = read_str(reader)?;
            offsets.insert(
                (owner, topic, partition),
                CommittedOffset { offset, metadata },
            );
        }
        let group = Group {
            generation,
            mode,
            strategy,
            members,
            offsets,
        };
        groups.insert(name, group);
    }
    Ok(ConsumerGroups::from_groups(groups))
}

fn decode_member(reader: &mut Reader<'_>) -> Result<(String, Member), SnapshotError> {
    let (id, client, instance) = (read_str(reader)?, read_str(reader)?, read_str(reader)?);
    let session_timeout_ms = reader.u32()?;
    let topic_count = reader.count(4)?;
    let topics = (0..topic_count)
        .map(|_| reader.u32())
        .collect::<Result<_, _>>()?;
    let assigned = reader.count(8)?;
    let assignment = (0..assigned)
        .map(|_| Ok((reader.u32()?, reader.u32()?)))
        .collect::<Result<_, SnapshotError>>()?;
    let member = Member {
        client,
        instance,
        topics,
        session_timeout_ms,
        assignment,
    };
    Ok((id, member))
}
