//! Pieces of a peer frame too large for one frame (`schemas/peer_chunk.fbs`), to and from
//! bytes: a chunk names the whole frame's size, where its data starts, and the data.
//! Decoding verifies the chunk first (a peer's bytes are input like any other) and never
//! panics. Whether chunks follow each other and add up to a frame is
//! `transport::chunks`'s job; what the joined frame says is `peer_codec`'s.

use flatbuffers::FlatBufferBuilder;

use crate::protocol::byte_vector::byte_vector;
use crate::protocol::codec::verifier_options;
use crate::protocol::error::ProtocolError;
use crate::protocol::peer_chunk_wire as wire;

/// File identifier of chunks (peer frames are "KPR1").
pub const PEER_CHUNK_IDENTIFIER: &str = "KPC1";

/// Upper bound of a chunk's bytes besides its data: the root offset and file identifier,
/// the table (two 8-byte fields and an offset) and its vtable, the data vector's length,
/// alignment padding (checked against the encoder by a test).
pub const PEER_CHUNK_FIXED_BYTES: usize = 64;

/// A decoded chunk, borrowing its data from the frame it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameChunk<'a> {
    /// Bytes of the whole peer frame.
    pub total_bytes: u64,
    /// Where `data` starts in it.
    pub offset: u64,
    /// The frame's bytes from `offset`.
    pub data: &'a [u8],
}

/// Encodes one chunk: `data` is the piece of a frame of `total_bytes` bytes that starts
/// at `offset`.
pub fn encode_peer_chunk(total_bytes: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::with_capacity(PEER_CHUNK_FIXED_BYTES + data.len());
    let data = byte_vector(&mut builder, data);
    let chunk = wire::PeerChunk::create(
        &mut builder,
        &wire::PeerChunkArgs {
            total_bytes,
            offset,
            data: Some(data),
        },
    );
    builder.finish(chunk, Some(PEER_CHUNK_IDENTIFIER));
    builder.finished_data().to_vec()
}

/// Whether `bytes` carry the chunk file identifier (any length).
pub fn is_peer_chunk(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && flatbuffers::buffer_has_identifier(bytes, PEER_CHUNK_IDENTIFIER, false)
}

/// Verifies and decodes a chunk (data absent reads as empty).
pub fn decode_peer_chunk(bytes: &[u8]) -> Result<FrameChunk<'_>, ProtocolError> {
    if !is_peer_chunk(bytes) {
        return Err(ProtocolError::Malformed("not a peer chunk".to_string()));
    }
    let options = verifier_options(bytes.len());
    let chunk = wire::root_as_peer_chunk_with_opts(&options, bytes)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    Ok(FrameChunk {
        total_bytes: chunk.total_bytes(),
        offset: chunk.offset(),
        data: chunk.data().map(|v| v.bytes()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::peer_codec::{encode_peer_frame, is_peer_frame};
    use proptest::prelude::*;

    #[test]
    fn a_chunk_round_trips_and_is_told_apart_from_a_peer_frame() {
        let chunk = encode_peer_chunk(10_000, 4096, b"piece of a frame");
        assert_eq!(
            decode_peer_chunk(&chunk),
            Ok(FrameChunk {
                total_bytes: 10_000,
                offset: 4096,
                data: b"piece of a frame",
            })
        );
        assert!(is_peer_chunk(&chunk) && !is_peer_frame(&chunk));
        let frame = encode_peer_frame(1, 0, &[]);
        assert!(!is_peer_chunk(&frame));
        assert!(decode_peer_chunk(&frame).is_err());
        for length in 0..12 {
            assert!(decode_peer_chunk(&vec![0u8; length]).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// The fixed bytes bound what the encoder adds to any data.
        #[test]
        fn the_fixed_bytes_bound_the_encoding(
            data_bytes in 0usize..5000,
            total in any::<u64>(),
            offset in any::<u64>(),
        ) {
            let data = vec![7u8; data_bytes];
            let chunk = encode_peer_chunk(total, offset, &data);
            prop_assert!(chunk.len() <= PEER_CHUNK_FIXED_BYTES + data_bytes, "{}", chunk.len());
            prop_assert_eq!(decode_peer_chunk(&chunk).map(|c| c.data.len()), Ok(data_bytes));
        }

        /// Mutated chunks are refused or decoded, never a panic.
        #[test]
        fn mutated_chunks_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut chunk = encode_peer_chunk(1 << 20, 512, &[3u8; 300]);
            for (position, value) in flips {
                let at = position.index(chunk.len());
                chunk[at] = value;
            }
            let _ = decode_peer_chunk(&chunk);
        }
    }
}
