//! Errors of the protocol layer: what a peer can get wrong in what it sends.

use crate::protocol::wire::ErrorCode;

/// Bad input from the network, or a message that cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A frame announces more bytes than the limit.
    #[error("frame of {length} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Announced length.
        length: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A frame of zero bytes (no message).
    #[error("empty frame")]
    EmptyFrame,
    /// The flatbuffers verifier refused the message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A required part of the message is absent.
    #[error("malformed message: {0} is missing")]
    Missing(&'static str),
    /// The peer speaks a protocol version this broker does not.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// A record batch's bytes do not match its crc32c.
    #[error(
        "record batch fails its crc32c (expected {expected:#010x}, computed {computed:#010x})"
    )]
    BatchChecksum {
        /// The crc32c sent with the batch.
        expected: u32,
        /// The crc32c of the bytes received.
        computed: u32,
    },
    /// A record batch is larger than allowed.
    #[error("record batch of {length} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Size of the batch.
        length: u64,
        /// The configured limit.
        limit: u64,
    },
}

impl ProtocolError {
    /// The wire error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtocolError::EmptyFrame | ProtocolError::Malformed(_) | ProtocolError::Missing(_) => {
                ErrorCode::MalformedFrame
            }
            ProtocolError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            ProtocolError::BatchChecksum { .. } => ErrorCode::CorruptBatch,
            ProtocolError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
        }
    }
}
