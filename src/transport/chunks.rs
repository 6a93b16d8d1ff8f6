//! Chunked peer frames: a peer frame whose bytes exceed the receiver's frame limit travels
//! as consecutive chunk frames (`schemas/peer_chunk.fbs`), each within the limit, and the
//! receiving connection joins them back into the frame's bytes, which are then decoded and
//! checked as any peer frame (`ingress`).
//!
//! ```text
//! sender (one queue slot)            TCP, one connection         receiver (ChunkAssembler)
//! peer frame, 90 KB, limit 32 KiB ─▶ chunk{total 90000, offset 0,     data 32704 B} ─▶ hold
//!                                    chunk{total 90000, offset 32704, data 32704 B} ─▶ hold
//!                                    chunk{total 90000, offset 65408, data 24592 B} ─▶ frame
//! ```
//!
//! Only a message that cannot be cut outgrows a frame (`frame_split` cuts appends): a Raft
//! snapshot of a large applied state. Chunks of one frame are consecutive on a connection,
//! so a reader keeps one partial frame; a chunk that does not start where the previous one
//! ended (a gap or an overlap), a total that changes, data past the total, an empty chunk,
//! a total above `MAX_CHUNKED_PEER_FRAME_BYTES` or a peer frame between two chunks is a
//! protocol error (`ChunkError`): the reader closes the connection, and the partial frame
//! goes with it. The partial buffer grows only as chunks arrive, so a lying total costs
//! nothing until its bytes come.
//!
//! Pure (no I/O, no glommio): the simulator cuts and joins its large frames with it too.
//! Never panics on input; the assertion on the chunks' sizes guards this module's own
//! arithmetic.

use crate::protocol::peer_chunk_codec::{
    decode_peer_chunk, encode_peer_chunk, is_peer_chunk, PEER_CHUNK_FIXED_BYTES,
};
use crate::protocol::ProtocolError;

/// Smallest frame limit a frame can be cut for: a chunk's own bytes and one byte of data.
pub const MIN_CHUNKED_FRAME_LIMIT_BYTES: usize = PEER_CHUNK_FIXED_BYTES + 1;

/// Why a frame cannot be cut, or why a chunk sequence is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The frame (or the one a chunk announces) is larger than chunked frames may be.
    #[error("a chunked frame of {total_bytes} bytes exceeds the bound of {bound_bytes} bytes")]
    OverBound {
        /// The frame's size.
        total_bytes: u64,
        /// The bound (`MAX_CHUNKED_PEER_FRAME_BYTES`).
        bound_bytes: u64,
    },
    /// A frame limit too small to hold a chunk with any data.
    #[error("a frame limit of {max_frame_bytes} bytes cannot hold a chunk (at least {minimum})")]
    LimitTooSmall {
        /// The limit.
        max_frame_bytes: usize,
        /// `MIN_CHUNKED_FRAME_LIMIT_BYTES`.
        minimum: usize,
    },
    /// The chunk is not a valid chunk.
    #[error("malformed chunk: {0}")]
    Malformed(ProtocolError),
    /// A chunk announcing a frame of no bytes.
    #[error("a chunk announces an empty frame")]
    EmptyFrame,
    /// A chunk without data.
    #[error("an empty chunk at offset {offset}")]
    EmptyChunk {
        /// Its offset.
        offset: u64,
    },
    /// A chunk starting after the end of the bytes received.
    #[error("a chunk at offset {offset} leaves a gap after {expected_offset} bytes")]
    Gap {
        /// Bytes of the frame received so far.
        expected_offset: u64,
        /// The chunk's offset.
        offset: u64,
    },
    /// A chunk starting before the end of the bytes received.
    #[error("a chunk at offset {offset} overlaps the {expected_offset} bytes received")]
    Overlap {
        /// Bytes of the frame received so far.
        expected_offset: u64,
        /// The chunk's offset.
        offset: u64,
    },
    /// A chunk naming another total than the chunks before it.
    #[error("a chunk announces {announced_bytes} bytes in a frame of {total_bytes}")]
    TotalChanged {
        /// The total of the frame being joined.
        total_bytes: u64,
        /// The chunk's total.
        announced_bytes: u64,
    },
    /// A chunk whose data runs past the frame's end.
    #[error(
        "a chunk of {data_bytes} bytes at offset {offset} runs past the frame's {total_bytes}"
    )]
    PastTotal {
        /// Its offset.
        offset: u64,
        /// Its data's size.
        data_bytes: u64,
        /// The frame's size.
        total_bytes: u64,
    },
    /// A whole frame arrived before the chunks of the frame being joined were complete.
    #[error("a frame arrived after {received_bytes} of a chunked frame's {total_bytes} bytes")]
    FrameInsideChunks {
        /// Bytes of the chunked frame received.
        received_bytes: u64,
        /// Its size.
        total_bytes: u64,
    },
}

