//! `Producer`: batches records per partition (by size and linger), sends the batches of a
//! round pipelined (every request out before any answer is awaited), and reports each
//! record's fate through its `Delivery`.
//!
//! Per partition at most one batch is in flight, and a batch refused with a retriable
//! error (wrong shard, not leader, unknown topic) or unanswered goes back in front of the
//! queue after a metadata refresh, unchanged (same sequence numbers: a stored one is
//! recognised): a partition's records are stored in the order they were sent. Batches
//! stay under `max_batch_bytes`; a record that cannot is refused at `send`
//! (`RecordTooLarge`).
//!
//! Each batch carries the producer's identity (`producer_identity`: id, epoch, sequence).
//! A batch that fails for good gives its sequence numbers back if it was certainly not
//! stored; if it may have been (no answer within the delivery timeout), a new epoch
//! starts instead, and a batch whose sequence the broker refused is sent again as the
//! first of a new epoch — so nothing that happened to one batch wedges the partition.
//!
//! A background thread does the sending; `send` only queues (bounded: it blocks when
//! `max_buffered_records` are waiting). Requests time out soon after the delivery timeout
//! (the broker is given what is left of it).
//!
//! With `spill` set, a batch that cannot reach its partition's leader within the delivery
//! timeout (connection refused, timeouts, no quorum) goes to a local journal
//! (`spill_journal`), fsynced, and its records are reported `Delivered::Spilled`; while a
//! partition has batches there, its newer batches go behind them. A batch the journal
//! refuses (full) fails and gives its sequence numbers back. The replay thread
//! (`replay`) sends the journal in order once a leader answers — the batches unchanged,
//! so one that had reached the cluster before the outage is not stored twice — skipping
//! and reporting those that can never be delivered; a producer started over a non-empty
//! journal resumes the replay first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::cluster::ClusterClient;
use crate::client::connection::ClientSecurity;
use crate::client::error::ClientError;
use crate::client::producer_identity::Identity;
use crate::client::spill_journal::{SpillError, SpillJournal, SpillStatus, SpilledBatch};
use crate::protocol::codec::{
    encode_record_batch, record_batch_bytes_bound, record_bytes_bound, BatchProducer, RecordData,
    RECORD_BATCH_OVERHEAD_BOUND_BYTES,
};
use crate::protocol::wire::{Acks, ErrorCode};

/// Producer settings.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// Any shard of the cluster.
    pub bootstrap: String,
    /// When the broker answers.
    pub acks: Acks,
    /// How long a record may wait for more to fill its batch.
    pub linger: Duration,
    /// Batch size that sends at once, in encoded bytes (at most `max_batch_bytes`).
    pub batch_bytes: usize,
    /// The broker's largest batch (its `max_batch_bytes`, 1 MiB - 64 by default): a
    /// record that does not fit in a batch of this size on its own is refused at `send`
    /// with `ClientError::RecordTooLarge`, and batches are kept below it.
    pub max_batch_bytes: usize,
    /// Records waiting to be sent, at most (`send` blocks beyond).
    pub max_buffered_records: usize,
    /// How long a record may take from `send` to its answer, retries included.
    pub delivery_timeout: Duration,
    /// Where batches go when the cluster cannot take them (off when `None`).
    pub spill: Option<SpillConfig>,
    /// How it connects (TLS).
    pub security: ClientSecurity,
}

/// The spill journal's settings.
#[derive(Clone, Debug)]
pub struct SpillConfig {
    /// Its directory (one producer at a time).
    pub dir: std::path::PathBuf,
    /// Bytes it may hold; beyond, records fail with a "spill full" error.
    pub limit_bytes: u64,
    /// Size of each journal file.
    pub file_bytes: u64,
}

impl SpillConfig {
    /// A journal in `dir` of up to `limit_bytes`, in 64 MiB files.
    pub fn new(dir: impl Into<std::path::PathBuf>, limit_bytes: u64) -> SpillConfig {
        SpillConfig {
            dir: dir.into(),
            limit_bytes,
            file_bytes: 64 << 20,
        }
    }
}

