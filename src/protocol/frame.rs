//! Frames: a u32 little-endian length, then that many bytes of one flatbuffer message.
//!
//! `FrameDecoder` turns a byte stream read in arbitrary pieces into whole frames; its
//! buffer never holds more than one frame of the configured maximum plus what the last
//! read brought. A length above the maximum is an error the stream survives: the decoder
//! reports it once, then discards that frame's bytes as they arrive (never buffering
//! them) and goes on with the next frame, so the caller can answer and keep the
//! connection. A zero length is an error that ends the stream (no frame is empty, so the
//! stream is not what it should be).

use crate::protocol::error::ProtocolError;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    consumed: usize,
    max_frame_bytes: u32,
    /// Bytes of a refused oversized frame not yet arrived; discarded as they do. While
    /// non-zero nothing is buffered.
    skipping_bytes: u64,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> Self {
        FrameDecoder {
            buffer: Vec::new(),
            consumed: 0,
            max_frame_bytes,
            skipping_bytes: 0,
        }
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
        if self.consumed > 0 && self.consumed == self.buffer.len() {
            self.buffer.clear();
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// Bytes of a refused oversized frame still to be discarded.
    pub fn skipping_bytes(&self) -> u64 {
        self.skipping_bytes
    }

    /// The next whole frame's payload, if one has arrived. `FrameTooLarge` means that
    /// frame is being skipped and the stream goes on; `EmptyFrame` means it cannot.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        let pending = &self.buffer[self.consumed..];
        let Some(prefix) = pending.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let length = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
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
        let Some(payload) = pending.get(LENGTH_PREFIX_BYTES..end) else {
            return Ok(None);
        };
        let frame = payload.to_vec();
        self.consumed += end;
        if self.consumed > self.buffer.len() / 2 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        Ok(Some(frame))
    }

    /// Drops the oversized frame that starts at `consumed`: what of it is buffered now,
    /// and the rest as `push` brings it.
    fn skip_frame(&mut self, length: u32) {
        self.consumed += LENGTH_PREFIX_BYTES;
        let buffered_part = self.buffered_bytes().min(length as usize);
        self.consumed += buffered_part;
        self.skipping_bytes = u64::from(length) - buffered_part as u64;
        self.buffer.drain(..self.consumed);
        self.consumed = 0;
    }
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
