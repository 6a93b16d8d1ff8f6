//! `Producer`: batches records per partition (by size and linger), sends the batches of a
//! round pipelined (every request out before any answer is awaited), and reports each
//! record's fate through its `Delivery`.
//!
//! Per partition at most one batch is in flight, and a batch refused with a retriable
//! error (wrong shard, not leader, unknown topic) goes back in front of the queue after a
//! metadata refresh: a partition's records are stored in the order they were sent. A batch
//! whose answer is lost is reported `Unacknowledged` (not retried: it may be stored).
//!
//! A background thread does the sending; `send` only queues (bounded: it blocks when
//! `max_buffered_records` are waiting).
//!
//! With `spill` set, a batch that cannot reach its partition's leader within the delivery
//! timeout (connection refused, timeouts, no quorum) goes to a local journal
//! (`spill_journal`), fsynced, and its records are reported `Delivered::Spilled`; while a
//! partition has batches there, its newer batches go behind them. The same thread
//! replays the journal in order once a leader answers — the batches unchanged, with
//! their idempotent sequence numbers, so one that had reached the cluster before the
//! outage is not stored twice — and a producer started over a non-empty journal resumes
//! the replay first.
//!
//! Requests time out soon after the delivery timeout (the broker is given what is left of
//! it), so a silent cluster never holds a record much longer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::cluster::ClusterClient;
use crate::client::error::ClientError;
use crate::client::spill_journal::{SpillError, SpillJournal, SpillStatus, SpilledBatch};
use crate::protocol::codec::{
    encode_record_batch, record_batch_bytes_bound, record_bytes_bound, BatchProducer, RecordData,
    RECORD_BATCH_OVERHEAD_BOUND_BYTES,
};
use crate::protocol::wire::Acks;

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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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

struct Shared {
    queues: Mutex<Queues>,
    changed: Condvar,
    /// The spill journal's state as of its last change.
    spill_status: Mutex<Option<SpillStatus>>,
    /// Set when the producer is dropped: the replay thread ends.
    stopping: std::sync::atomic::AtomicBool,
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
                        spill_status: Mutex::new(None),
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
        let spill = match &config.spill {
            Some(spill) => Some(Arc::new(Mutex::new(Spill::open(spill)?))),
            None => None,
        };
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            changed: Condvar::new(),
            spill_status: Mutex::new(spill.as_ref().map(|s| lock(s).journal.status())),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
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
                        .spawn(move || replay_loop(&spill, &shared, &config))
                        .map_err(thread_error)?,
                )
            }
            None => None,
        };
        let thread_shared = shared.clone();
        let thread_config = config.clone();
        let sender = std::thread::Builder::new()
            .name("keel-producer".into())
            .spawn(move || send_loop(&thread_shared, &thread_config, spill))
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
        *lock(&self.shared.spill_status)
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
/// sequence number) and sent unchanged on every retry.
struct RoundBatch {
    key: (String, u32),
    records: Vec<Queued>,
    encoded: Option<(Vec<u8>, u32, u32)>,
}

/// The idempotent identity of a producer: batches carry it with per-partition sequence
/// numbers, so the leader stores a retried batch once and answers with its first offset.
struct Identity {
    producer_id: u64,
    epoch: u16,
    next_sequence: BTreeMap<(String, u32), u32>,
}

impl Identity {
    fn new() -> Identity {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let producer_id = (nanos ^ (u64::from(std::process::id()) << 40)).max(1);
        Identity {
            producer_id,
            epoch: 0,
            next_sequence: BTreeMap::new(),
        }
    }
}

/// The sending thread's side of the spill journal.
struct Spill {
    journal: SpillJournal,
    /// Batches in the journal, oldest first.
    pending: VecDeque<SpilledBatch>,
    /// Pending batches per partition: newer batches of these go behind them.
    per_partition: BTreeMap<(String, u32), usize>,
}

/// The least time a request is given, even when its delivery timeout is (nearly) up.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(200);

/// How often a non-empty journal's status is logged.
const STATUS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How often the replay thread looks for new batches while the journal is empty.
const REPLAY_IDLE: Duration = Duration::from_millis(50);

