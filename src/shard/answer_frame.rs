//! An answer as it goes on the wire: the length prefix and the flatbuffer, in the buffer
//! the builder wrote them to.
//!
//! The length prefix goes into the free room the builder leaves in front of a finished
//! message (it builds from the back), so an answer reaches the socket with no copy in
//! between: a fetch answer of a megabyte was copied twice more before (out of the
//! builder, into the write buffer). Not `finish_size_prefixed`: that aligns the prefix,
//! not the message, and readers verify the message on its own. This module never builds
//! a message's content; `requests` does.

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;

use crate::protocol::frame::LENGTH_PREFIX_BYTES;

/// One whole answer frame.
#[derive(Clone, Debug)]
pub struct AnswerFrame(Bytes);

impl AnswerFrame {
    /// Takes the message a builder finished (`finish`) and puts the prefix before it.
    pub fn from_finished(builder: FlatBufferBuilder<'_>) -> AnswerFrame {
        let (buffer, head) = builder.collapse();
        AnswerFrame::prefixed(buffer, head)
    }

    /// The frame of the message `buffer[head..]`.
    fn prefixed(mut buffer: Vec<u8>, head: usize) -> AnswerFrame {
        let length = u32::try_from(buffer.len() - head)
            .expect("an answer is far below 4 GiB (the frame limit bounds it)");
        let Some(start) = head.checked_sub(LENGTH_PREFIX_BYTES) else {
            // No room in front (the builder filled its buffer exactly): one copy.
            let mut frame = Vec::with_capacity(LENGTH_PREFIX_BYTES + length as usize);
            frame.extend_from_slice(&length.to_le_bytes());
            frame.extend_from_slice(&buffer[head..]);
            return AnswerFrame(Bytes::from(frame));
        };
        buffer[start..head].copy_from_slice(&length.to_le_bytes());
        AnswerFrame(Bytes::from(buffer).slice(start..))
    }

    /// The frame: prefix and message.
    pub fn frame(&self) -> &[u8] {
        &self.0
    }

    /// The message without its prefix.
    pub fn message(&self) -> &[u8] {
        &self.0[LENGTH_PREFIX_BYTES..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::decode_response;
    use crate::protocol::frame::FrameDecoder;
    use crate::protocol::wire::ErrorCode;
    use crate::shard::requests::{error_response, WireError};

    fn error(message: &str) -> WireError {
        WireError::new(ErrorCode::UnknownTopic, message.to_string())
    }

    /// The frame is the length and the message, which decodes (the verifier checks its
    /// alignment) to what was built.
    #[test]
    fn an_answer_frame_is_the_prefix_then_a_verifiable_message() {
        for message in ["", "x", "a longer message of some bytes", &"y".repeat(5000)] {
            let answer = error_response(77, &error(message));
            let mut decoder = FrameDecoder::new(1 << 20);
            decoder.push(answer.frame());
            let frame = decoder
                .next_frame()
                .expect("a frame")
                .expect("a whole frame");
            assert_eq!(frame, answer.message());
            assert_eq!(decoder.buffered_bytes(), 0);
            let response = decode_response(&frame).expect("a valid response");
            assert_eq!(response.correlation_id(), 77);
            let wire_error = response.error().expect("the error");
            assert_eq!(wire_error.message(), Some(message));
        }
    }

    /// Whatever room is in front of the message, the frame is its length and it.
    #[test]
    fn a_message_with_little_room_in_front_is_copied_behind_a_prefix() {
        let message: Vec<u8> = (1..=40).collect();
        for head in [0usize, 1, 3, 4, 5, 16] {
            let mut buffer = vec![0xEE; head];
            buffer.extend_from_slice(&message);
            let answer = AnswerFrame::prefixed(buffer, head);
            assert_eq!(answer.message(), &message[..], "room {head}");
            assert_eq!(answer.frame()[..LENGTH_PREFIX_BYTES], 40u32.to_le_bytes());
            assert_eq!(answer.frame().len(), LENGTH_PREFIX_BYTES + 40);
        }
    }
}