impl ProducerConfig {
    /// Defaults for `bootstrap`: acks=quorum, linger 1 ms, 64 KiB batches.
    pub fn new(bootstrap: &str) -> Self {
        ProducerConfig {
            bootstrap: bootstrap.to_string(),
            acks: Acks::Quorum,
            linger: Duration::from_millis(1),
            batch_bytes: 64 * 1024,
            max_batch_bytes: crate::config::DEFAULT_MAX_BATCH_BYTES as usize,
            max_buffered_records: 100_000,
            delivery_timeout: Duration::from_secs(30),
            spill: None,
            security: ClientSecurity::default(),
        }
    }
}

/// Where a record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Acknowledged by the cluster at this offset (`u64::MAX` with acks=none).
    Stored(u64),
    /// Durable in the local spill journal, not yet in the cluster: it is replayed, in
    /// order, when the cluster is back.
    Spilled,
}

impl Delivered {
    /// The offset, if the cluster acknowledged the record.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Delivered::Stored(offset) => Some(*offset),
            Delivered::Spilled => None,
        }
    }
}

/// What became of one record.
pub type DeliveryResult = Result<Delivered, ClientError>;

#[derive(Default)]
struct DeliverySlot {
    result: Mutex<Option<DeliveryResult>>,
    ready: Condvar,
}

/// The fate of one sent record: its offset once acknowledged, or why not.
#[derive(Clone)]
pub struct Delivery(Arc<DeliverySlot>);

