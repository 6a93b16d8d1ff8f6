//! The log's small durable state: Raft hard state, Raft configuration, the compaction point
//! and a pending suffix truncation, in a file of two 4 KiB slots written alternately.
//!
//! A write goes to the slot not holding the newest copy, then fdatasync. A crash mid-write
//! can only damage that slot, so recovery always finds the old or the new value whole: it
//! reads both, keeps the valid one with the higher sequence number. Two damaged slots is
//! corruption (reported, never guessed around).
//!
//! ```text
//! slot: crc32c u32 | magic u32 | version u16 | 0 u16 | body_length u32 | body ...
//! body: sequence, term, vote, commit, compaction index, compaction term (u64 each),
//!       fence flag u8 + 7 zeros, fence segment u64, fence offset u64, auto_leave u8 + 3 zeros,
//!       four member lists (voters, learners, voters_outgoing, learners_next): count u32, u64s,
//!       configuration index u64 (version 2; a version 1 slot reads as index 0)
//! ```

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::constants::{BLOCK_SIZE_BYTES, MAX_CONF_MEMBERS};
use crate::log::error::{LogError, LogResult};
use crate::log::io;

/// File name of the meta file inside a log directory.
pub const META_FILE_NAME: &str = "meta";
const SLOT_MAGIC: u32 = u32::from_le_bytes(*b"KMTA");
const SLOT_VERSION: u16 = 2;
/// Slots written before the configuration carried its index (read as index 0).
const SLOT_VERSION_WITHOUT_CONF_INDEX: u16 = 1;
const SLOT_HEADER_BYTES: usize = 16;
const SLOT_SIZE_BYTES: usize = BLOCK_SIZE_BYTES as usize;

/// Raft's hard state as the log stores it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardStateRecord {
    /// Current term.
    pub term: u64,
    /// Candidate voted for in the current term (0 for none).
    pub vote: u64,
    /// Highest index known committed (persisted lazily; may lag).
    pub commit: u64,
}

/// Raft's configuration (`ConfState`) as the log stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfStateRecord {
    /// Voting members.
    pub voters: Vec<u64>,
    /// Non-voting members.
    pub learners: Vec<u64>,
    /// Voters of the outgoing configuration during a joint change.
    pub voters_outgoing: Vec<u64>,
    /// Learners to add when leaving a joint configuration.
    pub learners_next: Vec<u64>,
    /// Whether a joint configuration is left automatically.
    pub auto_leave: bool,
    /// The log index this configuration is as of: of the configuration change that made
    /// it, or of the snapshot that carried it (0: the bootstrap configuration). A
    /// configuration change at or below it is already reflected and is not applied again
    /// when committed entries are replayed.
    pub index: u64,
}

/// A suffix truncation that was started: the log ends at `offset` of the segment whose
/// first index is `segment_first_index`; anything after it is stale and is erased.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TruncationFence {
    /// First index (and name) of the segment the log ends in.
    pub segment_first_index: u64,
    /// Byte offset in that segment where the log ends.
    pub offset: u64,
}

/// Everything the meta file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaState {
    /// Raft hard state.
    pub hard_state: HardStateRecord,
    /// Raft configuration.
    pub conf_state: ConfStateRecord,
    /// Index of the last removed entry (0 when nothing was removed); first index is one more.
    pub compaction_index: u64,
    /// Term of the entry at `compaction_index`.
    pub compaction_term: u64,
    /// A suffix truncation in progress, replayed at open.
    pub truncation_fence: Option<TruncationFence>,
}

/// The open meta file with the sequence number of its newest slot.
pub struct MetaFile {
    path: PathBuf,
    file: Rc<DmaFile>,
    sequence: u64,
}

impl MetaFile {
    /// Opens the meta file of `dir`, creating it with a default state if absent.
    pub async fn open(dir: &Path) -> LogResult<(MetaFile, MetaState)> {
        let path = dir.join(META_FILE_NAME);
        let existed = path.exists();
        let file = io::open_read_write(&path, true).await?;
        let mut meta = MetaFile {
            path,
            file,
            sequence: 0,
        };
        if !existed {
            let state = MetaState::default();
            let zeros = io::aligned_buffer_from(&[0u8; SLOT_SIZE_BYTES]);
            io::write_all_at(&meta.file, &meta.path, zeros, SLOT_SIZE_BYTES as u64).await?;
            meta.write(&state).await?;
            io::sync_directory(dir)?;
            return Ok((meta, state));
        }
        let bytes = io::read_at(&meta.file, &meta.path, 0, 2 * SLOT_SIZE_BYTES).await?;
        let (sequence, state) = choose_slot(&bytes, &meta.path)?;
        meta.sequence = sequence;
        Ok((meta, state))
    }