/// Between replay attempts while the cluster does not answer.
const REPLAY_BACKOFF: Duration = Duration::from_millis(200);
/// Between replay attempts after a batch was refused for good (it stays; see the log).
const REPLAY_REFUSED_BACKOFF: Duration = Duration::from_secs(5);

impl Spill {
    fn open(config: &SpillConfig) -> Result<Spill, SpillError> {
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
        Ok(Spill {
            journal,
            pending: pending.into(),
            per_partition,
        })
    }

    fn holds(&self, key: &(String, u32)) -> bool {
        self.per_partition.get(key).is_some_and(|&n| n > 0)
    }

    /// Appends a batch (fsynced) and reports its records spilled; or fails them.
    fn spill(&mut self, batch: &RoundBatch) {
        let appended = match &batch.encoded {
            Some((bytes, crc, _)) => self
                .journal
                .append(&[(batch.key.0.as_str(), batch.key.1, bytes.as_slice(), *crc)])
                .map(|positions| positions.first().map(|&p| (p, bytes, *crc))),
            None => Ok(None),
        };
        match appended {
            Ok(Some(((position, next), bytes, crc))) => {
                self.pending.push_back(SpilledBatch {
                    position,
                    next,
                    written_at: std::time::SystemTime::now(),
                    topic: batch.key.0.clone(),
                    partition: batch.key.1,
                    batch: bytes.clone(),
                    crc32c: crc,
                });
                *self.per_partition.entry(batch.key.clone()).or_insert(0) += 1;
                for queued in &batch.records {
                    queued.delivery.fulfil(Ok(Delivered::Spilled));
                }
            }
            outcome => {
                let message = match outcome {
                    Err(error) => error.to_string(),
                    _ => "batch not encoded".to_string(),
                };
                for queued in &batch.records {
                    queued
                        .delivery
                        .fulfil(Err(ClientError::Unexpected(message.clone())));
                }
            }
        }
    }
}