impl Delivery {
    /// Waits for the answer and hands it over (once: a second call waits forever).
    pub fn wait(&self) -> DeliveryResult {
        let mut result = lock(&self.0.result);
        loop {
            if let Some(result) = result.take() {
                return result;
            }
            result = self.0.ready.wait(result).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn fulfil(&self, value: DeliveryResult) {
        *lock(&self.0.result) = Some(value);
        self.0.ready.notify_all();
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Queued {
    record: RecordData,
    delivery: Delivery,
    sent_at: Instant,
}

#[derive(Default)]
struct Queues {
    partitions: BTreeMap<(String, u32), VecDeque<Queued>>,
    buffered: usize,
    flush_requested: bool,
    closing: bool,
}

pub(crate) struct Shared {
    queues: Mutex<Queues>,
    changed: Condvar,
    /// The spill journal's state as of its last change (written by `Spill` under its
    /// lock at each change, before the change is reported; read without that lock,
    /// which an fsync may hold).
    pub(crate) spill_status: StatusSlot,
    /// What the replay skipped.
    pub(crate) skipped: Mutex<SkippedBatches>,
    /// Set when the producer is dropped: the replay thread ends.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
}

/// Journal batches the replay gave up on because they can never be delivered: their
/// topic or partition no longer exists (for longer than the delivery timeout), or the
/// cluster refuses them for good (too large, damaged). Each is also logged (error level)
/// with its topic, partition, record count and the reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SkippedBatches {
    /// Batches skipped since the producer started.
    pub batches: u64,
    /// Their records.
    pub records: u64,
    /// Why the last one was skipped.
    pub last_reason: Option<String>,
}

/// A batching, pipelining producer.
pub struct Producer {
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
    replayer: Option<JoinHandle<()>>,
    config: ProducerConfig,
}

impl Producer {
    /// Starts a producer (its sending thread).
    pub fn new(config: ProducerConfig) -> Producer {
        match Producer::open(config.clone()) {
            Ok(producer) => producer,
            Err(error) => {
                tracing::error!(%error, "producer not started");
                Producer {
                    shared: Arc::new(Shared {
                        queues: Mutex::new(Queues::default()),
                        changed: Condvar::new(),
                        spill_status: StatusSlot::default(),
                        skipped: Mutex::new(SkippedBatches::default()),
                        stopping: std::sync::atomic::AtomicBool::new(false),
                    }),
                    sender: None,
                    replayer: None,
                    config,
                }
            }
        }
    }

    /// Starts a producer; with `spill` set, opens the journal first (recovering it) and
    /// replays what it holds before anything newer of the same partitions.
    pub fn open(config: ProducerConfig) -> Result<Producer, SpillError> {
        let spill_status = StatusSlot::default();
        let spill = match &config.spill {
            Some(spill) => Some(Arc::new(Mutex::new(Spill::open(
                spill,
                spill_status.clone(),
            )?))),
            None => None,
        };
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            changed: Condvar::new(),
            spill_status,
            skipped: Mutex::new(SkippedBatches::default()),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        // With a journal the identity is kept beside it (the journal's lock guards both).
        let identity = match &config.spill {
            Some(spill) => Identity::load_and_bump(&spill.dir)?,
            None => Identity::ephemeral(),
        };
        let thread_error = |e| SpillError::Io {
            what: "start a producer thread for",
            path: config
                .spill
                .as_ref()
                .map(|s| s.dir.clone())
                .unwrap_or_default(),
            source: e,
        };
        let replayer = match &spill {
            Some(spill) => {
                let (spill, shared, config) = (spill.clone(), shared.clone(), config.clone());
                Some(
                    std::thread::Builder::new()
                        .name("keel-replay".into())
                        .spawn(move || crate::client::replay::replay_loop(&spill, &shared, &config))
                        .map_err(thread_error)?,
                )
            }
            None => None,
        };
        let thread_shared = shared.clone();
        let thread_config = config.clone();
        let sender = std::thread::Builder::new()
            .name("keel-producer".into())
            .spawn(move || send_loop(&thread_shared, &thread_config, identity, spill))
            .map_err(thread_error)?;
        Ok(Producer {
            shared,
            sender: Some(sender),
            replayer,
            config,
        })
    }

    /// The spill journal's pending batches, bytes and oldest age (`None` without one).
    pub fn spill_status(&self) -> Option<SpillStatus> {
        lock(&self.shared.spill_status).map(|copy| copy.now())
    }

    /// Adds this producer's spill journal gauges to an application's Prometheus
    /// registry, read at each scrape: `keel_client_spill_pending_batches`,
    /// `keel_client_spill_bytes`, `keel_client_spill_oldest_age_seconds` (none without a
    /// journal).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let shared = self.shared.clone();
        let source: crate::client::producer_metrics::StatusSource =
            std::sync::Arc::new(move || lock(&shared.spill_status).map(|copy| copy.now()));
        registry.register_collector(Box::new(
            crate::client::producer_metrics::SpillCollector::new(source),
        ));
    }

    /// The journal batches the replay skipped because they can never be delivered.
    pub fn spill_skipped(&self) -> SkippedBatches {
        lock(&self.shared.skipped).clone()
    }

    /// Queues a record for a partition; blocks while the buffer is full. A record too
    /// large for a batch (`max_batch_bytes`) is refused at once (`RecordTooLarge`).
    pub fn send(&self, topic: &str, partition: u32, record: RecordData) -> Delivery {
        let delivery = Delivery(Arc::new(DeliverySlot::default()));
        if let Err(error) = check_record_size(&record, self.config.max_batch_bytes) {
            delivery.fulfil(Err(error));
            return delivery;
        }
        let mut queues = lock(&self.shared.queues);
        while queues.buffered >= self.config.max_buffered_records && !queues.closing {
            queues = self
                .shared
                .changed
                .wait(queues)
                .unwrap_or_else(|e| e.into_inner());
        }
        if self.sender.is_none() || queues.closing {
            delivery.fulfil(Err(ClientError::Closed("producer".into())));
            return delivery;
        }
        queues.buffered += 1;
        queues
            .partitions
            .entry((topic.to_string(), partition))
            .or_default()
            .push_back(Queued {
                record,
                delivery: delivery.clone(),
                sent_at: Instant::now(),
            });
        self.shared.changed.notify_all();
        delivery
    }

    /// Sends everything queued now and waits until every record has its answer.
    pub fn flush(&self) {
        let mut queues = lock(&self.shared.queues);
        queues.flush_requested = true;
        self.shared.changed.notify_all();
        while queues.buffered > 0 {
            queues = self
                .shared
                .changed
                .wait(queues)
                .unwrap_or_else(|e| e.into_inner());
        }
        queues.flush_requested = false;
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.flush();
        lock(&self.shared.queues).closing = true;
        self.shared.changed.notify_all();
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(replayer) = self.replayer.take() {
            let _ = replayer.join();
        }
    }
}

/// Refuses a record that would not fit in a batch of `limit` bytes on its own
/// (`ClientError::RecordTooLarge`, with its size as such a batch). Cheap for a record far
/// below the limit (a bound); one near or above it is encoded to measure it.
pub fn check_record_size(record: &RecordData, limit: usize) -> Result<(), ClientError> {
    let single = std::slice::from_ref(record);
    if record_batch_bytes_bound(single) <= limit {
        return Ok(());
    }
    // The largest header a batch can have: every field present.
    let widest = BatchProducer {
        producer_id: u64::MAX,
        producer_epoch: u16::MAX,
        base_sequence: u32::MAX,
    };
    let size = encode_record_batch(widest, i64::MAX, single).0.len();
    if size <= limit {
        return Ok(());
    }
    Err(ClientError::RecordTooLarge {
        size: size as u64,
        limit: limit as u64,
    })
}

/// A batch taken from a partition's queue for one round; encoded once (with its
/// sequence numbers) and sent unchanged on every retry — encoded again only under a new
/// epoch, after the broker refused its sequence (so it certainly was not stored).
struct RoundBatch {
    key: (String, u32),
    records: Vec<Queued>,
    encoded: Option<EncodedBatch>,
    /// An attempt ended without telling whether the batch was stored.
    maybe_stored: bool,
    /// Times it was encoded again under a new epoch.
    epoch_bumps: u32,
}

#[derive(Clone)]
struct EncodedBatch {
    bytes: Vec<u8>,
    crc32c: u32,
    producer: BatchProducer,
}

/// Most times one batch is sent again under a new epoch after its sequence was refused.
const MAX_EPOCH_BUMPS_PER_BATCH: u32 = 3;

/// The spill journal with what the threads need to know of it.
/// The journal's status as copied at its last change, and when.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StatusCopy {
    status: SpillStatus,
    at: std::time::Instant,
}

impl StatusCopy {
    fn of(journal: &SpillJournal) -> StatusCopy {
        StatusCopy {
            status: journal.status(),
            at: std::time::Instant::now(),
        }
    }

