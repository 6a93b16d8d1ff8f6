//! Recovery planning: what a log directory holds and what opening it must change.
//!
//! The planner reads every segment and the meta file and decides, without writing
//! anything; `CommitLog::open` carries the plan out and `keel log check` prints it.
//!
//! Rules:
//! - Entries must run on without a gap from segment to segment, terms never decreasing.
//! - The first bad record ends the log if nothing valid follows it anywhere (a torn write at
//!   the end), or if it shows a block that never landed (zeros where a write should be:
//!   several unsynced writes may be in flight at a crash and land in any order, so valid
//!   entries after such a hole are unsynced too and go with it). A bad record with intact
//!   bytes followed by a valid entry is damage in the middle of the log: opening fails with
//!   an error naming the file and offset; nothing is skipped silently.
//! - A torn tail at or below the persisted commit index is damage too (committed data is
//!   never cut).
//! - A truncation fence in the meta file (a suffix truncation interrupted by a crash) ends
//!   the log where the fence says; what lies after it is stale and is erased again.
//! - Segments entirely at or below the compaction point are leftovers of a prefix removal
//!   and are deleted.

use std::path::{Path, PathBuf};

use crate::log::entry::EntryDefect;
use crate::log::error::{LogError, LogResult};
use crate::log::meta::MetaState;
use crate::log::segment::{list_segments, scan_segment, SegmentScan, SparseIndex};
use crate::log::segment_index::{self, SegmentIndex};

/// A segment that stays, with what its scan (or its index file) says of it.
#[derive(Debug)]
pub struct ScannedSegment {
    /// First index (name).
    pub first_index: u64,
    /// Path of the file.
    pub path: PathBuf,
    /// Length of the file in bytes.
    pub file_length: u64,
    /// Index of the last entry that stays (`first_index - 1` when none).
    pub last_index: u64,
    /// Term of that entry.
    pub last_term: Option<u64>,
    /// End of the data that stays.
    pub data_end: u64,
    /// Sparse index points.
    pub points: Vec<(u64, u64)>,
    /// Term runs `(first index, term)`.
    pub term_runs: Vec<(u64, u64)>,
    /// The bytes of the block holding the end of the valid data (the partly filled block
    /// the next flush writes again); empty for a segment taken from its index file.
    pub tail_block: Vec<u8>,
    /// Whether this came from a valid index file rather than a scan.
    pub from_index_file: bool,
}

impl ScannedSegment {
    /// Number of entries that stay.
    pub fn entry_count(&self) -> u64 {
        self.last_index + 1 - self.first_index
    }

    fn from_scan(first_index: u64, path: PathBuf, bytes: &[u8], scan: &SegmentScan) -> Self {
        let mut sparse = SparseIndex::default();
        let mut term_runs: Vec<(u64, u64)> = Vec::new();
        for &(index, term, offset) in &scan.entries {
            sparse.observe(index, offset);
            if term_runs.last().is_none_or(|&(_, last)| last != term) {
                term_runs.push((index, term));
            }
        }
        let data_end = scan.data_end as usize;
        let block_start = crate::log::io::align_down(scan.data_end) as usize;
        // The padding of the last entry may be cut off with the file: pad it back.
        let mut tail_block = bytes[block_start..data_end.min(bytes.len())].to_vec();
        tail_block.resize(data_end - block_start, 0);
        ScannedSegment {
            first_index,
            path,
            file_length: bytes.len() as u64,
            last_index: scan.last_index().unwrap_or(first_index - 1),
            last_term: scan.last_term(),
            data_end: scan.data_end,
            points: sparse.points().to_vec(),
            term_runs,
            tail_block,
            from_index_file: false,
        }
    }

    fn from_index(path: PathBuf, file_length: u64, index: SegmentIndex) -> Self {
        ScannedSegment {
            first_index: index.first_index,
            path,
            file_length,
            last_index: index.last_index,
            last_term: index.terms.last().map(|&(_, term)| term),
            data_end: index.data_end,
            points: index.points,
            term_runs: index.terms,
            tail_block: Vec::new(),
            from_index_file: true,
        }
    }
}

