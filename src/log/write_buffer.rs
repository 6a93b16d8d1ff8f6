//! The append path's aligned buffers: bytes appended but not yet handed to a flush.
//!
//! Appends serialize entries straight into aligned 1 MiB chunks, each tied to a segment and
//! a block-aligned file offset. A flush takes every chunk and writes each rounded up to
//! whole blocks; the block holding the end of the data is partly filled, so a copy of it
//! starts the next chunk and the next flush writes it again with more data in it. Small
//! entries thus cost a 4 KiB write, not a padded block each, and no data is copied twice
//! except that one partial block.

use std::collections::VecDeque;

use glommio::io::DmaBuffer;

use crate::constants::{
    BLOCK_SIZE_BYTES, FIRST_WRITE_CHUNK_BYTES, MAX_POOLED_WRITE_CHUNKS, WRITE_CHUNK_BYTES,
};
use crate::log::io::{align_down, align_up};

/// A run of bytes bound for one place in one segment.
pub struct PendingChunk {
    /// Segment (by first index) the bytes go to.
    pub segment_first_index: u64,
    /// Block-aligned file offset of the chunk's first byte.
    pub file_offset: u64,
    buffer: DmaBuffer,
    filled: usize,
}

impl PendingChunk {
    /// A chunk of `capacity` bytes. Its memory is not cleared: bytes are written in order
    /// and the flush zeros the rest of the last block before writing it.
    fn new(segment_first_index: u64, file_offset: u64, buffer: DmaBuffer) -> Self {
        assert_eq!(file_offset % BLOCK_SIZE_BYTES, 0);
        assert_eq!(buffer.len() as u64 % BLOCK_SIZE_BYTES, 0);
        PendingChunk {
            segment_first_index,
            file_offset,
            buffer,
            filled: 0,
        }
    }

    fn end_offset(&self) -> u64 {
        self.file_offset + self.filled as u64
    }

    fn is_full(&self) -> bool {
        self.filled == self.buffer.len()
    }
}

/// One write a flush issues: an aligned buffer and where it goes.
pub struct FlushWrite {
    /// Segment (by first index).
    pub segment_first_index: u64,
    /// Block-aligned file offset.
    pub file_offset: u64,
    /// Bytes, a whole number of blocks.
    pub buffer: WriteBytes,
}

impl FlushWrite {
    /// Bytes this write carries (whole blocks).
    pub fn length_bytes(&self) -> u64 {
        match &self.buffer {
            WriteBytes::Pooled(buffer) => buffer.len() as u64,
            WriteBytes::Trimmed(buffer) => buffer.len() as u64,
        }
    }
}

/// The bytes of one write: a full pooled chunk (handed back after the write) or a
/// trimmed one (dropped after the write).
pub enum WriteBytes {
    /// A full chunk of `WRITE_CHUNK_BYTES`; return it with `WriteBuffer::recycle`.
    Pooled(std::rc::Rc<DmaBuffer>),
    /// A partly filled chunk trimmed to whole blocks.
    Trimmed(DmaBuffer),
}

/// The pending chunks, oldest first, and a pool of large chunk buffers to reuse (fresh
/// large allocations cost a page fault per 4 KiB on first touch).
#[derive(Default)]
pub struct WriteBuffer {
    chunks: VecDeque<PendingChunk>,
    new_bytes: u64,
    pool: Vec<DmaBuffer>,
}

impl WriteBuffer {
    fn allocate(&mut self, capacity: usize) -> DmaBuffer {
        if capacity == WRITE_CHUNK_BYTES {
            if let Some(buffer) = self.pool.pop() {
                return buffer;
            }
        }
        glommio::allocate_dma_buffer_global(capacity)
    }

    /// Takes back a large chunk buffer after its write completed (kept up to a bound).
    pub fn recycle(&mut self, buffer: DmaBuffer) {
        if buffer.len() == WRITE_CHUNK_BYTES && self.pool.len() < MAX_POOLED_WRITE_CHUNKS {
            self.pool.push(buffer);
        }
    }

    /// Bytes appended since the last flush took the buffer.
    pub fn unflushed_bytes(&self) -> u64 {
        self.new_bytes
    }