    /// The status now: the oldest batch has aged since the copy.
    fn now(&self) -> SpillStatus {
        SpillStatus {
            oldest_age: self.status.oldest_age.map(|age| age + self.at.elapsed()),
            ..self.status
        }
    }
}

/// Where the producer keeps its copy of the journal's status.
pub(crate) type StatusSlot = Arc<Mutex<Option<StatusCopy>>>;

pub(crate) struct Spill {
    pub(crate) journal: SpillJournal,
    /// Batches in the journal, oldest first.
    pub(crate) pending: VecDeque<SpilledBatch>,
    /// Pending batches per partition: newer batches of these go behind them.
    pub(crate) per_partition: BTreeMap<(String, u32), usize>,
    /// The producer's copy of the journal's status (`Shared::spill_status`).
    status: StatusSlot,
}

/// The least time a request is given, even when its delivery timeout is (nearly) up.
pub(crate) const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(200);

impl Spill {
    fn open(config: &SpillConfig, status: StatusSlot) -> Result<Spill, SpillError> {
        let (journal, pending) =
            SpillJournal::open(&config.dir, config.limit_bytes, config.file_bytes)?;
        let mut per_partition = BTreeMap::new();
        for batch in &pending {
            *per_partition
                .entry((batch.topic.clone(), batch.partition))
                .or_insert(0) += 1;
        }
        if !pending.is_empty() {
            tracing::info!(
                batches = pending.len(),
                "spill journal has batches to replay"
            );
        }
        *lock(&status) = Some(StatusCopy::of(&journal));
        Ok(Spill {
            journal,
            pending: pending.into(),
            per_partition,
            status,
        })
    }

