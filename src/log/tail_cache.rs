//! The in-memory cache of the most recent entries, bounded in bytes.
//!
//! O_DIRECT bypasses the page cache, so readers of recent data (followers being sent
//! entries, consumers at the head) are served from here. Entries that are not yet durable
//! are never evicted: they may exist nowhere else readable, and their volume is bounded by
//! the log's `max_unflushed_bytes`.

use std::collections::VecDeque;

use raft::eraftpb::Entry;

/// Where an entry lives on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLocation {
    /// First index (name) of the segment holding the entry.
    pub segment_first_index: u64,
    /// Byte offset of the entry's header in that segment.
    pub offset: u64,
}

/// One cached entry and where it is stored.
#[derive(Clone, Debug)]
pub struct CachedEntry {
    /// The entry as Raft sees it.
    pub entry: Entry,
    /// Its place on disk.
    pub location: EntryLocation,
}

/// A contiguous run of the newest entries.
#[derive(Debug, Default)]
pub struct TailCache {
    entries: VecDeque<CachedEntry>,
    bytes: u64,
    limit_bytes: u64,
}

fn cost_bytes(entry: &Entry) -> u64 {
    (entry.data.len() + entry.context.len()) as u64 + 64
}

impl TailCache {
    /// An empty cache holding up to about `limit_bytes` of durable entries.
    pub fn new(limit_bytes: u64) -> Self {
        TailCache {
            entries: VecDeque::new(),
            bytes: 0,
            limit_bytes,
        }
    }

    /// Adds the next entry (its index follows the newest cached one, if any).
    pub fn push(&mut self, cached: CachedEntry) {
        if let Some(last) = self.entries.back() {
            assert_eq!(
                cached.entry.index,
                last.entry.index + 1,
                "cache must stay contiguous"
            );
        }
        self.bytes += cost_bytes(&cached.entry);
        self.entries.push_back(cached);
    }

    /// Evicts the oldest entries beyond the limit, never one above `durable_index`.
    pub fn evict(&mut self, durable_index: u64) {
        while self.bytes > self.limit_bytes {
            match self.entries.front() {
                Some(front) if front.entry.index <= durable_index => {
                    self.bytes -= cost_bytes(&front.entry);
                    self.entries.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Index of the oldest cached entry.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|cached| cached.entry.index)
    }

    /// The cached entry at `index`.
    pub fn get(&self, index: u64) -> Option<&CachedEntry> {
        let first = self.first_index()?;
        let position = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(position)
    }

    /// Drops every entry at or above `from_index`.
    pub fn truncate_from(&mut self, from_index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|last| last.entry.index >= from_index)
        {
            if let Some(removed) = self.entries.pop_back() {
                self.bytes -= cost_bytes(&removed.entry);
            }
        }
    }

    /// Drops every entry below `first_kept`.
    pub fn forget_before(&mut self, first_kept: u64) {
        while self
            .entries
            .front()
            .is_some_and(|first| first.entry.index < first_kept)
        {
            if let Some(removed) = self.entries.pop_front() {
                self.bytes -= cost_bytes(&removed.entry);
            }
        }
    }

    /// Bytes accounted to the cached entries.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}
