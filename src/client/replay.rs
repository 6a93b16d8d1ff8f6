//! The producer's replay thread: sends the spill journal's batches to the cluster in the
//! order they were spilled, each once it is the oldest, with its own connections (an
//! unreachable cluster holds up only this thread, not the sending of new records, which
//! keep going to the journal meanwhile).
//!
//! A batch is sent as it was spilled, so one that reached the cluster before the outage
//! is recognised as a duplicate. What the answer means:
//! ```text
//! stored (or a duplicate)                 done: the checkpoint moves past it
//! no cluster (no leader, no quorum, ...)  wait and send it again
//! topic or partition unknown              the same, for up to the delivery timeout; then
//!                                         skipped and reported (the topic was deleted)
//! refused for good (too large, damaged)   skipped and reported
//! sequence refused (the partition forgot  sent again under the replay's own identity
//!   the producer, or a gap)               (a fresh id; a new epoch when refused again)
//! anything else                           logged; sent again after a pause
//! ```
//! A skipped batch is logged (error level) with its topic, partition, record count and
//! reason, and counted in `Producer::spill_skipped`: it never holds up the batches behind
//! it. Sending a batch again under another identity gives up duplicate detection for that
//! one batch (a copy stored before the partition forgot the producer is not recognised).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client::cluster::ClusterClient;
use crate::client::error::ClientError;
use crate::client::producer::{
    client_for, cluster_unreachable, lock, sequence_refused, ProducerConfig, Shared, Spill,
    MIN_REQUEST_TIMEOUT,
};
use crate::client::producer_identity::Identity;
use crate::client::spill_journal::{JournalPosition, SpilledBatch};
use crate::protocol::codec::{batch_records, check_record_batch, encode_record_batch};
use crate::protocol::wire::ErrorCode;

/// How often a non-empty journal's status is logged.
const STATUS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How often the replay thread looks for new batches while the journal is empty.
const REPLAY_IDLE: Duration = Duration::from_millis(50);

/// Between replay attempts while the cluster does not answer.
const REPLAY_BACKOFF: Duration = Duration::from_millis(200);

/// Between replay attempts after an unexpected refusal (the batch stays; see the log).
const REPLAY_REFUSED_BACKOFF: Duration = Duration::from_secs(5);

/// What to do with the oldest batch after an attempt.
enum Verdict {
    Delivered,
    Skip(String),
    Resequence,
    Wait(Duration),
}

/// The replay's state beyond the journal.
struct Replay {
    /// The identity batches are sent again under when their own was refused.
    identity: Identity,
    /// The oldest batch as sent again under `identity`: its position, bytes and crc32c
    /// (kept so that retries send the same bytes).
    resequenced: Option<(JournalPosition, Vec<u8>, u32)>,
    /// Since when the oldest batch's topic or partition has been unknown.
    unknown_since: Option<(JournalPosition, Instant)>,
}

/// The replay thread's loop, until the producer is dropped.
pub(crate) fn replay_loop(spill: &Mutex<Spill>, shared: &Shared, config: &ProducerConfig) {
    let mut client = client_for(config);
    let mut replay = Replay {
        identity: Identity::ephemeral(),
        resequenced: None,
        unknown_since: None,
    };
    let mut last_report = Instant::now();
    while !shared.stopping.load(std::sync::atomic::Ordering::Relaxed) {
        if last_report.elapsed() >= STATUS_LOG_INTERVAL {
            last_report = Instant::now();
            log_status(spill);
        }
        let Some(batch) = lock(spill).pending.front().cloned() else {
            std::thread::sleep(REPLAY_IDLE);
            continue;
        };
        let outcome = send(&mut client, config, &replay.bytes_for(&batch), &batch);
        match replay.judge(&batch, outcome, config) {
            Verdict::Delivered => finish(spill, shared, &batch, None),
            Verdict::Skip(reason) => finish(spill, shared, &batch, Some(reason)),
            Verdict::Resequence => {
                if let Err(reason) = replay.resequence(&batch) {
                    finish(spill, shared, &batch, Some(reason));
                }
            }
            Verdict::Wait(pause) => {
                let _ = client.refresh_metadata();
                std::thread::sleep(pause);
            }
        }
    }
}

fn log_status(spill: &Mutex<Spill>) {
    let status = lock(spill).journal.status();
    if status.pending_batches > 0 {
        tracing::info!(
            pending_batches = status.pending_batches,
            bytes = status.bytes,
            oldest_age_s = status.oldest_age.map_or(0.0, |a| a.as_secs_f64()),
            "spill journal waiting for the cluster"
        );
    }
}