    /// Copies the journal's status for readers that must not wait on this lock.
    fn publish_status(&self) {
        *lock(&self.status) = Some(StatusCopy::of(&self.journal));
    }

    fn holds(&self, key: &(String, u32)) -> bool {
        self.per_partition.get(key).is_some_and(|&n| n > 0)
    }

    /// Appends an encoded batch (fsynced) and counts it as pending.
    fn spill(&mut self, key: &(String, u32), encoded: &EncodedBatch) -> Result<(), SpillError> {
        let entry = (
            key.0.as_str(),
            key.1,
            encoded.bytes.as_slice(),
            encoded.crc32c,
        );
        let appended = self.journal.append(&[entry]);
        self.publish_status();
        for (position, next) in appended? {
            self.pending.push_back(SpilledBatch {
                position,
                next,
                written_at: std::time::SystemTime::now(),
                topic: key.0.clone(),
                partition: key.1,
                batch: encoded.bytes.clone(),
                crc32c: encoded.crc32c,
            });
            *self.per_partition.entry(key.clone()).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Removes the oldest pending batch (replayed or skipped).
    pub(crate) fn pop_front(&mut self) {
        if let Some(done) = self.pending.pop_front() {
            let key = (done.topic, done.partition);
            if let Some(count) = self.per_partition.get_mut(&key) {
                *count = count.saturating_sub(1);
            }
        }
        self.per_partition.retain(|_, n| *n > 0);
        self.publish_status();
    }
}

/// Puts a batch in the journal and reports its records spilled; when the journal refuses
/// (full, disk error), fails them and gives back their sequence numbers.
fn spill_or_fail(spill: &Mutex<Spill>, batch: RoundBatch, identity: &mut Identity) {
    let spilled = match &batch.encoded {
        Some(encoded) => lock(spill).spill(&batch.key, encoded),
        None => Err(SpillError::Unusable("batch not encoded".to_string())),
    };
    match spilled {
        Ok(()) => {
            for queued in &batch.records {
                queued.delivery.fulfil(Ok(Delivered::Spilled));
            }
        }
        Err(error) => fail(batch, identity, &error.to_string()),
    }
}

/// Fails a batch's records. Its sequence numbers go to the next batch if it was certainly
/// not stored; if it may have been, they must never be used again: a new epoch starts.
fn fail(batch: RoundBatch, identity: &mut Identity, message: &str) {
    if let Some(encoded) = &batch.encoded {
        if batch.maybe_stored {
            bump_epoch(identity);
        } else {
            identity.give_back(&batch.key, encoded.producer, batch.records.len() as u32);
        }
    }
    for queued in &batch.records {
        queued
            .delivery
            .fulfil(Err(ClientError::Unexpected(message.to_string())));
    }
}

fn bump_epoch(identity: &mut Identity) {
    if let Err(error) = identity.bump() {
        tracing::warn!(%error, "producer epoch bumped but not kept");
    }
}

/// The cluster did not take a request for a reason that passes (no leader, no quorum, no
/// connection), as opposed to refusing it (an unknown topic is the cluster's answer).
pub(crate) fn cluster_unreachable(error: &ClientError) -> bool {
    match error {
        ClientError::Unacknowledged(_) => true,
        ClientError::GaveUp { last, .. } => cluster_unreachable(last),
        ClientError::Broker { code, .. }
            if matches!(*code, ErrorCode::UnknownTopic | ErrorCode::UnknownPartition) =>
        {
            false
        }
        other => other.is_retriable(),
    }
}

/// The broker said what certainly means the batch was not stored: refused before it was
/// proposed, or not sent at all. Anything else (no answer, a timeout, an internal error)
/// leaves it unknown.
fn certainly_not_stored(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. } | ClientError::RecordTooLarge { .. } => true,
        ClientError::GaveUp { last, .. } => certainly_not_stored(last),
        ClientError::Broker { code, .. } => matches!(
            *code,
            ErrorCode::NotLeader
                | ErrorCode::WrongShard
                | ErrorCode::UnknownTopic
                | ErrorCode::UnknownPartition
                | ErrorCode::BatchTooLarge
                | ErrorCode::CorruptBatch
                | ErrorCode::MalformedFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::UnsupportedVersion
                | ErrorCode::InvalidRequest
                | ErrorCode::OutOfOrderSequence
                | ErrorCode::UnknownProducer
        ),
        _ => false,
    }
}

/// The broker refused the batch's (producer, epoch, sequence): it forgot the producer, or
/// there is a gap. Not stored; a new epoch starts over.
pub(crate) fn sequence_refused(error: &ClientError) -> bool {
    matches!(
        error.code(),
        Some(ErrorCode::UnknownProducer | ErrorCode::OutOfOrderSequence)
    )
}

/// How long a client waits for an answer: the broker answers within the delivery
/// timeout (it is the request's timeout), so a silent connection is given up soon after
/// (a record's fate is known within about its delivery timeout, journal or not).
pub(crate) fn client_for(config: &ProducerConfig) -> ClusterClient {
    let mut client = ClusterClient::with_security(&config.bootstrap, config.security.clone());
    client.set_request_timeout(config.delivery_timeout.max(MIN_REQUEST_TIMEOUT) + ANSWER_MARGIN);
    client
}

/// How long past the request's own timeout a client waits for the broker's answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

fn send_loop(
    shared: &Shared,
    config: &ProducerConfig,
    mut identity: Identity,
    spill: Option<Arc<Mutex<Spill>>>,
) {
    let mut client = client_for(config);
    // Batches to send again, unchanged (same sequence numbers), before anything newer of
    // their partitions: a partition keeps its order and a stored batch is not stored twice.
    let mut retries: Vec<RoundBatch> = Vec::new();
    loop {
        let round = if retries.is_empty() {
            match take_round(shared, config) {
                Some(round) => round,
                None => return,
            }
        } else {
            std::mem::take(&mut retries)
        };
        retries = send_round(&mut client, config, &mut identity, round, spill.as_deref());
        let mut queues = lock(&shared.queues);
        let waiting: usize = queues.partitions.values().map(VecDeque::len).sum();
        let retrying: usize = retries.iter().map(|b| b.records.len()).sum();
        queues.buffered = waiting + retrying;
        queues.partitions.retain(|_, queue| !queue.is_empty());
        shared.changed.notify_all();
    }
}

/// Waits until some partition's batch is due (full, lingered, or flushed); takes one
/// batch per partition that is due.
fn take_round(shared: &Shared, config: &ProducerConfig) -> Option<Vec<RoundBatch>> {
    let mut queues = lock(&shared.queues);
    loop {
        let now = Instant::now();
        let mut next_due: Option<Instant> = None;
        let mut round = Vec::new();
        let flush = queues.flush_requested || queues.closing;
        let limit = config.batch_bytes.min(config.max_batch_bytes);
        for (key, queue) in queues.partitions.iter_mut() {
            let Some(first) = queue.front() else { continue };
            let bytes: usize = RECORD_BATCH_OVERHEAD_BOUND_BYTES
                + queue
                    .iter()
                    .map(|q| record_bytes_bound(&q.record))
                    .sum::<usize>();
            let due = first.sent_at + config.linger;
            if flush || bytes >= limit || due <= now {
                let taken = take_batch(queue, limit);
                round.push(RoundBatch {
                    key: key.clone(),
                    records: taken,
                    encoded: None,
                    maybe_stored: false,
                    epoch_bumps: 0,
                });
            } else {
                next_due = Some(next_due.map_or(due, |d: Instant| d.min(due)));
            }
        }
        if !round.is_empty() {
            return Some(round);
        }
        if queues.closing && queues.partitions.values().all(|q| q.is_empty()) {
            return None;
        }
        queues = match next_due {
            Some(due) => shared
                .changed
                .wait_timeout(queues, due.saturating_duration_since(now))
                .map(|r| r.0)
                .unwrap_or_else(|e| e.into_inner().0),
            None => shared
                .changed
                .wait(queues)
                .unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// Takes a partition's next batch: records from the front while the batch stays within
/// `limit` bytes (at least one: `send` refused records that do not fit alone).
fn take_batch(queue: &mut VecDeque<Queued>, limit: usize) -> Vec<Queued> {
    let mut taken = Vec::new();
    let mut taken_bytes = RECORD_BATCH_OVERHEAD_BOUND_BYTES;
    while let Some(queued) = queue.front() {
        let size = record_bytes_bound(&queued.record);
        if !taken.is_empty() && taken_bytes + size > limit {
            break;
        }
        taken_bytes += size;
        if let Some(queued) = queue.pop_front() {
            taken.push(queued);
        }
    }
    taken
}

/// Sends one round (all requests out, then all answers in); returns the batches to retry.
fn send_round(
    client: &mut ClusterClient,
    config: &ProducerConfig,
    identity: &mut Identity,
    round: Vec<RoundBatch>,
    spill: Option<&Mutex<Spill>>,
) -> Vec<RoundBatch> {
    let mut sent = Vec::with_capacity(round.len());
    for mut batch in round {
        let encoded = encode_batch(&mut batch, identity);
        if let Some(spill) = spill {
            if lock(spill).holds(&batch.key) {
                // Behind the partition's spilled batches, not around them.
                spill_or_fail(spill, batch, identity);
                continue;
            }
        }
        // The broker answers within what is left of the delivery timeout (a leader that
        // lost its quorum times the request out rather than holding it).
        let left = batch.records.first().map_or(config.delivery_timeout, |q| {
            config.delivery_timeout.saturating_sub(q.sent_at.elapsed())
        });
        let ticket = client.produce_send_within(
            &batch.key.0,
            batch.key.1,
            &encoded.bytes,
            encoded.crc32c,
            config.acks,
            left.max(MIN_REQUEST_TIMEOUT),
        );
        sent.push((batch, ticket));
    }
    let mut retry = Vec::new();
    for (batch, ticket) in sent {
        let outcome =
            ticket.and_then(|(address, id)| client.produce_answer(&address, id, batch.key.1));
        if let Some(batch) = settle(client, config, identity, batch, outcome, spill) {
            retry.push(batch);
        }
    }
    if !retry.is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    retry
}

/// Encodes a batch with the identity's next sequence numbers, unless it is encoded.
fn encode_batch(batch: &mut RoundBatch, identity: &mut Identity) -> EncodedBatch {
    if let Some(encoded) = &batch.encoded {
        return encoded.clone();
    }
    let data: Vec<RecordData> = batch.records.iter().map(|q| q.record.clone()).collect();
    let producer = identity.take(&batch.key, data.len() as u32);
    let (bytes, crc32c) = encode_record_batch(producer, now_ms(), &data);
    let encoded = EncodedBatch {
        bytes,
        crc32c,
        producer,
    };
    batch.encoded = Some(encoded.clone());
    encoded
}

/// What becomes of a batch after an attempt: its records are stored, it is tried again
/// (returned), spilled, or failed.
fn settle(
    client: &mut ClusterClient,
    config: &ProducerConfig,
    identity: &mut Identity,
    mut batch: RoundBatch,
    outcome: Result<u64, ClientError>,
    spill: Option<&Mutex<Spill>>,
) -> Option<RoundBatch> {
    let error = match outcome {
        Ok(base_offset) => {
            for (position, queued) in batch.records.iter().enumerate() {
                let offset = base_offset.saturating_add(position as u64);
                queued.delivery.fulfil(Ok(Delivered::Stored(offset)));
            }
            return None;
        }
        Err(error) => error,
    };
    batch.maybe_stored |= !certainly_not_stored(&error);
    let expired = expired(&batch, config);
    if sequence_refused(&error) && !expired && batch.epoch_bumps < MAX_EPOCH_BUMPS_PER_BATCH {
        // Certainly not stored: sent again as the first batch of a new epoch.
        tracing::info!(%error, topic = %batch.key.0, partition = batch.key.1,
            "batch sequence refused; starting a new producer epoch");
        bump_epoch(identity);
        batch.encoded = None;
        batch.epoch_bumps += 1;
        return Some(batch);
    }
    // Idempotence makes a lost answer safe to retry: a batch already stored is
    // recognised by its sequence number and answered with its first offset.
    if (error.is_retriable() || matches!(error, ClientError::Unacknowledged(_))) && !expired {
        let _ = client.refresh_metadata();
        return Some(batch);
    }
    match spill {
        Some(spill) if cluster_unreachable(&error) => {
            // The cluster cannot take it in time: durable locally instead, unchanged (if
            // it was stored after all, the replay is recognised as its duplicate).
            tracing::warn!(%error, topic = %batch.key.0, partition = batch.key.1,
                "cluster unreachable; spilling the batch to the local journal");
            spill_or_fail(spill, batch, identity);
        }
        _ => fail(batch, identity, &error.to_string()),
    }
    None
}

fn expired(batch: &RoundBatch, config: &ProducerConfig) -> bool {
    batch
        .records
        .first()
        .is_some_and(|q| q.sent_at.elapsed() > config.delivery_timeout)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::cluster::produce_refusal;

    fn broker(code: ErrorCode, message: &str) -> ClientError {
        ClientError::Broker {
            code,
            message: message.to_string(),
            leader_address: None,
        }
    }

    /// A leader that lost its leadership (or timed out) after proposing a batch answers
    /// with a retriable code and says the batch may or may not be stored: the producer
    /// retries it (same sequence numbers) and, should it fail for good, does not give its
    /// sequence numbers to the next batch (a new epoch starts instead). Before: such a
    /// NotLeader counted as certainly not stored, so a batch that was stored after all
    /// could be reported failed and its sequence numbers reused.
    #[test]
    fn an_answer_that_the_write_may_be_stored_is_retried_and_never_taken_for_not_stored() {
        let indeterminate = [
            broker(
                ErrorCode::NotLeader,
                "leadership changed before the write was committed: it may or may not be \
                 stored",
            ),
            broker(
                ErrorCode::RequestTimedOut,
                "not acknowledged in time: it may or may not be stored",
            ),
        ];
        for error in indeterminate {
            let seen = produce_refusal(error);
            assert!(!certainly_not_stored(&seen), "{seen}");
            assert!(matches!(seen, ClientError::Unacknowledged(_)), "{seen}");
            assert!(
                !seen.is_retriable(),
                "a plain produce does not retry it: {seen}"
            );
            assert!(
                cluster_unreachable(&seen),
                "spilled, not failed, with a journal"
            );
        }
        // Refused before anything was proposed: certainly not stored, retried anywhere.
        let refused = produce_refusal(broker(
            ErrorCode::NotLeader,
            "this replica does not lead the group",
        ));
        assert!(certainly_not_stored(&refused));
        assert!(refused.is_retriable());
        let overloaded = produce_refusal(broker(
            ErrorCode::RequestTimedOut,
            "too many requests in flight",
        ));
        assert!(overloaded.is_retriable());
    }
}
