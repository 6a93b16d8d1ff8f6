//! Reading entries by index range, or a sparse ascending list of indexes (a partition's
//! batches among other entries): from the tail cache, else from segment files, each
//! byte read at most once per reader.
//!
//! `EntryReader` is a small state machine shared by the asynchronous path (aligned DMA
//! reads through glommio) and the synchronous one that `raft::Storage` needs: it says
//! which bytes it wants next, is fed them, and parses and checks the entries in them.

use std::path::PathBuf;
use std::rc::Rc;

use glommio::io::DmaFile;
use raft::eraftpb::{Entry, EntryType as RaftEntryType};

use crate::constants::READ_CHUNK_BYTES;
use crate::log::entry::{decode_entry, decode_header, EntryDefect, EntryType, HEADER_SIZE_BYTES};
use crate::log::error::{LogError, LogResult};
use crate::log::segment::Segment;
use crate::log::tail_cache::{EntryLocation, TailCache};

/// Bytes the reader wants next.
pub struct ReadRequest {
    /// Segment file path (for errors and the synchronous path).
    pub path: PathBuf,
    /// The open DMA file, if the segment has one.
    pub file: Option<Rc<DmaFile>>,
    /// Position in the segment.
    pub offset: u64,
    /// Bytes to read (fewer may come back at the end of the data).
    pub length: usize,
}

/// Reads entries `[low, high)` up to about `max_bytes` of payload (at least one entry).
pub struct EntryReader {
    next_index: u64,
    high: u64,
    max_bytes: u64,
    payload_bytes: u64,
    max_payload_bytes: u32,
    position: Option<EntryLocation>,
    minimum_read: usize,
    /// Entries from here on are in the tail cache (possibly not yet on disk).
    cached_from: u64,
    /// A sparse read's indexes after `next_index`, descending (the next is last).
    wanted: Vec<u64>,
    /// The entries read so far, in order.
    pub entries: Vec<Entry>,
    /// Where each of `entries` is stored.
    pub locations: Vec<EntryLocation>,
}

/// Converts a stored entry to Raft's type.
pub fn to_raft_entry(
    entry_type: EntryType,
    term: u64,
    index: u64,
    context: &[u8],
    data: &[u8],
) -> Entry {
    let mut entry = Entry::default();
    entry.set_entry_type(match entry_type {
        EntryType::Normal => RaftEntryType::EntryNormal,
        EntryType::ConfChange => RaftEntryType::EntryConfChange,
        EntryType::ConfChangeV2 => RaftEntryType::EntryConfChangeV2,
    });
    entry.term = term;
    entry.index = index;
    entry.context = context.to_vec().into();
    entry.data = data.to_vec().into();
    entry
}

impl EntryReader {
    /// A reader for `[low, high)`; the caller has checked the range against the log.
    pub fn new(low: u64, high: u64, max_bytes: u64, max_payload_bytes: u32) -> Self {
        EntryReader {
            next_index: low,
            high,
            max_bytes,
            payload_bytes: 0,
            max_payload_bytes,
            position: None,
            minimum_read: READ_CHUNK_BYTES,
            cached_from: u64::MAX,
            wanted: Vec::new(),
            entries: Vec::new(),
            locations: Vec::new(),
        }
    }

    /// A reader for the entries at `indexes` (ascending, not empty; the caller has
    /// checked their range against the log), up to about `max_bytes` of payload (at least
    /// one entry). Entries between them are read past (within a read chunk) or jumped over
    /// (by the sparse index), never returned.
    pub fn sparse(indexes: &[u64], max_bytes: u64, max_payload_bytes: u32) -> Self {
        assert!(
            indexes.windows(2).all(|pair| pair[0] < pair[1]),
            "a sparse read's indexes ascend"
        );
        let (Some(&first), Some(&last)) = (indexes.first(), indexes.last()) else {
            panic!("a sparse read of no index");
        };
        let mut reader = EntryReader::new(first, last + 1, max_bytes, max_payload_bytes);
        reader.wanted = indexes[1..].iter().rev().copied().collect();
        reader
    }

    fn is_done(&self) -> bool {
        self.next_index >= self.high
            || (!self.entries.is_empty() && self.payload_bytes >= self.max_bytes)
    }

    fn accept(&mut self, entry: Entry, location: EntryLocation) -> bool {
        let size = (entry.data.len() + entry.context.len()) as u64;
        if !self.entries.is_empty() && self.payload_bytes + size > self.max_bytes {
            self.max_bytes = 0;
            return false;
        }
        self.payload_bytes += size;
        self.next_index = self.wanted.pop().unwrap_or(self.next_index + 1);
        self.entries.push(entry);
        self.locations.push(location);
        true
    }

