//! The on-disk entry format: a fixed 32-byte header, the payload, zero padding to 8 bytes.
//!
//! ```text
//! offset size field
//!      0    4 crc32c          over bytes 4..32 of the header, then the payload
//!      4    4 payload_length  context_length + data length
//!      8    8 term
//!     16    8 index
//!     24    1 entry_type      0 normal, 1 conf change, 2 conf change v2 (raft-rs numbering)
//!     25    1 flags           0 (reserved)
//!     26    2 context_length  leading bytes of the payload that are the raft entry context
//!     28    4 reserved        0
//!     32    n payload         context then data
//!   32+n    p zeros           up to the next multiple of 8
//! ```
//!
//! All integers are little-endian. This module is pure: it encodes into and decodes from
//! byte slices and never does I/O.

use crate::constants::ENTRY_ALIGNMENT_BYTES;

/// Size of the fixed entry header.
pub const HEADER_SIZE_BYTES: usize = 32;
const _: () = assert!((HEADER_SIZE_BYTES as u64).is_multiple_of(ENTRY_ALIGNMENT_BYTES));

/// What kind of Raft entry this is (numbered as raft-rs's `EntryType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryType {
    /// An ordinary entry (a message batch, or the leader's empty no-op).
    Normal = 0,
    /// A `ConfChange` (single membership change).
    ConfChange = 1,
    /// A `ConfChangeV2` (joint consensus).
    ConfChangeV2 = 2,
}

impl EntryType {
    /// Decodes a stored type byte; `None` for an unknown value.
    pub fn from_u8(value: u8) -> Option<EntryType> {
        match value {
            0 => Some(EntryType::Normal),
            1 => Some(EntryType::ConfChange),
            2 => Some(EntryType::ConfChangeV2),
            _ => None,
        }
    }
}

/// The decoded fixed header of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    /// crc32c over header bytes 4..32 and the payload.
    pub crc32c: u32,
    /// Length of the payload (context and data).
    pub payload_length: u32,
    /// Raft term.
    pub term: u64,
    /// Raft index.
    pub index: u64,
    /// Raw type byte.
    pub entry_type: u8,
    /// Length of the context prefix of the payload.
    pub context_length: u16,
}

/// Why bytes at some position are not a valid entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryDefect {
    /// The bytes end before the header or the payload does.
    Truncated,
    /// The header is all zeros: nothing was ever written here.
    Zeroed,
    /// A header field is impossible (length above the limit, unknown type, reserved bits).
    BadHeader,
    /// The checksum does not match.
    BadChecksum,
    /// Valid bytes, but not the index the log expects next.
    UnexpectedIndex,
}

/// Bytes taken on disk by an entry with this payload length (header, payload, padding).
pub fn stored_size_bytes(payload_length: u32) -> u64 {
    let raw = HEADER_SIZE_BYTES as u64 + u64::from(payload_length);
    raw.div_ceil(ENTRY_ALIGNMENT_BYTES) * ENTRY_ALIGNMENT_BYTES
}

/// Encodes the header for an entry and returns it with its checksum filled in.
pub fn encode_header(
    term: u64,
    index: u64,
    entry_type: EntryType,
    context: &[u8],
    data: &[u8],
) -> [u8; HEADER_SIZE_BYTES] {
    assert!(
        context.len() <= usize::from(u16::MAX),
        "context length checked by the caller"
    );
    assert!(
        context.len() + data.len() <= u32::MAX as usize,
        "payload checked by the caller"
    );
    let context_length = context.len() as u16;
    let payload_length = (context.len() + data.len()) as u32;
    let mut header = [0u8; HEADER_SIZE_BYTES];
    header[4..8].copy_from_slice(&payload_length.to_le_bytes());
    header[8..16].copy_from_slice(&term.to_le_bytes());
    header[16..24].copy_from_slice(&index.to_le_bytes());
    header[24] = entry_type as u8;
    header[26..28].copy_from_slice(&context_length.to_le_bytes());
    let mut crc = crc32c::crc32c(&header[4..]);
    crc = crc32c::crc32c_append(crc, context);
    crc = crc32c::crc32c_append(crc, data);
    header[0..4].copy_from_slice(&crc.to_le_bytes());
    header
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Decodes and checks the header at the start of `bytes` without looking at the payload.
pub fn decode_header(bytes: &[u8], max_payload_bytes: u32) -> Result<EntryHeader, EntryDefect> {
    let available = &bytes[..bytes.len().min(HEADER_SIZE_BYTES)];
    if !available.is_empty() && available.iter().all(|&b| b == 0) {
        return Err(EntryDefect::Zeroed);
    }
    if bytes.len() < HEADER_SIZE_BYTES {
        return Err(EntryDefect::Truncated);
    }
    let raw = &bytes[..HEADER_SIZE_BYTES];
    let header = EntryHeader {
        crc32c: read_u32(raw, 0),
        payload_length: read_u32(raw, 4),
        term: read_u64(raw, 8),
        index: read_u64(raw, 16),
        entry_type: raw[24],
        context_length: u16::from_le_bytes([raw[26], raw[27]]),
    };
    let reserved_clear = raw[25] == 0 && read_u32(raw, 28) == 0;
    if !reserved_clear
        || header.payload_length > max_payload_bytes
        || u32::from(header.context_length) > header.payload_length
        || EntryType::from_u8(header.entry_type).is_none()
        || header.index == 0
    {
        return Err(EntryDefect::BadHeader);
    }
    Ok(header)
}

/// A view of one valid entry inside a byte slice.
#[derive(Clone, Copy, Debug)]
pub struct EntryView<'a> {
    /// The checked header.
    pub header: EntryHeader,
    /// The payload's context prefix.
    pub context: &'a [u8],
    /// The payload's data.
    pub data: &'a [u8],
    /// Bytes the entry takes on disk, padding included.
    pub stored_size_bytes: u64,
}

