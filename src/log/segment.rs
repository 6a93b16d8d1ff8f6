//! One segment file: its name, its sparse index, and the scan that rebuilds them from bytes.
//!
//! A segment is a preallocated file named by the index of its first entry
//! (`00000000000000000001.segment`). Entries follow each other from offset 0, each starting
//! at a multiple of 8; the unwritten rest of the file is zeros. The scan is pure (bytes in,
//! findings out) so recovery, `keel log check` and the tests share it.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::constants::{BLOCK_SIZE_BYTES, ENTRY_ALIGNMENT_BYTES, SPARSE_INDEX_INTERVAL_BYTES};
use crate::log::entry::{
    decode_entry, decode_header, stored_size_bytes, EntryDefect, HEADER_SIZE_BYTES,
};

/// File name suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".segment";

/// The file name of the segment whose first entry is `first_index`.
pub fn segment_file_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name back into its first index.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Lists the segment files of `dir`, ordered by first index.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        if let Some(first_index) = item.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push((first_index, item.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Sparse index of a segment: some `(index, offset)` pairs, increasing.
#[derive(Clone, Debug, Default)]
pub struct SparseIndex {
    points: Vec<(u64, u64)>,
}

impl SparseIndex {
    /// Records an entry if it starts far enough past the previous point.
    pub fn observe(&mut self, index: u64, offset: u64) {
        match self.points.last() {
            Some(&(_, last_offset)) if offset < last_offset + SPARSE_INDEX_INTERVAL_BYTES => {}
            _ => self.points.push((index, offset)),
        }
    }

    /// The nearest point at or before `index`: where to start reading to find it.
    pub fn lookup(&self, index: u64) -> Option<(u64, u64)> {
        let position = self.points.partition_point(|&(start, _)| start <= index);
        position.checked_sub(1).map(|p| self.points[p])
    }

    /// A sparse index with these points (increasing).
    pub fn from_points(points: Vec<(u64, u64)>) -> Self {
        SparseIndex { points }
    }

    /// The points, increasing.
    pub fn points(&self) -> &[(u64, u64)] {
        &self.points
    }

    /// Forgets points at or above `from_index`.
    pub fn truncate_from(&mut self, from_index: u64) {
        self.points.retain(|&(index, _)| index < from_index);
    }
}

/// A segment of an open log.
pub struct Segment {
    /// Index of the first entry (the file's name).
    pub first_index: u64,
    /// Path of the file.
    pub path: PathBuf,
    /// The open file; `None` until the first flush that writes into it creates it.
    pub file: Option<Rc<DmaFile>>,
    /// A buffered read handle for the synchronous read path (opened on first use).
    pub read_handle: Option<Rc<std::fs::File>>,
    /// Index of the last entry; `first_index - 1` when empty.
    pub last_index: u64,
    /// End of the appended bytes (entries not yet flushed included).
    pub data_end: u64,
    /// Sparse index over the segment's entries.
    pub sparse: SparseIndex,
    /// How fast the segment fills: decides how the next segment is prepared.
    pub fill_clock: FillClock,
    /// Whether the segment's index file is written (it is sealed and durable).
    pub index_persisted: bool,
    /// Term runs `(first index, term)` of the entries in this segment.
    pub term_runs: Vec<(u64, u64)>,
}

/// Length of the windows over which a segment's recent fill rate is measured.
const FILL_WINDOW: std::time::Duration = std::time::Duration::from_millis(500);

/// How fast a segment fills, for pacing the preparation of the next one: the fastest of
/// the rate since it became active (or the log was opened), the rate over the last
/// completed window and the rate over the current one, so a burst after a quiet start is
/// seen at once.
#[derive(Clone, Copy, Debug)]
pub struct FillClock {
    since: std::time::Instant,
    bytes_then: u64,
    window_start: std::time::Instant,
    window_bytes: u64,
    last_window_rate: f64,
}

impl FillClock {
    /// Starts measuring at `data_end`.
    pub fn new(data_end: u64) -> Self {
        let now = std::time::Instant::now();
        FillClock {
            since: now,
            bytes_then: data_end,
            window_start: now,
            window_bytes: data_end,
            last_window_rate: 0.0,
        }
    }

    /// Notes the segment's data end now (rolls the window when it is over).
    pub fn observe(&mut self, data_end: u64) {
        let elapsed = self.window_start.elapsed();
        if elapsed >= FILL_WINDOW {
            self.last_window_rate =
                data_end.saturating_sub(self.window_bytes) as f64 / elapsed.as_secs_f64();
            self.window_start = std::time::Instant::now();
            self.window_bytes = data_end;
        }
    }

    /// Bytes per second the segment fills at, given its data end now.
    pub fn rate(&self, data_end: u64) -> f64 {
        let overall = data_end.saturating_sub(self.bytes_then) as f64
            / self.since.elapsed().as_secs_f64().max(1e-6);
        let window_elapsed = self.window_start.elapsed().as_secs_f64();
        let current = if window_elapsed >= 0.05 {
            data_end.saturating_sub(self.window_bytes) as f64 / window_elapsed
        } else {
            0.0
        };
        overall.max(self.last_window_rate).max(current)
    }
}

impl Segment {
    /// A segment with no entries yet.
    pub fn new_empty(dir: &Path, first_index: u64) -> Self {
        Segment {
            first_index,
            path: dir.join(segment_file_name(first_index)),
            file: None,
            read_handle: None,
            last_index: first_index - 1,
            data_end: 0,
            sparse: SparseIndex::default(),
            fill_clock: FillClock::new(0),
            index_persisted: false,
            term_runs: Vec::new(),
        }
    }

    /// Records that the entry `index` of `term` is in this segment (term runs).
    pub fn observe_term(&mut self, index: u64, term: u64) {
        if self.term_runs.last().is_none_or(|&(_, last)| last != term) {
            self.term_runs.push((index, term));
        }
    }

    /// Forgets term runs from `from_index` on (the entries were truncated).
    pub fn truncate_terms_from(&mut self, from_index: u64) {
        self.term_runs.retain(|&(start, _)| start < from_index);
    }

    /// Whether the segment holds `index`.
    pub fn contains(&self, index: u64) -> bool {
        index >= self.first_index && index <= self.last_index
    }
}

/// The first place where a segment's bytes stop being a valid continuation of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanDefect {
    /// Byte offset of the bad record.
    pub offset: u64,
    /// What is wrong with it.
    pub kind: EntryDefect,
    /// Offset of a valid entry found further on, if any: proof that the defect is damage in
    /// the middle of the log rather than a torn tail.
    pub valid_entry_after: Option<u64>,
    /// End of the last non-zero byte from the defect on (equal to `offset` when everything
    /// after the defect is zeros): the range to erase when the tail is cut there.
    pub dirty_end: u64,
    /// Whether the defect shows a block that never reached the disk (zeros where a write
    /// should have landed): the mark of a torn write, as opposed to damaged data.
    pub missing_block: bool,
}

/// What a scan of one segment's bytes found.
#[derive(Clone, Debug, Default)]
pub struct SegmentScan {
    /// Entries found, as `(index, term, offset)`, for the index structures.
    pub entries: Vec<(u64, u64, u64)>,
    /// End of the last valid entry.
    pub data_end: u64,
    /// The first defect, if the valid entries do not run up to `limit` or the end.
    pub defect: Option<ScanDefect>,
}

impl SegmentScan {
    /// Index of the last valid entry, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.entries.last().map(|&(index, _, _)| index)
    }

    /// Term of the last valid entry, if any.
    pub fn last_term(&self) -> Option<u64> {
        self.entries.last().map(|&(_, term, _)| term)
    }
}

