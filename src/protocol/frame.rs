//! Frames: a u32 little-endian length, then that many bytes of one flatbuffer message.
//!
//! `FrameDecoder` turns a byte stream read in arbitrary pieces into whole frames; its
//! buffer never holds more than one frame of the configured maximum plus what the last
//! read brought. A length above the maximum, or zero, is an error: the connection is
//! closed, since the stream cannot be resynchronised.

use crate::protocol::error::ProtocolError;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Splits a byte stream into frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    consumed: usize,
    max_frame_bytes: u32,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> Self {
        FrameDecoder {
            buffer: Vec::new(),
            consumed: 0,
            max_frame_bytes,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
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

    /// The next whole frame's payload, if one has arrived.
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