/// The replay thread: sends the journal's batches in order, each once it is the oldest,
/// with its own connections (an unreachable cluster blocks only this thread, not the
/// sending of new records, which keep going to the journal meanwhile).
fn replay_loop(spill: &Mutex<Spill>, shared: &Shared, config: &ProducerConfig) {
    let mut client = client_for(config);
    let mut last_report = Instant::now();
    while !shared.stopping.load(std::sync::atomic::Ordering::Relaxed) {
        if last_report.elapsed() >= STATUS_LOG_INTERVAL {
            last_report = Instant::now();
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
        let Some(batch) = lock(spill).pending.front().cloned() else {
            std::thread::sleep(REPLAY_IDLE);
            continue;
        };
        let outcome = client
            .produce_send_within(
                &batch.topic,
                batch.partition,
                &batch.batch,
                batch.crc32c,
                config.acks,
                config.delivery_timeout.max(MIN_REQUEST_TIMEOUT),
            )
            .and_then(|(address, id)| client.produce_answer(&address, id, batch.partition));
        match outcome {
            Ok(_) => {
                let mut spill = lock(spill);
                if let Err(error) = spill.journal.mark_replayed(batch.next) {
                    tracing::error!(%error, "spill journal: replay position not saved");
                    drop(spill);
                    std::thread::sleep(REPLAY_BACKOFF);
                    continue;
                }
                if let Some(done) = spill.pending.pop_front() {
                    let key = (done.topic, done.partition);
                    if let Some(count) = spill.per_partition.get_mut(&key) {
                        *count = count.saturating_sub(1);
                    }
                }
                spill.per_partition.retain(|_, n| *n > 0);
                *lock(&shared.spill_status) = Some(spill.journal.status());
            }
            Err(error) if cluster_unreachable(&error) => {
                let _ = client.refresh_metadata();
                std::thread::sleep(REPLAY_BACKOFF);
            }
            Err(error) => {
                tracing::error!(%error, topic = %batch.topic, partition = batch.partition,
                    "spill journal: a batch was refused; it stays in the journal");
                std::thread::sleep(REPLAY_REFUSED_BACKOFF);
            }
        }
    }
}

/// The cluster did not take a request for a reason that passes (no leader, no quorum, no
/// connection), as opposed to refusing it.
fn cluster_unreachable(error: &ClientError) -> bool {
    match error {
        ClientError::Unacknowledged(_) => true,
        ClientError::GaveUp { last, .. } => cluster_unreachable(last),
        other => other.is_retriable(),
    }
}

/// How long a client waits for an answer: the broker answers within the delivery
/// timeout (it is the request's timeout), so a silent connection is given up soon after
/// (a record's fate is known within about its delivery timeout, journal or not).
fn client_for(config: &ProducerConfig) -> ClusterClient {
    let mut client = ClusterClient::new(&config.bootstrap);
    client.set_request_timeout(config.delivery_timeout.max(MIN_REQUEST_TIMEOUT) + ANSWER_MARGIN);
    client
}

/// How long past the request's own timeout a client waits for the broker's answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

fn send_loop(shared: &Shared, config: &ProducerConfig, spill: Option<Arc<Mutex<Spill>>>) {
    let mut client = client_for(config);
    let mut identity = Identity::new();
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
        if let Some(spill) = spill.as_ref() {
            *lock(&shared.spill_status) = Some(lock(spill).journal.status());
        }
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
    let mut retry = Vec::new();
    for mut batch in round {
        if batch.encoded.is_none() {
            let sequence = identity.next_sequence.get(&batch.key).copied().unwrap_or(0);
            let records: Vec<RecordData> = batch.records.iter().map(|q| q.record.clone()).collect();
            let producer = BatchProducer {
                producer_id: identity.producer_id,
                producer_epoch: identity.epoch,
                base_sequence: sequence,
            };
            let (bytes, crc) = encode_record_batch(producer, now_ms(), &records);
            identity.next_sequence.insert(
                batch.key.clone(),
                sequence.wrapping_add(records.len() as u32),
            );
            batch.encoded = Some((bytes, crc, sequence));
        }
        if let Some(spill) = spill {
            let mut spill = lock(spill);
            if spill.holds(&batch.key) {
                // Behind the partition's spilled batches, not around them.
                spill.spill(&batch);
                continue;
            }
        }
        // The broker answers within what is left of the delivery timeout (a leader that
        // lost its quorum times the request out rather than holding it).
        let left = batch.records.first().map_or(config.delivery_timeout, |q| {
            config.delivery_timeout.saturating_sub(q.sent_at.elapsed())
        });
        let ticket = match &batch.encoded {
            Some((bytes, crc, _)) => client.produce_send_within(
                &batch.key.0,
                batch.key.1,
                bytes,
                *crc,
                config.acks,
                left.max(MIN_REQUEST_TIMEOUT),
            ),
            None => Err(ClientError::Unexpected("batch not encoded".into())),
        };
        sent.push((batch, ticket));
    }
    for (batch, ticket) in sent {
        let outcome =
            ticket.and_then(|(address, id)| client.produce_answer(&address, id, batch.key.1));
        // Idempotence makes a lost answer safe to retry: a batch already stored is
        // recognised by its sequence number and answered with its first offset.
        let retriable = |error: &ClientError| {
            error.is_retriable() || matches!(error, ClientError::Unacknowledged(_))
        };
        match outcome {
            Ok(base_offset) => {
                for (position, queued) in batch.records.iter().enumerate() {
                    let offset = if base_offset == u64::MAX {
                        u64::MAX
                    } else {
                        base_offset + position as u64
                    };
                    queued.delivery.fulfil(Ok(Delivered::Stored(offset)));
                }
            }
            Err(error) if retriable(&error) && !expired(&batch, config) => {
                let _ = client.refresh_metadata();
                retry.push(batch);
            }
            Err(error) if cluster_unreachable(&error) && spill.is_some() => {
                // The cluster cannot take it in time: durable locally instead.
                tracing::warn!(%error, topic = %batch.key.0, partition = batch.key.1,
                    "cluster unreachable; spilling the batch to the local journal");
                if let Some(spill) = spill {
                    lock(spill).spill(&batch);
                }
            }
            Err(error) => {
                // Refused for good: its sequence number was not used; the next batch of
                // the partition takes it.
                if let Some((_, _, sequence)) = &batch.encoded {
                    identity.next_sequence.insert(batch.key.clone(), *sequence);
                }
                let message = error.to_string();
                for queued in &batch.records {
                    queued
                        .delivery
                        .fulfil(Err(ClientError::Unexpected(message.clone())));
                }
            }
        }
    }
    if !retry.is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    retry
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
