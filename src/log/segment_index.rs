//! The index file of a sealed segment: its sparse index and terms, so that opening a log
//! scans only the tail segment.
//!
//! A segment is sealed once a newer segment exists and all its entries are durable; its
//! index file (`<first index>.index`) is then written (temporary name, fdatasync, rename,
//! directory sync). Recovery trusts an index file only if its checksum holds and it agrees
//! with the segment's name and the next segment's first index; otherwise it scans the
//! segment as it scans the tail. A truncation into a sealed segment deletes its index
//! file (after recording the truncation fence, so a crash cannot leave a stale one in use).
//!
//! ```text
//! magic u32 "KIDX" | version u16 | 0 u16 | body_length u32 | crc32c u32 (over the body)
//! body: first_index u64, last_index u64, data_end u64, point count u32, term count u32,
//!       points (index u64, offset u64)*, term runs (first index u64, term u64)*
//! ```

use std::path::{Path, PathBuf};

use crate::log::error::{LogError, LogResult};
use crate::log::io;

/// File name suffix of segment index files.
pub const INDEX_SUFFIX: &str = ".index";
const MAGIC: u32 = u32::from_le_bytes(*b"KIDX");
const VERSION: u16 = 1;
const HEADER_BYTES: usize = 16;

/// What a sealed segment's index file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentIndex {
    /// First index of the segment (its name).
    pub first_index: u64,
    /// Last index in the segment.
    pub last_index: u64,
    /// End of the segment's data.
    pub data_end: u64,
    /// Sparse index points `(index, offset)`.
    pub points: Vec<(u64, u64)>,
    /// Term runs `(first index of the run, term)` within the segment.
    pub terms: Vec<(u64, u64)>,
}

/// The index file path of the segment at `segment_path`.
pub fn index_path(segment_path: &Path) -> PathBuf {
    segment_path.with_extension("index")
}

/// Encodes an index file.
pub fn encode(index: &SegmentIndex) -> Vec<u8> {
    let mut body = Vec::with_capacity(40 + 16 * (index.points.len() + index.terms.len()));
    for value in [index.first_index, index.last_index, index.data_end] {
        body.extend_from_slice(&value.to_le_bytes());
    }
    body.extend_from_slice(&(index.points.len() as u32).to_le_bytes());
    body.extend_from_slice(&(index.terms.len() as u32).to_le_bytes());
    for &(a, b) in index.points.iter().chain(index.terms.iter()) {
        body.extend_from_slice(&a.to_le_bytes());
        body.extend_from_slice(&b.to_le_bytes());
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes an index file; `None` if it is damaged or of another format.
pub fn decode(bytes: &[u8]) -> Option<SegmentIndex> {
    if u32_at(bytes, 0)? != MAGIC
        || bytes.get(4..6)? != VERSION.to_le_bytes()
        || bytes.get(6..8)? != [0, 0]
    {
        return None;
    }
    let body_length = u32_at(bytes, 8)? as usize;
    let body = bytes.get(HEADER_BYTES..HEADER_BYTES.checked_add(body_length)?)?;
    if crc32c::crc32c(body) != u32_at(bytes, 12)? {
        return None;
    }
    let point_count = u32_at(body, 24)? as usize;
    let term_count = u32_at(body, 28)? as usize;
    let pairs_start = 32;
    let pair = |n: usize| {
        Some((
            u64_at(body, pairs_start + 16 * n)?,
            u64_at(body, pairs_start + 16 * n + 8)?,
        ))
    };
    let total = point_count.checked_add(term_count)?;
    if body.len() != pairs_start.checked_add(total.checked_mul(16)?)? {
        return None;
    }
    Some(SegmentIndex {
        first_index: u64_at(body, 0)?,
        last_index: u64_at(body, 8)?,
        data_end: u64_at(body, 16)?,
        points: (0..point_count).map(pair).collect::<Option<_>>()?,
        terms: (point_count..total).map(pair).collect::<Option<_>>()?,
    })
}

/// Reads the index file of a segment, if there is a valid one.
pub fn read(segment_path: &Path) -> Option<SegmentIndex> {
    decode(&std::fs::read(index_path(segment_path)).ok()?)
}

/// Writes the index file of a sealed segment durably (temporary file, fdatasync, rename,
/// directory sync).
pub async fn write(dir: &Path, segment_path: &Path, index: &SegmentIndex) -> LogResult<()> {
    let final_path = index_path(segment_path);
    let temporary = final_path.with_extension("index.tmp");
    let file = io::open_read_write(&temporary, true).await?;
    io::write_all_at(
        &file,
        &temporary,
        io::aligned_buffer_from(&encode(index)),
        0,
    )
    .await?;
    io::fdatasync(&file, &temporary).await?;
    file.rename(&final_path)
        .await
        .map_err(|e| io::glommio_error("rename", &temporary, e))?;
    io::sync_directory_off_thread(dir).await
}

/// Removes the index file of a segment if there is one.
pub fn remove(segment_path: &Path) -> LogResult<()> {
    let path = index_path(segment_path);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(LogError::io("remove index", &path, error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        SegmentIndex {
            first_index: 100,
            last_index: 250,
            data_end: 65_000,
            points: vec![(100, 0), (130, 4200), (170, 8400)],
            terms: vec![(100, 3), (200, 4)],
        }
    }

    #[test]
    fn round_trip_and_padding_is_ignored() {
        let mut bytes = encode(&sample());
        assert_eq!(decode(&bytes), Some(sample()));
        bytes.resize(4096, 0);
        assert_eq!(decode(&bytes), Some(sample()));
    }

    #[test]
    fn any_damage_is_refused() {
        let bytes = encode(&sample());
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x04;
            assert_eq!(decode(&damaged), None, "flip at {position} accepted");
        }
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut} accepted");
        }
    }
}