impl EntryView<'_> {
    /// The entry's type (checked valid by `decode_header`).
    pub fn entry_type(&self) -> EntryType {
        EntryType::from_u8(self.header.entry_type).unwrap_or(EntryType::Normal)
    }
}

/// Decodes and fully checks (header and checksum) the entry at the start of `bytes`.
pub fn decode_entry(bytes: &[u8], max_payload_bytes: u32) -> Result<EntryView<'_>, EntryDefect> {
    let header = decode_header(bytes, max_payload_bytes)?;
    let payload_end = HEADER_SIZE_BYTES + header.payload_length as usize;
    if bytes.len() < payload_end {
        return Err(EntryDefect::Truncated);
    }
    let mut crc = crc32c::crc32c(&bytes[4..HEADER_SIZE_BYTES]);
    crc = crc32c::crc32c_append(crc, &bytes[HEADER_SIZE_BYTES..payload_end]);
    if crc != header.crc32c {
        return Err(EntryDefect::BadChecksum);
    }
    let context_end = HEADER_SIZE_BYTES + header.context_length as usize;
    Ok(EntryView {
        header,
        context: &bytes[HEADER_SIZE_BYTES..context_end],
        data: &bytes[context_end..payload_end],
        stored_size_bytes: stored_size_bytes(header.payload_length),
    })
}

/// Encodes a whole entry (header, payload, padding) into a new vector. Used by tests and
/// tools; the append path writes the parts straight into its aligned buffers.
pub fn encode_entry(
    term: u64,
    index: u64,
    entry_type: EntryType,
    context: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let header = encode_header(term, index, entry_type, context, data);
    let payload_length = (context.len() + data.len()) as u32;
    let mut out = Vec::with_capacity(stored_size_bytes(payload_length) as usize);
    out.extend_from_slice(&header);
    out.extend_from_slice(context);
    out.extend_from_slice(data);
    out.resize(stored_size_bytes(payload_length) as usize, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = 1 << 20;

    #[test]
    fn round_trip_keeps_every_field() {
        let bytes = encode_entry(7, 42, EntryType::ConfChange, b"ctx", b"hello");
        assert_eq!(bytes.len() as u64, stored_size_bytes(8));
        assert_eq!(bytes.len() % 8, 0);
        let view = decode_entry(&bytes, MAX).unwrap();
        assert_eq!(view.header.term, 7);
        assert_eq!(view.header.index, 42);
        assert_eq!(view.entry_type(), EntryType::ConfChange);
        assert_eq!(view.context, b"ctx");
        assert_eq!(view.data, b"hello");
    }

    #[test]
    fn zeros_are_recognised_as_unwritten() {
        assert_eq!(
            decode_entry(&[0u8; 64], MAX).unwrap_err(),
            EntryDefect::Zeroed
        );
    }

    #[test]
    fn oversized_length_is_a_bad_header() {
        let bytes = encode_entry(1, 1, EntryType::Normal, b"", &[5u8; 100]);
        assert_eq!(
            decode_entry(&bytes, 99).unwrap_err(),
            EntryDefect::BadHeader
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encode_entry(3, 9, EntryType::Normal, b"c", b"payload bytes");
        let used = HEADER_SIZE_BYTES + 14;
        for bit in 0..used * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_entry(&damaged, MAX).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode_entry(3, 9, EntryType::Normal, b"", b"0123456789abcdef");
        for cut in 0..HEADER_SIZE_BYTES + 16 {
            assert!(
                decode_entry(&bytes[..cut], MAX).is_err(),
                "cut at {cut} accepted"
            );
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_entry(&bytes, MAX);
        }

        #[test]
        fn encode_decode_round_trip(term in any::<u64>(), index in 1u64.., kind in 0u8..3,
                                    context in proptest::collection::vec(any::<u8>(), 0..40),
                                    data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let kind = EntryType::from_u8(kind).unwrap();
            let bytes = encode_entry(term, index, kind, &context, &data);
            let view = decode_entry(&bytes, MAX).unwrap();
            prop_assert_eq!(view.header.term, term);
            prop_assert_eq!(view.header.index, index);
            prop_assert_eq!(view.context, &context[..]);
            prop_assert_eq!(view.data, &data[..]);
        }
    }
}
