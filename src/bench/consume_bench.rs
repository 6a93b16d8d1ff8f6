//! `keel bench consume`: a consumer group against a running broker.
//!
//! - Drain: the topic is filled with `records` records of `record_bytes` (100 per
//!   request, acks=quorum), then a new group of `members` members reads all of them from
//!   the start; records/s and MB/s from the moment every member has joined and heard the
//!   group's assignment until every record was consumed (a record read again by a member that had not yet heard of a rebalance
//!   counts once; such re-reads are reported).
//! - End to end (`rate` > 0): a producer writes `rate` records/s for `duration` (open
//!   loop: each record carries its intended send time, and every millisecond the producer
//!   sends what is due, so a stall is charged to every record it delayed); the members
//!   read them as they come; each record's latency runs from its intended send time to
//!   its consumption, into an HdrHistogram. acks=quorum, every flush synced.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::bench::hgrm;
use crate::client::{ClientError, ClusterClient, GroupConsumer, GroupConsumerConfig, OffsetReset};
use crate::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use crate::protocol::wire::Acks;

/// Settings of `keel bench consume`.
#[derive(Clone, Debug)]
pub struct ConsumeBenchOptions {
    /// Any shard of the broker.
    pub bootstrap: String,
    /// How it connects (TLS).
    pub security: crate::client::ClientSecurity,
    /// Topic (created if missing).
    pub topic: String,
    /// Its partitions (when created).
    pub partitions: u32,
    /// Members of the group.
    pub members: usize,
    /// Records written for the drain (0 skips it).
    pub records: u64,
    /// Times the records are drained, each by a new group.
    pub drains: usize,
    /// Value size of each record.
    pub record_bytes: usize,
    /// Records per second in the end-to-end run (0 skips it).
    pub rate: u64,
    /// Length of the end-to-end run.
    pub duration: Duration,
}

/// What `keel bench consume` measured.
#[derive(Debug)]
pub struct ConsumeBenchReport {
    /// Drain: records per second, the median of the drains.
    pub drain_records_per_second: f64,
    /// Drain: records per second of each drain, in order.
    pub drain_rounds: Vec<f64>,
    /// Drain: records consumed more than once, over all drains (members that had not
    /// yet heard of a rebalance read on partitions that had moved).
    pub drain_reread: u64,
    /// Drain: payload megabytes (10^6) per second.
    pub drain_megabytes_per_second: f64,
    /// End to end: latency from intended send to consumption, microseconds.
    pub latency: Histogram<u64>,
    /// End to end: records produced and consumed.
    pub end_to_end_records: u64,
}

/// Runs both phases.
pub fn run_consume_bench(options: &ConsumeBenchOptions) -> Result<ConsumeBenchReport, ClientError> {
    let mut client = ClusterClient::with_security(&options.bootstrap, options.security.clone());
    if !client.metadata()?.topics.contains_key(&options.topic) {
        client.create_topic(&options.topic, options.partitions)?;
    }
    let partitions = client.metadata()?.topics[&options.topic];
    let base = Instant::now();
    let mut drain_rounds = Vec::new();
    let mut drain_reread = 0;
    if options.records > 0 {
        let ends = fill(&mut client, options, partitions)?;
        for round in 0..options.drains.max(1) {
            let group = format!("keel-bench-drain-{}-{round}", std::process::id());
            let consumed = Arc::new(AtomicU64::new(0));
            let until = Until::Ends(ends.clone());
            let started = run_members(options, &group, (base, &consumed), until, None)?;
            // Until every record was consumed at least once; records read again (by a
            // member that had not yet heard of a rebalance) count once.
            let total: u64 = ends.iter().sum();
            drain_rounds.push(total as f64 / started.elapsed().as_secs_f64());
            drain_reread += consumed.load(Ordering::Relaxed).saturating_sub(total);
        }
    }
    let mut sorted = drain_rounds.clone();
    sorted.sort_by(f64::total_cmp);
    let records_per_second = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let megabytes_per_second = records_per_second * options.record_bytes as f64 / 1e6;
    let mut latency = hgrm::new_histogram();
    let mut end_to_end_records = 0;
    if options.rate > 0 {
        let group = format!("keel-bench-e2e-{}", std::process::id());
        let histogram = Arc::new(Mutex::new(hgrm::new_histogram()));
        end_to_end_records = end_to_end(options, &group, base, partitions, &histogram)?;
        latency = histogram.lock().map(|h| h.clone()).unwrap_or(latency);
    }
    Ok(ConsumeBenchReport {
        drain_records_per_second: records_per_second,
        drain_rounds,
        drain_reread,
        drain_megabytes_per_second: megabytes_per_second,
        latency,
        end_to_end_records,
    })
}

