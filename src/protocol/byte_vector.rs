//! Byte fields (`[ubyte]`) written into a flatbuffer with one copy of the slice.
//!
//! `FlatBufferBuilder::create_vector` copies a vector one element at a time: for the
//! payloads of fetch answers, produce requests and replicated entries that loop was the
//! largest cost of building the message. This module owns only that layout trick; it
//! never changes what a reader sees.

use flatbuffers::{FlatBufferBuilder, Vector, WIPOffset};

/// Writes `bytes` as a `[ubyte]` vector in one copy. `create_byte_string` lays out the
/// length (u32, aligned), the bytes, then one zero byte: the same vector as
/// `create_vector` writes, followed by a byte of padding no reader looks at.
pub fn byte_vector<'fbb>(
    builder: &mut FlatBufferBuilder<'fbb>,
    bytes: &[u8],
) -> WIPOffset<Vector<'fbb, u8>> {
    WIPOffset::new(builder.create_byte_string(bytes).value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::generated::keel::protocol as wire;

    /// A fetched batch built with `byte_vector` reads back as the same bytes, for
    /// lengths around every alignment, and passes the verifier.
    #[test]
    fn a_byte_vector_reads_back_as_the_bytes_written() {
        for length in [0usize, 1, 2, 3, 4, 5, 7, 8, 9, 1023, 1024, 1025, 65_537] {
            let bytes: Vec<u8> = (0..length).map(|i| (i * 7 + 3) as u8).collect();
            let mut builder = FlatBufferBuilder::new();
            // Something before it, so the vector does not start at an aligned end.
            let topic = builder.create_string("t");
            let batch = byte_vector(&mut builder, &bytes);
            let fetched = wire::FetchedBatch::create(
                &mut builder,
                &wire::FetchedBatchArgs {
                    base_offset: 42,
                    crc32c: 7,
                    batch: Some(batch),
                },
            );
            let _ = topic;
            builder.finish(fetched, None);
            let read = flatbuffers::root::<wire::FetchedBatch>(builder.finished_data())
                .expect("a verified table");
            assert_eq!(
                read.batch().map(|v| v.bytes()),
                Some(&bytes[..]),
                "length {length}"
            );
            assert_eq!(read.base_offset(), 42);
        }
    }
}