    /// Durably replaces the stored state (write the older slot, then fdatasync).
    pub async fn write(&mut self, state: &MetaState) -> LogResult<()> {
        let sequence = self.sequence + 1;
        let slot = encode_slot(sequence, state);
        let position = (sequence % 2) * SLOT_SIZE_BYTES as u64;
        io::write_all_at(
            &self.file,
            &self.path,
            io::aligned_buffer_from(&slot),
            position,
        )
        .await?;
        io::fdatasync(&self.file, &self.path).await?;
        self.sequence = sequence;
        Ok(())
    }

    /// Closes the file.
    pub async fn close(self) -> LogResult<()> {
        if let Ok(file) = Rc::try_unwrap(self.file) {
            file.close()
                .await
                .map_err(|e| io::glommio_error("close", &self.path, e))?;
        }
        Ok(())
    }
}

/// Reads the meta file of `dir` without changing anything (for `keel log check`).
pub fn read_meta_file(dir: &Path) -> LogResult<Option<MetaState>> {
    let path = dir.join(META_FILE_NAME);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| LogError::io("read", &path, e))?;
    Ok(Some(choose_slot(&bytes, &path)?.1))
}

fn choose_slot(bytes: &[u8], path: &Path) -> LogResult<(u64, MetaState)> {
    let mut best: Option<(u64, MetaState)> = None;
    for slot_number in 0..2 {
        let start = slot_number * SLOT_SIZE_BYTES;
        let end = (start + SLOT_SIZE_BYTES).min(bytes.len());
        if start >= end {
            continue;
        }
        if let Some((sequence, state)) = decode_slot(&bytes[start..end]) {
            if best
                .as_ref()
                .is_none_or(|(best_sequence, _)| sequence > *best_sequence)
            {
                best = Some((sequence, state));
            }
        }
    }
    best.ok_or_else(|| LogError::Corruption {
        path: path.to_path_buf(),
        offset: 0,
        reason: "neither meta slot holds a valid state".to_string(),
    })
}

fn encode_slot(sequence: u64, state: &MetaState) -> Vec<u8> {
    let mut body = Vec::with_capacity(SLOT_SIZE_BYTES);
    let fence = state.truncation_fence;
    for value in [
        sequence,
        state.hard_state.term,
        state.hard_state.vote,
        state.hard_state.commit,
        state.compaction_index,
        state.compaction_term,
    ] {
        body.extend_from_slice(&value.to_le_bytes());
    }
    body.extend_from_slice(&[u8::from(fence.is_some()), 0, 0, 0, 0, 0, 0, 0]);
    body.extend_from_slice(&fence.map_or(0, |f| f.segment_first_index).to_le_bytes());
    body.extend_from_slice(&fence.map_or(0, |f| f.offset).to_le_bytes());
    body.extend_from_slice(&[u8::from(state.conf_state.auto_leave), 0, 0, 0]);
    let conf = &state.conf_state;
    for list in [
        &conf.voters,
        &conf.learners,
        &conf.voters_outgoing,
        &conf.learners_next,
    ] {
        assert!(
            list.len() <= MAX_CONF_MEMBERS,
            "configuration larger than the format bound"
        );
        body.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for member in list {
            body.extend_from_slice(&member.to_le_bytes());
        }
    }
    body.extend_from_slice(&conf.index.to_le_bytes());
    let mut slot = vec![0u8; SLOT_HEADER_BYTES];
    slot[4..8].copy_from_slice(&SLOT_MAGIC.to_le_bytes());
    slot[8..10].copy_from_slice(&SLOT_VERSION.to_le_bytes());
    slot[12..16].copy_from_slice(&(body.len() as u32).to_le_bytes());
    slot.extend_from_slice(&body);
    assert!(slot.len() <= SLOT_SIZE_BYTES);
    let crc = crc32c::crc32c(&slot[4..]);
    slot[0..4].copy_from_slice(&crc.to_le_bytes());
    slot
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, length: usize) -> Option<&[u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(length)?)?;
        self.at += length;
        Some(slice)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn list(&mut self) -> Option<Vec<u64>> {
        let count = self.u32()? as usize;
        if count > MAX_CONF_MEMBERS {
            return None;
        }
        (0..count).map(|_| self.u64()).collect()
    }
}