/// Uses the index file of a sealed segment if it holds and agrees with its neighbours.
fn trusted_index(
    path: &Path,
    first_index: u64,
    next_first_index: u64,
    previous_term: u64,
) -> Option<ScannedSegment> {
    let index = segment_index::read(path)?;
    let file_length = std::fs::metadata(path).ok()?.len();
    let first_term_ok = index
        .terms
        .first()
        .is_some_and(|&(start, term)| start == first_index && term >= previous_term);
    let first_point_ok = index.points.first() == Some(&(first_index, 0));
    let consistent = index.first_index == first_index
        && index.last_index >= first_index
        && index.last_index + 1 == next_first_index
        && index.data_end <= file_length
        && first_term_ok
        && first_point_ok;
    consistent.then(|| ScannedSegment::from_index(path.to_path_buf(), file_length, index))
}

/// A cut at the end of the log that opening performs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailCut {
    /// Segment the log now ends in.
    pub segment_first_index: u64,
    /// Path of that segment.
    pub path: PathBuf,
    /// Offset where the log ends.
    pub offset: u64,
    /// End of the bytes to erase (zeros from `offset` to here).
    pub erase_end: u64,
    /// First index that is gone.
    pub first_lost_index: u64,
    /// Why: the defect found, or `None` for the replay of an interrupted truncation.
    pub defect: Option<EntryDefect>,
    /// Whether the defect shows blocks of an unsynced write that never landed; then valid
    /// entries after it (later blocks of the same unsynced writes) are dropped too.
    pub torn_write: bool,
}

/// What opening the log will do.
#[derive(Debug, Default)]
pub struct RecoveryPlan {
    /// Segments that stay, in order.
    pub keep: Vec<ScannedSegment>,
    /// The cut of a torn tail or the replay of an interrupted truncation.
    pub tail_cut: Option<TailCut>,
    /// Segment files to delete (after the end, or below the compaction point).
    pub delete: Vec<PathBuf>,
}

impl RecoveryPlan {
    /// Index of the last entry that stays (the compaction index for an empty log).
    pub fn last_index(&self, meta: &MetaState) -> u64 {
        self.keep
            .iter()
            .rev()
            .find(|segment| segment.entry_count() > 0)
            .map(|segment| segment.last_index)
            .unwrap_or(meta.compaction_index)
            .max(meta.compaction_index)
    }

    /// Whether opening changes nothing on disk.
    pub fn is_clean(&self) -> bool {
        self.tail_cut.is_none() && self.delete.is_empty()
    }
}