/// Scans `bytes` (a segment's content, up to `limit` bytes if given) for consecutive valid
/// entries starting at `first_index`, with terms not below `previous_term`.
pub fn scan_segment(
    bytes: &[u8],
    first_index: u64,
    previous_term: u64,
    max_payload_bytes: u32,
    limit: Option<u64>,
) -> SegmentScan {
    let end = limit.map_or(bytes.len(), |l| (l as usize).min(bytes.len()));
    let bytes = &bytes[..end];
    let mut scan = SegmentScan::default();
    let mut offset = 0usize;
    let mut expected_index = first_index;
    let mut last_term = previous_term;
    while offset < bytes.len() {
        let kind = match decode_entry(&bytes[offset..], max_payload_bytes) {
            Ok(view) if view.header.index != expected_index || view.header.term < last_term => {
                EntryDefect::UnexpectedIndex
            }
            Ok(view) => {
                scan.entries
                    .push((view.header.index, view.header.term, offset as u64));
                offset += view.stored_size_bytes as usize;
                scan.data_end = offset as u64;
                expected_index += 1;
                last_term = view.header.term;
                continue;
            }
            Err(kind) => kind,
        };
        scan.defect = Some(ScanDefect {
            offset: offset as u64,
            kind,
            valid_entry_after: find_valid_entry(bytes, offset, expected_index, max_payload_bytes),
            dirty_end: bytes[offset..]
                .iter()
                .rposition(|&b| b != 0)
                .map_or(offset as u64, |last| (offset + last + 1) as u64),
            missing_block: shows_missing_block(bytes, offset, kind, max_payload_bytes),
        });
        break;
    }
    scan
}

