//! Configuration of one CommitLog, validated once at open.

use crate::constants::{
    BLOCK_SIZE_BYTES, DEFAULT_MAX_ENTRY_PAYLOAD_BYTES, DEFAULT_MAX_UNFLUSHED_BYTES,
    DEFAULT_SEGMENT_SIZE_BYTES, DEFAULT_TAIL_CACHE_BYTES, MAX_ENTRY_PAYLOAD_LIMIT_BYTES,
    MIN_SEGMENT_SIZE_BYTES,
};
use crate::log::entry::stored_size_bytes;
use crate::log::error::{LogError, LogResult};

/// How a new segment file is made ready before entries go into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preallocation {
    /// Zero-fill and sync the whole file ahead of use, in the background. Each later
    /// fdatasync then flushes data only (no extent conversion), which is the fastest for
    /// small synced writes; it costs one extra write of each segment.
    ZeroFill,
    /// Reserve the space with fallocate only. No extra write, but each fdatasync into a
    /// fresh region also commits an extent change: slower for small writes.
    Fallocate,
    /// Zero-fill while the log fills slower than a limit (64 MiB/s), fallocate above it,
    /// where writing each segment twice would halve the bandwidth left for entries.
    Adaptive,
}

impl std::str::FromStr for Preallocation {
    type Err = LogError;

    fn from_str(text: &str) -> LogResult<Self> {
        match text {
            "zero-fill" => Ok(Preallocation::ZeroFill),
            "fallocate" => Ok(Preallocation::Fallocate),
            "adaptive" => Ok(Preallocation::Adaptive),
            other => Err(LogError::InvalidConfig(format!(
                "preallocation must be adaptive, zero-fill or fallocate, not {other:?}"
            ))),
        }
    }
}

/// How a flush makes its writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMethod {
    /// Segment files are opened with `O_DSYNC`: each write returns once its bytes are
    /// durable, so a flush is one ring operation per write and no fdatasync. io_uring
    /// completes such a write on a zero-filled segment without its worker threads (no
    /// wake-up pair per sync); the device time is that of write + fdatasync.
    DsyncWrites,
    /// Plain O_DIRECT writes, then one fdatasync per file and flush (io_uring hands each
    /// fdatasync to a worker thread).
    Fdatasync,
}

impl std::str::FromStr for SyncMethod {
    type Err = LogError;

    fn from_str(text: &str) -> LogResult<Self> {
        match text {
            "dsync" => Ok(SyncMethod::DsyncWrites),
            "fdatasync" => Ok(SyncMethod::Fdatasync),
            other => Err(LogError::InvalidConfig(format!(
                "sync method must be dsync or fdatasync, not {other:?}"
            ))),
        }
    }
}

/// Settings of one CommitLog.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Size of each segment file; a multiple of 4 KiB.
    pub segment_size_bytes: u64,
    /// Largest entry payload (context plus data) accepted.
    pub max_entry_payload_bytes: u32,
    /// Bound of the in-memory cache of recent entries (entries not yet durable are always
    /// kept, and are bounded by `max_unflushed_bytes`).
    pub tail_cache_bytes: u64,
    /// Bound of appended bytes waiting for a flush; `append` fails beyond it.
    pub max_unflushed_bytes: u64,
    /// How new segments are prepared.
    pub preallocation: Preallocation,
    /// How flushes make their writes durable.
    pub sync: SyncMethod,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            max_entry_payload_bytes: DEFAULT_MAX_ENTRY_PAYLOAD_BYTES,
            tail_cache_bytes: DEFAULT_TAIL_CACHE_BYTES,
            max_unflushed_bytes: DEFAULT_MAX_UNFLUSHED_BYTES,
            preallocation: Preallocation::Adaptive,
            sync: SyncMethod::DsyncWrites,
        }
    }
}

impl LogConfig {
    /// Checks that the settings fit together; called by `CommitLog::open`.
    pub fn validate(&self) -> LogResult<()> {
        let fail = |message: String| Err(LogError::InvalidConfig(message));
        if self.segment_size_bytes < MIN_SEGMENT_SIZE_BYTES
            || !self.segment_size_bytes.is_multiple_of(BLOCK_SIZE_BYTES)
        {
            return fail(format!(
                "segment size {} must be a multiple of {BLOCK_SIZE_BYTES} and at least \
                 {MIN_SEGMENT_SIZE_BYTES}",
                self.segment_size_bytes
            ));
        }
        if self.max_entry_payload_bytes == 0
            || self.max_entry_payload_bytes > MAX_ENTRY_PAYLOAD_LIMIT_BYTES
        {
            return fail(format!(
                "max entry payload {} must be between 1 and {MAX_ENTRY_PAYLOAD_LIMIT_BYTES}",
                self.max_entry_payload_bytes
            ));
        }
        let largest_entry = stored_size_bytes(self.max_entry_payload_bytes);
        if largest_entry * 2 > self.segment_size_bytes {
            return fail(format!(
                "segment size {} must hold at least two entries of the maximum payload {}",
                self.segment_size_bytes, self.max_entry_payload_bytes
            ));
        }
        if self.max_unflushed_bytes < largest_entry {
            return fail(format!(
                "max unflushed bytes {} must hold at least one entry of the maximum payload",
                self.max_unflushed_bytes
            ));
        }
        Ok(())
    }
}