fn corruption(path: &Path, offset: u64, reason: String) -> LogError {
    LogError::Corruption {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

fn describe(defect: EntryDefect) -> &'static str {
    match defect {
        EntryDefect::Truncated => "entry cut short",
        EntryDefect::Zeroed => "zeros where an entry should be",
        EntryDefect::BadHeader => "impossible entry header",
        EntryDefect::BadChecksum => "crc32c mismatch",
        EntryDefect::UnexpectedIndex => "entry out of sequence",
    }
}

/// Reads the log directory and decides what opening it must do. With `use_index_files`,
/// sealed segments with a valid index file are not read (only the tail is scanned);
/// without, every entry of every segment is read and checked.
pub fn plan_recovery(
    dir: &Path,
    meta: &MetaState,
    max_payload_bytes: u32,
    use_index_files: bool,
) -> LogResult<RecoveryPlan> {
    let listed = list_segments(dir).map_err(|e| LogError::io("list segments", dir, e))?;
    let fence = meta.truncation_fence;
    let mut plan = RecoveryPlan::default();
    let mut previous: Option<(u64, u64)> = None; // (last index, last term)
    let next_firsts: Vec<Option<u64>> = (0..listed.len())
        .map(|k| listed.get(k + 1).map(|&(first, _)| first))
        .collect();
    for ((first_index, path), next_first_index) in listed.into_iter().zip(next_firsts) {
        let beyond_fence = fence.is_some_and(|f| first_index > f.segment_first_index);
        if beyond_fence {
            plan.delete.push(path);
            continue;
        }
        let previous_term = previous.map_or(0, |(_, term)| term);
        let fenced = fence.is_some_and(|f| f.segment_first_index == first_index);
        let continues = previous.is_none_or(|(last, _)| first_index == last + 1);
        if use_index_files && plan.tail_cut.is_none() && !fenced && continues {
            if let Some(next) = next_first_index {
                if let Some(segment) = trusted_index(&path, first_index, next, previous_term) {
                    previous = Some((
                        segment.last_index,
                        segment.last_term.unwrap_or(previous_term),
                    ));
                    plan.keep.push(segment);
                    continue;
                }
            }
        }
        let bytes = std::fs::read(&path).map_err(|e| LogError::io("read segment", &path, e))?;
        if let Some(cut) = &plan.tail_cut {
            // After the end of the log: stale only if nothing valid is in it.
            let scan = scan_segment(&bytes, first_index, 0, max_payload_bytes, None);
            if !scan.entries.is_empty() && !cut.torn_write {
                return Err(corruption(
                    &cut.path,
                    cut.offset,
                    format!(
                        "{} at index {}, but {} holds valid entries after it",
                        describe(cut.defect.unwrap_or(EntryDefect::Zeroed)),
                        cut.first_lost_index,
                        path.display()
                    ),
                ));
            }
            plan.delete.push(path);
            continue;
        }
        if let Some((last_index, _)) = previous {
            if first_index != last_index + 1 {
                let scan = scan_segment(&bytes, first_index, 0, max_payload_bytes, None);
                if scan.entries.is_empty() {
                    plan.delete.push(path);
                    continue;
                }
                return Err(corruption(
                    &path,
                    0,
                    format!("segment starts at index {first_index} but the log before it ends at {last_index}"),
                ));
            }
        }
        let limit = fence
            .filter(|f| f.segment_first_index == first_index)
            .map(|f| f.offset);
        let scan = scan_segment(&bytes, first_index, previous_term, max_payload_bytes, limit);
        if let Some(defect) = &scan.defect {
            if let Some(valid_offset) = defect.valid_entry_after.filter(|_| !defect.missing_block) {
                return Err(corruption(
                    &path,
                    defect.offset,
                    format!(
                        "{} at index {}, followed by a valid entry at offset {valid_offset}",
                        describe(defect.kind),
                        first_index + scan.entries.len() as u64
                    ),
                ));
            }
            let clean_end = defect.kind == EntryDefect::Zeroed && defect.dirty_end == defect.offset;
            if !clean_end {
                plan.tail_cut = Some(TailCut {
                    segment_first_index: first_index,
                    path: path.clone(),
                    offset: defect.offset,
                    erase_end: defect.dirty_end,
                    first_lost_index: first_index + scan.entries.len() as u64,
                    defect: Some(defect.kind),
                    torn_write: defect.missing_block,
                });
            }
        }
        if let Some(fence_offset) = limit {
            if plan.tail_cut.is_none() {
                let dirty_end = bytes
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |last| last as u64 + 1)
                    .max(fence_offset);
                plan.tail_cut = Some(TailCut {
                    segment_first_index: first_index,
                    path: path.clone(),
                    offset: fence_offset,
                    erase_end: dirty_end,
                    first_lost_index: first_index + scan.entries.len() as u64,
                    defect: None,
                    torn_write: false,
                });
            }
        }
        previous = Some((
            scan.last_index().unwrap_or(first_index - 1),
            scan.last_term().unwrap_or(previous_term),
        ));
        plan.keep
            .push(ScannedSegment::from_scan(first_index, path, &bytes, &scan));
    }
    check_commit_and_compaction(&mut plan, meta)?;
    Ok(plan)
}

fn check_commit_and_compaction(plan: &mut RecoveryPlan, meta: &MetaState) -> LogResult<()> {
    if let Some(cut) = &plan.tail_cut {
        if cut.defect.is_some() && cut.first_lost_index <= meta.hard_state.commit {
            return Err(corruption(
                &cut.path,
                cut.offset,
                format!(
                    "entry {} is damaged but the persisted commit index is {}",
                    cut.first_lost_index, meta.hard_state.commit
                ),
            ));
        }
    }
    let compaction = meta.compaction_index;
    // Segments wholly at or below the compaction point are leftovers of a prefix removal.
    // The last segment stays when it still continues the log right after the compaction
    // point (it is where the next entry goes).
    let last_index = plan.last_index(meta);
    while let Some(first) = plan.keep.first() {
        let segment_last = first.last_index;
        let only_one = plan.keep.len() == 1;
        let continues = only_one && segment_last == compaction && last_index == compaction;
        if segment_last > compaction || continues {
            break;
        }
        let removed = plan.keep.remove(0);
        if plan
            .tail_cut
            .as_ref()
            .is_some_and(|c| c.segment_first_index == removed.first_index)
        {
            plan.tail_cut = None;
        }
        plan.delete.push(removed.path);
    }
    if let Some(first) = plan.keep.first() {
        if first.first_index > compaction + 1 {
            return Err(corruption(
                &first.path,
                0,
                format!(
                    "log starts at index {} but the compaction point is {compaction}: entries missing",
                    first.first_index
                ),
            ));
        }
    }
    Ok(())
}
