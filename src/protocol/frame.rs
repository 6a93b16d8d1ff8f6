//! Frames: a u32 little-endian length, then that many bytes of one flatbuffer message.
//!
//! `FrameDecoder` turns a byte stream read in arbitrary pieces into whole frames; its
//! buffer never holds more than one frame of the configured maximum plus what the last
//! read brought. A length above the maximum is an error the stream survives: the decoder
//! reports it once, then discards that frame's bytes as they arrive (never buffering
//! them) and goes on with the next frame, so the caller can answer and keep the
//! connection. A zero length is an error that ends the stream (no frame is empty, so the
//! stream is not what it should be).

use bytes::{Buf, Bytes, BytesMut};

use crate::protocol::error::ProtocolError;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Bytes read and not yet returned as frames (a frame handed out leaves it without
    /// a copy: `next_frame_shared`).
    buffer: BytesMut,
    max_frame_bytes: u32,
    /// Bytes of a refused oversized frame not yet arrived; discarded as they do. While
    /// non-zero nothing is buffered.
    skipping_bytes: u64,
    /// Room for a whole frame is taken as soon as its length is known (for streams from
    /// a trusted end: a length alone must not make a server allocate).
    reserve_whole_frames: bool,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> Self {
        FrameDecoder {
            buffer: BytesMut::new(),
            max_frame_bytes,
            skipping_bytes: 0,
            reserve_whole_frames: false,
        }
    }

    /// As `new`, taking room for each whole frame once its length has come (a client
    /// reading its server's answers): a megabyte answer is then read into one buffer,
    /// not copied at every doubling. A server's decoder grows only as bytes come.
    pub fn reserving_whole_frames(max_frame_bytes: u32) -> Self {
        FrameDecoder {
            reserve_whole_frames: true,
            ..FrameDecoder::new(max_frame_bytes)
        }
    }

    /// Changes the frame limit for the frames still to come (a connection that proved
    /// who it is may send larger ones than before).
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: u32) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// Adds bytes read from the stream (the part of an oversized frame being skipped is
    /// dropped at once).
    pub fn push(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        if self.skipping_bytes > 0 {
            assert_eq!(
                self.buffered_bytes(),
                0,
                "nothing is buffered while skipping"
            );
            let skipped = usize::try_from(self.skipping_bytes)
                .map_or(bytes.len(), |remaining| remaining.min(bytes.len()));
            self.skipping_bytes -= skipped as u64;
            bytes = &bytes[skipped..];
        }
        let length = frame_length(&self.buffer, bytes)
            .filter(|l| self.reserve_whole_frames && *l <= self.max_frame_bytes);
        if let Some(length) = length {
            let frame_bytes = LENGTH_PREFIX_BYTES + length as usize;
            self.buffer.reserve(
                frame_bytes
                    .saturating_sub(self.buffer.len())
                    .max(bytes.len()),
            );
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes the buffer holds room for.
    pub fn capacity(&self) -> usize {
        self.buffer.capacity()
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    fn pending_length(&self) -> Option<u32> {
        frame_length(&self.buffer, &[])
    }

    /// Bytes of a refused oversized frame still to be discarded.
    pub fn skipping_bytes(&self) -> u64 {
        self.skipping_bytes
    }

    /// The next whole frame's payload, if one has arrived. `FrameTooLarge` means that
    /// frame is being skipped and the stream goes on; `EmptyFrame` means it cannot.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        // A copy: the frame does not keep the buffer it was read into alive (a
        // server's small request must not pin a read buffer while it is answered).
        Ok(self.next_frame_shared()?.map(|frame| frame.to_vec()))
    }

    /// As `next_frame`, without copying: the frame shares the buffer it was read into
    /// (which stays allocated while any frame of it is held).
    pub fn next_frame_shared(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        let Some(length) = self.pending_length() else {
            return Ok(None);
        };
        if length == 0 {
            return Err(ProtocolError::EmptyFrame);
        }
        if length > self.max_frame_bytes {
            self.skip_frame(length);
            return Err(ProtocolError::FrameTooLarge {
                length: u64::from(length),
                limit: u64::from(self.max_frame_bytes),
            });
        }
        let end = LENGTH_PREFIX_BYTES + length as usize;
        if self.buffer.len() < end {
            return Ok(None);
        }
        let mut frame = self.buffer.split_to(end);
        frame.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(frame.freeze()))
    }

    /// Drops the oversized frame that starts at `consumed`: what of it is buffered now,
    /// and the rest as `push` brings it.
    fn skip_frame(&mut self, length: u32) {
        self.buffer.advance(LENGTH_PREFIX_BYTES);
        let buffered_part = self.buffered_bytes().min(length as usize);
        self.buffer.advance(buffered_part);
        self.skipping_bytes = u64::from(length) - buffered_part as u64;
    }
}

/// The length prefix of the frame that `buffered` followed by `more` starts with, once
/// they hold all of it.
fn frame_length(buffered: &[u8], more: &[u8]) -> Option<u32> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let from_buffered = buffered.len().min(LENGTH_PREFIX_BYTES);
    prefix[..from_buffered].copy_from_slice(&buffered[..from_buffered]);
    let from_more = LENGTH_PREFIX_BYTES - from_buffered;
    prefix[from_buffered..].copy_from_slice(more.get(..from_more)?);
    Some(u32::from_le_bytes(prefix))
}

/// Prefixes `payload` with its length.
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut frame = Vec::with_capacity(LENGTH_PREFIX_BYTES + payload.len());
    append_frame(&mut frame, payload)?;
    Ok(frame)
}

/// Appends `payload` as a frame to `out` (frames written back to back leave in one write).
pub fn append_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), ProtocolError> {
    let length = u32::try_from(payload.len()).map_err(|_| ProtocolError::FrameTooLarge {
        length: payload.len() as u64,
        limit: u64::from(u32::MAX),
    })?;
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}
