//! Errors a client sees.

use crate::protocol::wire::ErrorCode;
use crate::protocol::ProtocolError;

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TLS failed: the broker's certificate is not from the trusted CA, has expired or
    /// does not name the host, or the broker refused this client's certificate. Not
    /// retried: asking again gets the same answer.
    #[error("TLS with {address}: {reason}")]
    Tls {
        /// The broker's address.
        address: String,
        /// rustls's reason.
        reason: String,
    },
    /// Authentication failed: no credentials for a broker that requires them, an unknown
    /// user or a wrong password, or a broker that could not prove it holds the user's
    /// credential. Not retried.
    #[error("authentication with {address}: {reason}")]
    Authentication {
        /// The broker's address.
        address: String,
        /// Why.
        reason: String,
    },
    /// No connection could be made.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address tried.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A connection failed.
    #[error("connection to {address}: {source}")]
    Io {
        /// The peer.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The broker closed the connection.
    #[error("{0} closed the connection")]
    Closed(String),
    /// The broker's answer did not parse.
    #[error("bad answer: {0}")]
    Protocol(#[from] ProtocolError),
    /// The broker refused.
    #[error("{code:?}: {message}")]
    Broker {
        /// The error code.
        code: ErrorCode,
        /// The broker's message.
        message: String,
        /// Where to go instead (NotLeader, WrongShard).
        leader_address: Option<String>,
    },
    /// The answer was not of the expected kind.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// A write whose fate is unknown: the request was sent, then the connection failed
    /// before the answer came. It may or may not have been stored; not retried, since a
    /// retry could store it twice (idempotent producers make retries safe).
    #[error("unacknowledged (it may or may not have been stored): {0}")]
    Unacknowledged(Box<ClientError>),
    /// A record too large for the broker, refused before anything was sent (as Kafka's
    /// producer does with `max.request.size`): alone in a batch it would take `size`
    /// bytes, over the broker's max batch bytes.
    #[error(
        "RecordTooLarge: the record takes {size} bytes as a batch, over the limit of {limit} \
         bytes (the broker's max batch bytes); not sent"
    )]
    RecordTooLarge {
        /// Bytes of the record as a batch of its own.
        size: u64,
        /// The limit (`ProducerConfig::max_batch_bytes`).
        limit: u64,
    },
    /// Retries ran out.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// The wire error code this error stands for, if any (the broker's, or
    /// `RecordTooLarge` for a record the client refused).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            ClientError::RecordTooLarge { .. } => Some(ErrorCode::RecordTooLarge),
            ClientError::Authentication { .. } => Some(ErrorCode::AuthenticationFailed),
            ClientError::GaveUp { last, .. } => last.code(),
            _ => None,
        }
    }

    /// Whether trying again (elsewhere, later) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Io { .. } | ClientError::Closed(_) => true,
            ClientError::Broker { code, .. } => matches!(
                *code,
                ErrorCode::NotLeader
                    | ErrorCode::WrongShard
                    | ErrorCode::UnknownTopic
                    | ErrorCode::RequestTimedOut
                    | ErrorCode::NotEnoughReplicas
                    | ErrorCode::ShuttingDown
            ),
            _ => false,
        }
    }
}