/// The chunks of one frame, encoded, in order, built one at a time (the frame is never
/// copied whole).
#[derive(Debug)]
pub struct FrameChunks<'a> {
    frame: &'a [u8],
    next_offset: usize,
    data_per_chunk: usize,
    max_frame_bytes: usize,
}

impl Iterator for FrameChunks<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.next_offset >= self.frame.len() {
            return None;
        }
        let start = self.next_offset;
        let end = (start + self.data_per_chunk).min(self.frame.len());
        self.next_offset = end;
        let chunk = encode_peer_chunk(
            self.frame.len() as u64,
            start as u64,
            &self.frame[start..end],
        );
        assert!(
            chunk.len() <= self.max_frame_bytes,
            "a chunk of {} bytes over the frame limit {}",
            chunk.len(),
            self.max_frame_bytes
        );
        Some(chunk)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = self
            .frame
            .len()
            .saturating_sub(self.next_offset)
            .div_ceil(self.data_per_chunk);
        (remaining, Some(remaining))
    }
}

/// Cuts `frame` (a peer frame's bytes, at least one) into chunks of at most
/// `max_frame_bytes` each; refused when it is larger than `bound_bytes` or the limit
/// holds no chunk.
pub fn chunk_frame(
    frame: &[u8],
    max_frame_bytes: usize,
    bound_bytes: u64,
) -> Result<FrameChunks<'_>, ChunkError> {
    if frame.is_empty() {
        return Err(ChunkError::EmptyFrame);
    }
    if frame.len() as u64 > bound_bytes {
        return Err(ChunkError::OverBound {
            total_bytes: frame.len() as u64,
            bound_bytes,
        });
    }
    if max_frame_bytes < MIN_CHUNKED_FRAME_LIMIT_BYTES {
        return Err(ChunkError::LimitTooSmall {
            max_frame_bytes,
            minimum: MIN_CHUNKED_FRAME_LIMIT_BYTES,
        });
    }
    Ok(FrameChunks {
        frame,
        next_offset: 0,
        data_per_chunk: max_frame_bytes - PEER_CHUNK_FIXED_BYTES,
        max_frame_bytes,
    })
}

/// A frame being joined from its chunks.
#[derive(Debug)]
struct Partial {
    total_bytes: u64,
    bytes: Vec<u8>,
}

/// Joins the chunked frames of one connection: fed every frame the connection reads, it
/// passes peer frames through and gives a chunked frame back once its last chunk came.
#[derive(Debug)]
pub struct ChunkAssembler {
    bound_bytes: u64,
    partial: Option<Partial>,
}

impl ChunkAssembler {
    /// An assembler refusing chunked frames over `bound_bytes`.
    pub fn new(bound_bytes: u64) -> ChunkAssembler {
        ChunkAssembler {
            bound_bytes,
            partial: None,
        }
    }

    /// Bytes of a chunked frame received so far (0 when none is being joined).
    pub fn received_bytes(&self) -> u64 {
        self.partial.as_ref().map_or(0, |p| p.bytes.len() as u64)
    }

    /// Takes the connection's next frame: `Some(frame)` for a whole peer frame (as read,
    /// or joined from its chunks), `None` while a chunked frame is incomplete. After an
    /// error the partial frame is dropped (the caller closes the connection).
    pub fn accept(&mut self, frame: Vec<u8>) -> Result<Option<Vec<u8>>, ChunkError> {
        if !is_peer_chunk(&frame) {
            return match self.partial.take() {
                Some(partial) => Err(ChunkError::FrameInsideChunks {
                    received_bytes: partial.bytes.len() as u64,
                    total_bytes: partial.total_bytes,
                }),
                None => Ok(Some(frame)),
            };
        }
        let result = self.add_chunk(&frame);
        if result.is_err() {
            self.partial = None;
        }
        result
    }