/// Whether the bad record at `offset` looks torn rather than damaged.
///
/// Writes go out in whole 4 KiB blocks and several may be in flight, so a crash can leave
/// any subset of the unsynced blocks on disk. A block that did not land reads as zeros
/// (segments are zero-filled or fallocated, and a rewritten partial block holds its old
/// prefix then zeros). Headers (32 bytes, 8-aligned) never straddle a sector, so a torn
/// header is all zeros. So: a zeroed header, or an entry with an intact header whose span
/// holds an aligned block of zeros, is torn; anything else is damage.
fn shows_missing_block(bytes: &[u8], offset: usize, kind: EntryDefect, max_payload: u32) -> bool {
    match kind {
        EntryDefect::Zeroed => true,
        // Segments are preallocated: a file that ends early was cut, not torn.
        EntryDefect::Truncated | EntryDefect::BadHeader | EntryDefect::UnexpectedIndex => false,
        EntryDefect::BadChecksum => {
            let Ok(header) = decode_header(&bytes[offset..], max_payload) else {
                return false;
            };
            let span_end =
                (offset + stored_size_bytes(header.payload_length) as usize).min(bytes.len());
            let block = BLOCK_SIZE_BYTES as usize;
            let mut boundary = (offset + HEADER_SIZE_BYTES).div_ceil(block) * block;
            while boundary < span_end {
                let end = (boundary + block).min(span_end);
                if bytes[boundary..end].iter().all(|&b| b == 0) {
                    return true;
                }
                boundary += block;
            }
            false
        }
    }
}

/// Looks for any valid entry with an index at or above `expected_index` after `from`.
fn find_valid_entry(
    bytes: &[u8],
    from: usize,
    expected_index: u64,
    max_payload: u32,
) -> Option<u64> {
    let step = ENTRY_ALIGNMENT_BYTES as usize;
    let mut offset = from + step;
    while offset + 32 <= bytes.len() {
        let candidate = &bytes[offset..];
        // Cheap filter before the checksum: a plausible index field.
        let index = u64::from_le_bytes(candidate[16..24].try_into().unwrap_or([0; 8]));
        if index >= expected_index {
            if let Ok(view) = decode_entry(candidate, max_payload) {
                if view.header.index >= expected_index {
                    return Some(offset as u64);
                }
            }
        }
        offset += step;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::entry::{encode_entry, EntryType};

    fn segment_bytes(first: u64, count: u64, size: usize) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for index in first..first + count {
            offsets.push(bytes.len() as u64);
            bytes.extend(encode_entry(
                1,
                index,
                EntryType::Normal,
                b"",
                &[index as u8; 100],
            ));
        }
        bytes.resize(size, 0);
        (bytes, offsets)
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_file_name(42), "00000000000000000042.segment");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("42.segment"), None);
        assert_eq!(
            parse_segment_file_name("0000000000000000004x.segment"),
            None
        );
    }

    #[test]
    fn clean_segment_has_zeros_after_the_data_and_no_defect_worth_erasing() {
        let (bytes, _) = segment_bytes(5, 10, 8192);
        let scan = scan_segment(&bytes, 5, 0, 1 << 20, None);
        assert_eq!(scan.last_index(), Some(14));
        let defect = scan.defect.unwrap();
        assert_eq!(defect.kind, EntryDefect::Zeroed);
        assert_eq!(defect.dirty_end, defect.offset);
        assert_eq!(defect.valid_entry_after, None);
    }

    #[test]
    fn flipped_bit_in_the_middle_is_followed_by_valid_entries() {
        let (mut bytes, offsets) = segment_bytes(1, 10, 8192);
        bytes[offsets[4] as usize + 40] ^= 1;
        let scan = scan_segment(&bytes, 1, 0, 1 << 20, None);
        assert_eq!(scan.last_index(), Some(4));
        let defect = scan.defect.unwrap();
        assert_eq!(defect.offset, offsets[4]);
        assert_eq!(defect.kind, EntryDefect::BadChecksum);
        assert_eq!(defect.valid_entry_after, Some(offsets[5]));
    }

    #[test]
    fn limit_hides_what_lies_beyond_a_truncation_fence() {
        let (bytes, offsets) = segment_bytes(1, 10, 8192);
        let scan = scan_segment(&bytes, 1, 0, 1 << 20, Some(offsets[3]));
        assert_eq!(scan.last_index(), Some(3));
        assert!(scan.defect.is_none());
    }

    #[test]
    fn sparse_lookup_finds_the_point_at_or_before() {
        let mut sparse = SparseIndex::default();
        sparse.observe(1, 0);
        sparse.observe(2, 100);
        sparse.observe(30, 5000);
        sparse.observe(80, 10000);
        assert_eq!(sparse.lookup(0), None);
        assert_eq!(sparse.lookup(1), Some((1, 0)));
        assert_eq!(sparse.lookup(29), Some((1, 0)));
        assert_eq!(sparse.lookup(31), Some((30, 5000)));
        assert_eq!(sparse.lookup(500), Some((80, 10000)));
        sparse.truncate_from(30);
        assert_eq!(sparse.lookup(500), Some((1, 0)));
    }
}
