//! Reads a log entry's little-endian fields off its bytes, failing (never panicking) at
//! their end: the decoders of the controller's entries (`broker::replica_moves`,
//! `broker::access`) share it and add their own compound fields.
//!
//! Owns nothing but the position; never decides what a field means.

use crate::broker::log_entry::EntryDecodeError;

/// A position in an entry's bytes.
pub(crate) struct Cursor<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Cursor<'a> {
    /// Reading `bytes` from `at`.
    pub(crate) fn new(bytes: &'a [u8], at: usize) -> Cursor<'a> {
        Cursor { bytes, at }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], EntryDecodeError> {
        let raw = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or(EntryDecodeError::Truncated)?;
        self.at += n;
        Ok(raw)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], EntryDecodeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, EntryDecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, EntryDecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, EntryDecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, EntryDecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}
