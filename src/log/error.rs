//! Errors of the CommitLog: what the environment or the caller can cause, as values.
//!
//! Bugs (broken invariants) are `assert!`s, not variants here.

use std::path::PathBuf;

/// Everything that can go wrong in the CommitLog that is not a bug.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O call failed. After a failed write or fdatasync the log is poisoned.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Data that was once written completely fails its checks: refuse to go on.
    #[error("corrupt log: {path} at byte offset {offset}: {reason}")]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry's payload is larger than the configured maximum.
    #[error("entry payload of {payload_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    EntryTooLarge {
        /// Size of the refused payload (context and data).
        payload_bytes: u64,
        /// The configured maximum.
        max_bytes: u32,
    },
    /// An entry's context is larger than the format allows (65,535 bytes).
    #[error("entry context of {context_bytes} bytes exceeds 65535 bytes")]
    ContextTooLarge {
        /// Size of the refused context.
        context_bytes: usize,
    },
    /// Appended entries must continue the log: index last+1, term not below the last term.
    #[error("append of index {index} term {term} does not follow last index {last_index} term {last_term}")]
    NotContiguous {
        /// Index of the refused entry.
        index: u64,
        /// Term of the refused entry.
        term: u64,
        /// The log's last index.
        last_index: u64,
        /// The log's last term.
        last_term: u64,
    },
    /// Too many bytes appended without a flush; flush first.
    #[error("{unflushed_bytes} bytes are waiting for a flush (limit {limit_bytes}); flush first")]
    WriteBufferFull {
        /// Bytes appended but not yet flushed.
        unflushed_bytes: u64,
        /// The configured bound.
        limit_bytes: u64,
    },
    /// The requested entries were removed by prefix removal.
    #[error("index {index} is compacted (first index is {first_index})")]
    Compacted {
        /// Requested index.
        index: u64,
        /// The log's first index.
        first_index: u64,
    },
    /// The requested entries do not exist yet.
    #[error("index {index} is beyond the last index {last_index}")]
    Unavailable {
        /// Requested index.
        index: u64,
        /// The log's last index.
        last_index: u64,
    },
    /// A request that cannot be honoured as asked (bad range, truncating committed entries).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The configuration is not usable.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// An earlier write or fdatasync failed; nothing more may be written or acknowledged.
    #[error("the log is poisoned by an earlier I/O failure and must be reopened")]
    Poisoned,
    /// The log directory is locked by another open log.
    #[error("log directory {0} is in use by another process or log instance")]
    Locked(PathBuf),
}

impl LogError {
    /// Whether this is the file system's "no space left on device".
    pub fn is_no_space(&self) -> bool {
        matches!(self, LogError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }

    /// Wraps an I/O error with what was done to which path.
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the log.
pub type LogResult<T> = Result<T, LogError>;