fn send(
    client: &mut ClusterClient,
    config: &ProducerConfig,
    (bytes, crc32c): &(Vec<u8>, u32),
    batch: &SpilledBatch,
) -> Result<u64, ClientError> {
    let timeout = config.delivery_timeout.max(MIN_REQUEST_TIMEOUT);
    client
        .produce_send_within(
            &batch.topic,
            batch.partition,
            bytes,
            *crc32c,
            config.acks,
            timeout,
        )
        .and_then(|(address, id)| client.produce_answer(&address, id, batch.partition))
}

/// The oldest batch is done (stored, or skipped for `skipped`): the checkpoint moves past
/// it. If that cannot be saved, it stays and is sent again (a duplicate, recognised).
fn finish(spill: &Mutex<Spill>, shared: &Shared, batch: &SpilledBatch, skipped: Option<String>) {
    let mut spill = lock(spill);
    if let Err(error) = spill.journal.mark_replayed(batch.next) {
        tracing::error!(%error, "spill journal: replay position not saved");
        drop(spill);
        std::thread::sleep(REPLAY_BACKOFF);
        return;
    }
    spill.pop_front();
    drop(spill);
    if let Some(reason) = skipped {
        let records = check_record_batch(&batch.batch, batch.crc32c, usize::MAX)
            .map_or(0, |b| b.records().map_or(0, |r| r.len() as u64));
        tracing::error!(topic = %batch.topic, partition = batch.partition, records, %reason,
            "spill journal: skipped a batch that can never be delivered");
        let mut report = lock(&shared.skipped);
        report.batches += 1;
        report.records += records;
        report.last_reason = Some(reason);
    }
}

impl Replay {
    /// The bytes to send for `batch`: as spilled, or as sent again under the replay's
    /// identity if it already was.
    fn bytes_for(&self, batch: &SpilledBatch) -> (Vec<u8>, u32) {
        match &self.resequenced {
            Some((position, bytes, crc)) if *position == batch.position => (bytes.clone(), *crc),
            _ => (batch.batch.clone(), batch.crc32c),
        }
    }

    fn judge(
        &mut self,
        batch: &SpilledBatch,
        outcome: Result<u64, ClientError>,
        config: &ProducerConfig,
    ) -> Verdict {
        let error = match outcome {
            Ok(_) => return Verdict::Delivered,
            Err(error) => error,
        };
        if sequence_refused(&error) {
            return Verdict::Resequence;
        }
        match error.code() {
            Some(ErrorCode::UnknownTopic | ErrorCode::UnknownPartition) => {
                let since = match self.unknown_since {
                    Some((position, since)) if position == batch.position => since,
                    _ => {
                        let now = Instant::now();
                        self.unknown_since = Some((batch.position, now));
                        now
                    }
                };
                if since.elapsed() >= config.delivery_timeout {
                    return Verdict::Skip(error.to_string());
                }
                Verdict::Wait(REPLAY_BACKOFF)
            }
            Some(
                ErrorCode::BatchTooLarge
                | ErrorCode::CorruptBatch
                | ErrorCode::MalformedFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::InvalidRequest,
            ) => Verdict::Skip(error.to_string()),
            _ if cluster_unreachable(&error) => Verdict::Wait(REPLAY_BACKOFF),
            _ => {
                tracing::error!(%error, topic = %batch.topic, partition = batch.partition,
                    "spill journal: a batch was refused; it stays in the journal");
                Verdict::Wait(REPLAY_REFUSED_BACKOFF)
            }
        }
    }

    /// Encodes the oldest batch's records again under the replay's identity (its next
    /// sequence numbers for the partition; a new epoch if this very batch was refused
    /// under it already). An error: the batch cannot be read, so it is skipped.
    fn resequence(&mut self, batch: &SpilledBatch) -> Result<(), String> {
        let again = self
            .resequenced
            .as_ref()
            .is_some_and(|(position, _, _)| *position == batch.position);
        if again {
            // Ephemeral: nothing to keep, so this cannot fail.
            let _ = self.identity.bump();
            std::thread::sleep(REPLAY_BACKOFF);
        }
        let checked = check_record_batch(&batch.batch, batch.crc32c, usize::MAX)
            .map_err(|error| format!("the spilled batch cannot be read: {error}"))?;
        let (first_timestamp_ms, records) = batch_records(&checked);
        let key = (batch.topic.clone(), batch.partition);
        let producer = self.identity.take(&key, records.len() as u32);
        let (bytes, crc) = encode_record_batch(producer, first_timestamp_ms, &records);
        tracing::info!(topic = %batch.topic, partition = batch.partition,
            "spill journal: the partition refused the batch's sequence; sent again under a new identity");
        self.resequenced = Some((batch.position, bytes, crc));
        Ok(())
    }
}