/// Writes `records` records over the partitions in turn, 100 per request; returns each
/// partition's end.
fn fill(
    client: &mut ClusterClient,
    options: &ConsumeBenchOptions,
    partitions: u32,
) -> Result<Vec<u64>, ClientError> {
    let records: Vec<RecordData> = (0..100)
        .map(|_| RecordData {
            value: vec![b'k'; options.record_bytes],
            ..Default::default()
        })
        .collect();
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
    let mut ends = vec![0; partitions as usize];
    for n in 0..options.records.div_ceil(100) {
        let partition = (n % u64::from(partitions)) as u32;
        let base = client.produce(&options.topic, partition, &batch, crc, Acks::Quorum)?;
        ends[partition as usize] = base + 100;
    }
    Ok(ends)
}

/// When the members stop.
#[derive(Clone)]
enum Until {
    /// Once every partition is read to its end.
    Ends(Vec<u64>),
    /// When the flag is set.
    Flag(Arc<AtomicBool>),
}

/// Runs the group's members until `until`, counting what they consume in `consumed`.
/// With a histogram, each record's value starts with its intended send time (µs after
/// `base`) and the members start at the partitions' ends.
fn run_members(
    options: &ConsumeBenchOptions,
    group: &str,
    (base, consumed): (Instant, &Arc<AtomicU64>),
    until: Until,
    histogram: Option<Arc<Mutex<Histogram<u64>>>>,
) -> Result<Instant, ClientError> {
    let done: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let (joined, settled) = (
        Arc::new(Barrier::new(options.members)),
        Arc::new(Barrier::new(options.members)),
    );
    let started: Arc<OnceLock<Instant>> = Arc::default();
    let threads: Vec<_> = (0..options.members)
        .map(|_| {
            let (options, group, until) = (options.clone(), group.to_string(), until.clone());
            let (consumed, done, histogram) = (consumed.clone(), done.clone(), histogram.clone());
            let (joined, settled, started) = (joined.clone(), settled.clone(), started.clone());
            std::thread::spawn(move || -> Result<(), ClientError> {
                let mut config = GroupConsumerConfig::new(&group, &[options.topic.as_str()]);
                config.security = options.security.clone();
                config.auto_commit = Some(Duration::from_secs(1));
                if histogram.is_some() {
                    config.offset_reset = OffsetReset::Latest;
                }
                let mut consumer = GroupConsumer::subscribe(&options.bootstrap, config);
                // Every member joins, then hears the final assignment, before any reads
                // (the clock starts then): a member still in an earlier generation would
                // read partitions another one also reads.
                joined.wait();
                let refreshed = match consumer.as_mut() {
                    Ok(consumer) => consumer.refresh(),
                    Err(_) => Ok(()),
                };
                settled.wait();
                started.get_or_init(Instant::now);
                let mut consumer = consumer?;
                refreshed?;
                let mut local = hgrm::new_histogram();
                while !finished(&until, &done) {
                    let records = consumer.poll(Duration::from_millis(4))?;
                    // Counted per poll: one shared counter bumped per record by every
                    // member was a contended cache line in the measuring tool itself.
                    consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
                    for record in &records {
                        if let Some(sent) = sent_at(&record.record.value) {
                            let now = base.elapsed().as_micros() as u64;
                            hgrm::record(&mut local, now.saturating_sub(sent));
                        }
                        if let Until::Ends(ends) = &until {
                            if record.record.offset + 1 >= ends[record.partition as usize] {
                                lock(&done).insert(record.partition);
                            }
                        }
                    }
                }
                if let Some(histogram) = histogram {
                    let _ = lock(&histogram).add(&local);
                }
                consumer.close()
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| ClientError::Unexpected("a member thread panicked".into()))??;
    }
    Ok(started.get().copied().unwrap_or_else(Instant::now))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn finished(until: &Until, done: &Mutex<BTreeSet<u32>>) -> bool {
    match until {
        Until::Ends(ends) => {
            let done = lock(done);
            (0..ends.len() as u32).all(|p| ends[p as usize] == 0 || done.contains(&p))
        }
        Until::Flag(flag) => flag.load(Ordering::Relaxed),
    }
}

/// The intended send time a value starts with (µs after the run's base), if it has one.
fn sent_at(value: &[u8]) -> Option<u64> {
    let stamp: [u8; 8] = value.get(..8)?.try_into().ok()?;
    (value.get(8..12) == Some(b"e2e!")).then(|| u64::from_le_bytes(stamp))
}

/// The end-to-end run: a paced producer and the group's members at once.
fn end_to_end(
    options: &ConsumeBenchOptions,
    group: &str,
    base: Instant,
    partitions: u32,
    histogram: &Arc<Mutex<Histogram<u64>>>,
) -> Result<u64, ClientError> {
    let stop = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let members = {
        let (options, group, stop) = (options.clone(), group.to_string(), stop.clone());
        let (histogram, consumed) = (Some(histogram.clone()), consumed.clone());
        std::thread::spawn(move || {
            run_members(
                &options,
                &group,
                (base, &consumed),
                Until::Flag(stop),
                histogram,
            )
        })
    };
    // Let the members join and take their partitions before the first record.
    std::thread::sleep(Duration::from_secs(2));
    let produced = produce_paced(options, base, partitions);
    // Every record produced is waited for (up to 10 s): the slowest count too.
    let waited = Instant::now();
    let target = *produced.as_ref().unwrap_or(&0);
    while consumed.load(Ordering::Relaxed) < target && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    members
        .join()
        .map_err(|_| ClientError::Unexpected("the members' thread panicked".into()))??;
    produced
}

/// Sends `rate` records/s for `duration`, each stamped with its intended send time:
/// every millisecond, what is due, to the partitions in turn.
fn produce_paced(
    options: &ConsumeBenchOptions,
    base: Instant,
    partitions: u32,
) -> Result<u64, ClientError> {
    let mut client = ClusterClient::with_security(&options.bootstrap, options.security.clone());
    let started = Instant::now();
    let interval_ns = 1_000_000_000 / options.rate.max(1);
    let total = options.rate * options.duration.as_secs().max(1);
    let mut sent = 0u64;
    while sent < total {
        let due = ((started.elapsed().as_nanos() as u64) / interval_ns + 1).min(total);
        if due <= sent {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let records: Vec<RecordData> = (sent..due)
            .map(|n| {
                let intended = started + Duration::from_nanos(n * interval_ns);
                let mut value = (intended.duration_since(base).as_micros() as u64)
                    .to_le_bytes()
                    .to_vec();
                value.extend_from_slice(b"e2e!");
                value.resize(options.record_bytes.max(12), b'v');
                RecordData {
                    value,
                    ..Default::default()
                }
            })
            .collect();
        let partition = (sent % u64::from(partitions)) as u32;
        let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
        client.produce(&options.topic, partition, &batch, crc, Acks::Quorum)?;
        sent = due;
    }
    Ok(sent)
}
