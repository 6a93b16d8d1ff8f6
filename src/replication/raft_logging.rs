//! raft-rs logs through `slog`; this drain forwards its records to `tracing`, so the
//! broker has one log stream with one filter (`KEEL_LOG`).

use slog::{Drain, Level, OwnedKVList, Record};

/// A slog drain writing to tracing under the target `raft`.
pub struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, _values: &OwnedKVList) -> Result<(), slog::Never> {
        let message = record.msg();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{message}"),
            Level::Warning => tracing::warn!(target: "raft", "{message}"),
            Level::Info => tracing::info!(target: "raft", "{message}"),
            Level::Debug => tracing::debug!(target: "raft", "{message}"),
            Level::Trace => tracing::trace!(target: "raft", "{message}"),
        }
        Ok(())
    }
}

/// A logger for one replica group.
pub fn raft_logger(replica_id: u64, group: u64) -> slog::Logger {
    slog::Logger::root(
        TracingDrain.fuse(),
        slog::o!("replica" => replica_id, "group" => group),
    )
}