    /// Ends the read when the entry at `index`, of `payload_length` bytes, is the next
    /// wanted and would not be accepted for the byte budget (the check `accept` makes).
    fn stop_if_over_budget(&mut self, index: u64, payload_length: u32) {
        if index == self.next_index
            && !self.entries.is_empty()
            && self.payload_bytes + u64::from(payload_length) > self.max_bytes
        {
            self.max_bytes = 0;
        }
    }

    /// Takes what the cache holds; returns the next disk read needed, or `None` when done.
    pub fn next_request(&mut self, segments: &[Segment], cache: &TailCache) -> Option<ReadRequest> {
        while !self.is_done() {
            match cache.get(self.next_index) {
                Some(cached) => {
                    if !self.accept(cached.entry.clone(), cached.location) {
                        return None;
                    }
                }
                None => break,
            }
        }
        if self.is_done() {
            return None;
        }
        self.cached_from = cache.first_index().unwrap_or(u64::MAX);
        let position = segments.partition_point(|s| s.first_index <= self.next_index);
        let segment = &segments[position.checked_sub(1)?];
        assert!(
            segment.contains(self.next_index),
            "index {} in no segment",
            self.next_index
        );
        let indexed = segment
            .sparse
            .lookup(self.next_index)
            .map(|(_, offset)| offset);
        let offset = match (self.position, indexed) {
            // Go on from where the last read stopped, unless the sparse index knows a
            // place further on (a sparse read's next entry is ahead).
            (Some(location), _) if location.segment_first_index == segment.first_index => {
                location.offset.max(indexed.unwrap_or(0))
            }
            (_, Some(indexed)) => indexed,
            (_, None) => return None,
        };
        self.position = Some(EntryLocation {
            segment_first_index: segment.first_index,
            offset,
        });
        let remaining = segment.data_end.saturating_sub(offset) as usize;
        Some(ReadRequest {
            path: segment.path.clone(),
            file: segment.file.clone(),
            offset,
            length: self.minimum_read.max(READ_CHUNK_BYTES).min(remaining),
        })
    }

    /// Parses the bytes read for `request`: every whole entry in them is checked, skipped
    /// if below the range, kept if in it.
    pub fn feed(&mut self, request: &ReadRequest, bytes: &[u8]) -> LogResult<()> {
        let Some(mut location) = self.position else {
            return Ok(());
        };
        let mut at = 0usize;
        while !self.is_done() && self.next_index < self.cached_from {
            let rest = &bytes[at..];
            let corrupt = |reason: String| LogError::Corruption {
                path: request.path.clone(),
                offset: location.offset,
                reason,
            };
            let view = match decode_entry(rest, self.max_payload_bytes) {
                Ok(view) => view,
                Err(EntryDefect::Truncated) if at > 0 => {
                    // Cut off at the end of this read: when its header says it would not
                    // fit the byte budget, the read is over (never read it only to drop it).
                    if let Ok(header) = decode_header(rest, self.max_payload_bytes) {
                        self.stop_if_over_budget(header.index, header.payload_length);
                    }
                    break;
                }
                Err(EntryDefect::Truncated) => {
                    let header = decode_header(rest, self.max_payload_bytes)
                        .map_err(|defect| corrupt(format!("unreadable entry: {defect:?}")))?;
                    let needed = HEADER_SIZE_BYTES + header.payload_length as usize;
                    if needed <= request.length || request.length < self.minimum_read {
                        return Err(corrupt("entry cut short on read".to_string()));
                    }
                    self.stop_if_over_budget(header.index, header.payload_length);
                    if self.is_done() {
                        return Ok(());
                    }
                    self.minimum_read = needed;
                    return Ok(());
                }
                Err(defect) => {
                    return Err(corrupt(format!(
                        "entry fails its check on read: {defect:?}"
                    )))
                }
            };
            let index = view.header.index;
            if index > self.next_index {
                return Err(corrupt(format!(
                    "expected index {} but found {index}",
                    self.next_index
                )));
            }
            if index == self.next_index {
                let entry = to_raft_entry(
                    view.entry_type(),
                    view.header.term,
                    index,
                    view.context,
                    view.data,
                );
                if !self.accept(entry, location) {
                    break;
                }
            }
            at += view.stored_size_bytes as usize;
            location.offset += view.stored_size_bytes;
        }
        self.minimum_read = READ_CHUNK_BYTES;
        self.position = Some(location);
        Ok(())
    }
}