    fn add_chunk(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, ChunkError> {
        let chunk = decode_peer_chunk(frame).map_err(ChunkError::Malformed)?;
        let total_bytes = chunk.total_bytes;
        self.check_total(total_bytes)?;
        let expected_offset = self.received_bytes();
        if chunk.offset > expected_offset {
            return Err(ChunkError::Gap {
                expected_offset,
                offset: chunk.offset,
            });
        }
        if chunk.offset < expected_offset {
            return Err(ChunkError::Overlap {
                expected_offset,
                offset: chunk.offset,
            });
        }
        let data_bytes = chunk.data.len() as u64;
        if data_bytes == 0 {
            return Err(ChunkError::EmptyChunk {
                offset: chunk.offset,
            });
        }
        let end = chunk.offset.saturating_add(data_bytes);
        if end > total_bytes {
            return Err(ChunkError::PastTotal {
                offset: chunk.offset,
                data_bytes,
                total_bytes,
            });
        }
        let partial = self.partial.get_or_insert_with(|| Partial {
            total_bytes,
            bytes: Vec::new(),
        });
        grow_within(&mut partial.bytes, chunk.data.len(), total_bytes);
        partial.bytes.extend_from_slice(chunk.data);
        if end < total_bytes {
            return Ok(None);
        }
        Ok(self.partial.take().map(|partial| partial.bytes))
    }

    /// The total a chunk announces: within the bound, not empty, and the same as the
    /// chunks' before it.
    fn check_total(&self, total_bytes: u64) -> Result<(), ChunkError> {
        if let Some(partial) = &self.partial {
            if total_bytes != partial.total_bytes {
                return Err(ChunkError::TotalChanged {
                    total_bytes: partial.total_bytes,
                    announced_bytes: total_bytes,
                });
            }
        }
        if total_bytes == 0 {
            return Err(ChunkError::EmptyFrame);
        }
        if total_bytes > self.bound_bytes {
            return Err(ChunkError::OverBound {
                total_bytes,
                bound_bytes: self.bound_bytes,
            });
        }
        Ok(())
    }
}

/// Makes room for `more` bytes in `bytes`, doubling its capacity but never beyond
/// `total_bytes` (the frame's announced size, already checked against the bound).
fn grow_within(bytes: &mut Vec<u8>, more: usize, total_bytes: u64) {
    let needed = bytes.len() + more;
    if needed <= bytes.capacity() {
        return;
    }
    let total = usize::try_from(total_bytes).unwrap_or(usize::MAX);
    let target = needed.max(bytes.capacity().saturating_mul(2).min(total));
    bytes.reserve_exact(target - bytes.len());
}

/// Bytes of chunked frames being joined across all the peer connections of one shard,
/// against a bound (`MAX_JOINING_PEER_BYTES_PER_SHARD`): each connection may join one
/// chunked frame, and this keeps many connections together from holding more.
#[derive(Debug)]
pub struct JoiningBudget {
    held: std::cell::Cell<u64>,
    bound_bytes: u64,
}

/// A connection's partial frame would take the shard past its joining budget.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("chunked frames being joined would hold {held_bytes} bytes, over the shard's bound of {bound_bytes}")]
pub struct OverJoiningBudget {
    /// What the shard would hold.
    pub held_bytes: u64,
    /// The bound.
    pub bound_bytes: u64,
}

impl JoiningBudget {
    /// A budget of `bound_bytes`.
    pub fn new(bound_bytes: u64) -> JoiningBudget {
        JoiningBudget {
            held: std::cell::Cell::new(0),
            bound_bytes,
        }
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> u64 {
        self.held.get()
    }

    /// One connection's partial frame went from `before` to `after` bytes. Over the bound
    /// the change is not taken (`before` stays counted): the caller closes the connection
    /// and releases `before` with `update(before, 0)`.
    pub fn update(&self, before: u64, after: u64) -> Result<(), OverJoiningBudget> {
        let held = self.held.get().saturating_sub(before) + after;
        if after > before && held > self.bound_bytes {
            return Err(OverJoiningBudget {
                held_bytes: held,
                bound_bytes: self.bound_bytes,
            });
        }
        self.held.set(held);
        Ok(())
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn connections_together_hold_no_more_than_the_budget() {
        let budget = JoiningBudget::new(100);
        budget.update(0, 60).unwrap();
        budget.update(0, 30).unwrap();
        assert_eq!(
            budget.update(30, 50),
            Err(OverJoiningBudget {
                held_bytes: 110,
                bound_bytes: 100
            })
        );
        assert_eq!(budget.held_bytes(), 90, "a refused change is not taken");
        budget.update(30, 0).unwrap();
        budget.update(60, 0).unwrap();
        assert_eq!(
            budget.held_bytes(),
            0,
            "finished or closed connections release"
        );
        budget.update(0, 100).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::peer_codec::encode_peer_frame;
    use proptest::prelude::*;

    const BOUND: u64 = 8 << 20;

    /// A frame-like byte string (any bytes: the chunker does not read them).
    fn frame_of(bytes: usize) -> Vec<u8> {
        (0..bytes).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn join(chunks: impl IntoIterator<Item = Vec<u8>>) -> Result<Vec<Vec<u8>>, ChunkError> {
        let mut assembler = ChunkAssembler::new(BOUND);
        let mut frames = Vec::new();
        for chunk in chunks {
            frames.extend(assembler.accept(chunk)?);
        }
        assert_eq!(assembler.received_bytes(), 0, "nothing left half joined");
        Ok(frames)
    }

    #[test]
    fn a_frame_is_cut_into_chunks_within_the_limit_and_joined_back() {
        let frame = frame_of(90_000);
        let chunks: Vec<Vec<u8>> = chunk_frame(&frame, 32 * 1024, BOUND).unwrap().collect();
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.len() <= 32 * 1024));
        assert_eq!(join(chunks), Ok(vec![frame]));
    }

    #[test]
    fn peer_frames_pass_through_around_chunked_ones() {
        let small = encode_peer_frame(1, 0, &[]);
        let large = frame_of(5000);
        let mut stream = vec![small.clone()];
        stream.extend(chunk_frame(&large, 1000, BOUND).unwrap());
        stream.push(small.clone());
        assert_eq!(join(stream), Ok(vec![small.clone(), large, small]));
    }

    #[test]
    fn a_frame_over_the_bound_or_a_limit_without_room_is_not_cut() {
        assert_eq!(
            chunk_frame(&frame_of(101), 1000, 100).err(),
            Some(ChunkError::OverBound {
                total_bytes: 101,
                bound_bytes: 100
            })
        );
        assert!(chunk_frame(&frame_of(100), 1000, 100).is_ok());
        assert!(matches!(
            chunk_frame(&frame_of(100), MIN_CHUNKED_FRAME_LIMIT_BYTES - 1, BOUND),
            Err(ChunkError::LimitTooSmall { .. })
        ));
        assert_eq!(
            chunk_frame(&[], 1000, BOUND).err(),
            Some(ChunkError::EmptyFrame)
        );
    }

    #[test]
    fn malformed_sequences_are_refused_with_what_is_wrong() {
        let chunk = encode_peer_chunk;
        let cases: Vec<(Vec<Vec<u8>>, ChunkError)> = vec![
            (
                vec![chunk(100, 0, &[1; 40]), chunk(100, 50, &[1; 50])],
                ChunkError::Gap {
                    expected_offset: 40,
                    offset: 50,
                },
            ),
            (
                vec![chunk(100, 10, &[1; 40])],
                ChunkError::Gap {
                    expected_offset: 0,
                    offset: 10,
                },
            ),
            (
                vec![chunk(100, 0, &[1; 40]), chunk(100, 30, &[1; 70])],
                ChunkError::Overlap {
                    expected_offset: 40,
                    offset: 30,
                },
            ),
            (
                vec![chunk(100, 0, &[1; 40]), chunk(120, 40, &[1; 60])],
                ChunkError::TotalChanged {
                    total_bytes: 100,
                    announced_bytes: 120,
                },
            ),
            (
                vec![chunk(100, 0, &[1; 40]), chunk(100, 40, &[1; 61])],
                ChunkError::PastTotal {
                    offset: 40,
                    data_bytes: 61,
                    total_bytes: 100,
                },
            ),
            (
                vec![chunk(BOUND + 1, 0, &[1; 40])],
                ChunkError::OverBound {
                    total_bytes: BOUND + 1,
                    bound_bytes: BOUND,
                },
            ),
            (vec![chunk(0, 0, &[])], ChunkError::EmptyFrame),
            (
                vec![chunk(100, 0, &[1; 40]), chunk(100, 40, &[])],
                ChunkError::EmptyChunk { offset: 40 },
            ),
            (
                vec![chunk(100, 0, &[1; 40]), encode_peer_frame(1, 0, &[])],
                ChunkError::FrameInsideChunks {
                    received_bytes: 40,
                    total_bytes: 100,
                },
            ),
        ];
        for (case, (sequence, error)) in cases.into_iter().enumerate() {
            assert_eq!(join(sequence), Err(error), "case {case}");
        }
        let mut broken = chunk(100, 0, &[1; 40]);
        broken.truncate(20);
        broken.extend_from_slice(&[0xff; 8]);
        assert!(matches!(
            ChunkAssembler::new(BOUND).accept(broken),
            Err(ChunkError::Malformed(_))
        ));
    }

    #[test]
    fn after_a_refusal_nothing_of_the_partial_frame_is_kept() {
        let mut assembler = ChunkAssembler::new(BOUND);
        assert_eq!(
            assembler.accept(encode_peer_chunk(100, 0, &[1; 40])),
            Ok(None)
        );
        assert_eq!(assembler.received_bytes(), 40);
        assert!(assembler
            .accept(encode_peer_chunk(100, 0, &[1; 40]))
            .is_err());
        assert_eq!(assembler.received_bytes(), 0);
    }

    #[test]
    fn the_partial_buffer_grows_with_the_data_never_past_the_total() {
        let mut bytes = Vec::new();
        grow_within(&mut bytes, 10, 1 << 30);
        assert!(bytes.capacity() >= 10 && bytes.capacity() < 1 << 20);
        bytes.resize(10, 0);
        grow_within(&mut bytes, 5, 12);
        assert!(bytes.capacity() >= 15);
        let mut bytes = vec![0u8; 600];
        grow_within(&mut bytes, 100, 1000);
        assert_eq!(bytes.capacity(), 1000, "doubling stops at the total");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any bytes, any limit a chunk fits in: every chunk within the limit, and the
        /// chunks join back into the same bytes.
        #[test]
        fn cut_and_joined_frames_are_unchanged(
            bytes in 1usize..(3 << 20),
            limit in prop_oneof![
                MIN_CHUNKED_FRAME_LIMIT_BYTES..2048,
                2048usize..(1 << 20),
            ],
        ) {
            let frame = frame_of(bytes);
            let chunks = chunk_frame(&frame, limit, BOUND).unwrap();
            let expected = chunks.size_hint().0;
            let mut assembler = ChunkAssembler::new(BOUND);
            let (mut joined, mut count) = (Vec::new(), 0);
            for chunk in chunks {
                prop_assert!(chunk.len() <= limit, "{} > {limit}", chunk.len());
                count += 1;
                joined.extend(assembler.accept(chunk).unwrap());
            }
            prop_assert_eq!(count, expected);
            prop_assert_eq!(joined, vec![frame]);
        }

        /// A chunk sequence with one chunk dropped, repeated or swapped with the next is
        /// refused (never joined into other bytes, never a panic).
        #[test]
        fn a_disturbed_sequence_is_refused(
            bytes in 2000usize..50_000,
            limit in 200usize..2000,
            victim in any::<prop::sample::Index>(),
            how in 0u8..3,
        ) {
            let frame = frame_of(bytes);
            let mut chunks: Vec<Vec<u8>> = chunk_frame(&frame, limit, BOUND).unwrap().collect();
            let at = victim.index(chunks.len() - 1);
            match how {
                0 => { chunks.remove(at); }
                1 => { let copy = chunks[at].clone(); chunks.insert(at, copy); }
                _ => chunks.swap(at, at + 1),
            }
            let mut assembler = ChunkAssembler::new(BOUND);
            let mut outcome = Ok(None);
            for chunk in chunks {
                outcome = assembler.accept(chunk);
                if outcome.is_err() {
                    break;
                }
            }
            prop_assert!(outcome.is_err(), "{outcome:?}");
        }
    }
}