fn decode_slot(slot: &[u8]) -> Option<(u64, MetaState)> {
    let mut header = Cursor { bytes: slot, at: 0 };
    let crc = header.u32()?;
    let magic = header.u32()?;
    let version = u16::from_le_bytes(header.take(4)?[..2].try_into().ok()?);
    let body_length = header.u32()? as usize;
    if magic != SLOT_MAGIC || !(SLOT_VERSION_WITHOUT_CONF_INDEX..=SLOT_VERSION).contains(&version) {
        return None;
    }
    let covered = slot.get(4..SLOT_HEADER_BYTES.checked_add(body_length)?)?;
    if crc32c::crc32c(covered) != crc {
        return None;
    }
    let mut body = Cursor {
        bytes: &slot[SLOT_HEADER_BYTES..SLOT_HEADER_BYTES + body_length],
        at: 0,
    };
    let sequence = body.u64()?;
    let hard_state = HardStateRecord {
        term: body.u64()?,
        vote: body.u64()?,
        commit: body.u64()?,
    };
    let compaction_index = body.u64()?;
    let compaction_term = body.u64()?;
    let fence_present = body.take(8)?[0] == 1;
    let fence = TruncationFence {
        segment_first_index: body.u64()?,
        offset: body.u64()?,
    };
    let auto_leave = body.take(4)?[0] == 1;
    let mut conf_state = ConfStateRecord {
        voters: body.list()?,
        learners: body.list()?,
        voters_outgoing: body.list()?,
        learners_next: body.list()?,
        auto_leave,
        index: 0,
    };
    if version > SLOT_VERSION_WITHOUT_CONF_INDEX {
        conf_state.index = body.u64()?;
    }
    let state = MetaState {
        hard_state,
        conf_state,
        compaction_index,
        compaction_term,
        truncation_fence: fence_present.then_some(fence),
    };
    Some((sequence, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MetaState {
        MetaState {
            hard_state: HardStateRecord {
                term: 5,
                vote: 2,
                commit: 99,
            },
            conf_state: ConfStateRecord {
                voters: vec![1, 2, 3],
                learners: vec![4],
                voters_outgoing: vec![],
                learners_next: vec![],
                auto_leave: true,
                index: 41,
            },
            compaction_index: 10,
            compaction_term: 3,
            truncation_fence: Some(TruncationFence {
                segment_first_index: 11,
                offset: 4096,
            }),
        }
    }

    #[test]
    fn slot_round_trip() {
        let slot = encode_slot(7, &sample());
        assert_eq!(decode_slot(&slot), Some((7, sample())));
    }

    /// A slot written before configurations carried their index (version 1: the lists
    /// end the body) reads with index 0, the rest unchanged.
    #[test]
    fn a_version_1_slot_reads_with_configuration_index_0() {
        let state = sample();
        let current = encode_slot(7, &state);
        let body_length = u32::from_le_bytes(current[12..16].try_into().unwrap()) as usize;
        let mut old = current[..SLOT_HEADER_BYTES + body_length - 8].to_vec();
        old[8..10].copy_from_slice(&SLOT_VERSION_WITHOUT_CONF_INDEX.to_le_bytes());
        old[12..16].copy_from_slice(&((body_length - 8) as u32).to_le_bytes());
        let crc = crc32c::crc32c(&old[4..]);
        old[0..4].copy_from_slice(&crc.to_le_bytes());
        let mut expected = state;
        expected.conf_state.index = 0;
        assert_eq!(decode_slot(&old), Some((7, expected)));
    }

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_falls_back() {
        let mut file = vec![0u8; 2 * SLOT_SIZE_BYTES];
        let old = MetaState::default();
        file[..SLOT_SIZE_BYTES][..encode_slot(2, &old).len()]
            .copy_from_slice(&encode_slot(2, &old));
        let new_slot = encode_slot(3, &sample());
        file[SLOT_SIZE_BYTES..SLOT_SIZE_BYTES + new_slot.len()].copy_from_slice(&new_slot);
        assert_eq!(choose_slot(&file, Path::new("m")).unwrap(), (3, sample()));
        // Tear the newer slot anywhere: the older value comes back whole.
        for cut in [
            SLOT_SIZE_BYTES + 1,
            SLOT_SIZE_BYTES + 20,
            SLOT_SIZE_BYTES + new_slot.len() - 1,
        ] {
            let mut torn = file.clone();
            torn[cut] ^= 0x40;
            assert_eq!(
                choose_slot(&torn, Path::new("m")).unwrap(),
                (2, old.clone())
            );
        }
    }

    #[test]
    fn two_bad_slots_are_corruption() {
        let error = choose_slot(&[7u8; 2 * SLOT_SIZE_BYTES], Path::new("m")).unwrap_err();
        assert!(matches!(error, LogError::Corruption { .. }));
    }

    #[test]
    fn decoding_random_bytes_never_panics() {
        let mut seed = 1u64;
        for _ in 0..2000 {
            let mut slot = encode_slot(1, &sample());
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let position = (seed >> 33) as usize % slot.len();
            slot[position] = (seed >> 20) as u8;
            slot.truncate((seed >> 40) as usize % (slot.len() + 1));
            let _ = decode_slot(&slot);
        }
    }
}