    /// Starts the chunk of `segment_first_index` at a block boundary with the bytes of a
    /// partly filled block already on disk (so the next write of that block keeps them).
    pub fn start_segment_at(&mut self, segment_first_index: u64, file_offset: u64, prefix: &[u8]) {
        assert!(prefix.len() < BLOCK_SIZE_BYTES as usize);
        let buffer = self.allocate(FIRST_WRITE_CHUNK_BYTES);
        let mut chunk = PendingChunk::new(segment_first_index, file_offset, buffer);
        chunk.buffer.as_bytes_mut()[..prefix.len()].copy_from_slice(prefix);
        chunk.filled = prefix.len();
        self.chunks.push_back(chunk);
    }

    /// Appends `bytes` at `offset` of a segment; `offset` must be where that segment's data
    /// ends (or 0 for a new segment).
    pub fn write(&mut self, segment_first_index: u64, offset: u64, mut bytes: &[u8]) {
        self.new_bytes += bytes.len() as u64;
        let mut offset = offset;
        while !bytes.is_empty() {
            let needs_chunk = match self.chunks.back() {
                Some(last) => last.segment_first_index != segment_first_index || last.is_full(),
                None => true,
            };
            if needs_chunk {
                // The first chunk after a flush or of a new segment is small (most flushes
                // of a latency-bound load carry little); chunks after it are large.
                let (start, capacity) = match self.chunks.back() {
                    Some(last) if last.segment_first_index == segment_first_index => {
                        (last.end_offset(), WRITE_CHUNK_BYTES)
                    }
                    _ => (offset, FIRST_WRITE_CHUNK_BYTES),
                };
                assert_eq!(start, offset, "append must continue the segment's data");
                let buffer = self.allocate(capacity);
                self.chunks
                    .push_back(PendingChunk::new(segment_first_index, start, buffer));
            }
            let Some(chunk) = self.chunks.back_mut() else {
                unreachable!()
            };
            assert_eq!(
                chunk.end_offset(),
                offset,
                "append must continue the segment's data"
            );
            let room = chunk.buffer.len() - chunk.filled;
            let take = room.min(bytes.len());
            chunk.buffer.as_bytes_mut()[chunk.filled..chunk.filled + take]
                .copy_from_slice(&bytes[..take]);
            chunk.filled += take;
            offset += take as u64;
            bytes = &bytes[take..];
        }
    }

    /// Takes everything for a flush. The partly filled last block of the newest chunk is
    /// copied into a fresh chunk so appends can go on while the flush runs.
    pub fn take_for_flush(&mut self) -> Vec<FlushWrite> {
        self.new_bytes = 0;
        let mut writes = Vec::with_capacity(self.chunks.len());
        let newest = self.chunks.len();
        for (position, mut chunk) in std::mem::take(&mut self.chunks).into_iter().enumerate() {
            let is_newest = position + 1 == newest;
            if is_newest {
                let block_start = align_down(chunk.filled as u64) as usize;
                let prefix = chunk.buffer.as_bytes()[block_start..chunk.filled].to_vec();
                self.start_segment_at(
                    chunk.segment_first_index,
                    chunk.file_offset + block_start as u64,
                    &prefix,
                );
            }
            if chunk.filled == 0 {
                continue;
            }
            let bytes = if chunk.is_full() && chunk.buffer.len() == WRITE_CHUNK_BYTES {
                WriteBytes::Pooled(std::rc::Rc::new(chunk.buffer))
            } else {
                let length = align_up(chunk.filled as u64) as usize;
                chunk.buffer.as_bytes_mut()[chunk.filled..length].fill(0);
                chunk.buffer.trim_to_size(length);
                WriteBytes::Trimmed(chunk.buffer)
            };
            writes.push(FlushWrite {
                segment_first_index: chunk.segment_first_index,
                file_offset: chunk.file_offset,
                buffer: bytes,
            });
        }
        writes
    }

    /// Drops everything at or after `offset` of `segment_first_index`, and every chunk of a
    /// later segment. Returns whether a chunk still reaches `offset` (so appends can go on).
    pub fn truncate(&mut self, segment_first_index: u64, offset: u64) -> bool {
        self.chunks.retain(|chunk| {
            chunk.segment_first_index < segment_first_index
                || (chunk.segment_first_index == segment_first_index && chunk.file_offset <= offset)
        });
        match self.chunks.back_mut() {
            Some(chunk) if chunk.segment_first_index == segment_first_index => {
                let keep = (offset - chunk.file_offset) as usize;
                if keep <= chunk.filled {
                    chunk.filled = keep;
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    /// Drops every chunk of `segment_first_index` and later segments.
    pub fn drop_from_segment(&mut self, segment_first_index: u64) {
        self.chunks
            .retain(|chunk| chunk.segment_first_index < segment_first_index);
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.new_bytes = 0;
    }
}
