//! `keel bench produce`: produce latency and throughput against a running broker.
//!
//! - Open loop (`rate` > 0): a sender thread sends one request every 1/rate seconds on one
//!   connection (requests pipelined), a receiver thread reads the answers; each latency
//!   runs from the request's *intended* send time to its answer, so a stall is charged in
//!   full to every request it delayed.
//! - Closed loop (`rate` = 0): `window` requests kept in flight; latency from the send;
//!   throughput is the maximum the broker sustains at that window.
//!
//! Requests go to one partition, so to one shard and one connection; each carries
//! `records_per_request` records of `record_bytes`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::bench::{bench_stream, hgrm};
use crate::client::{ClientError, ClientSecurity, ClusterClient};
use crate::protocol::codec::{
    decode_response, encode_produce_request, encode_record_batch, BatchProducer,
    PartitionBatchData, RecordData,
};
use crate::protocol::frame::{append_frame, FrameDecoder};
use crate::protocol::wire::{Acks, ErrorCode};

/// Settings of `keel bench produce`.
#[derive(Clone, Debug)]
pub struct ProduceBenchOptions {
    /// Any shard of the broker.
    pub bootstrap: String,
    /// Topic (created with one partition if missing).
    pub topic: String,
    /// Requests per second; 0 for closed loop.
    pub rate: u64,
    /// Length of the run.
    pub duration: Duration,
    /// Value size of each record.
    pub record_bytes: usize,
    /// Records per request.
    pub records_per_request: usize,
    /// Requests in flight in closed loop.
    pub window: usize,
    /// Acks mode.
    pub acks: Acks,
    /// How it connects (TLS).
    pub security: ClientSecurity,
}

/// What `keel bench produce` measured.
#[derive(Debug)]
pub struct ProduceBenchReport {
    /// Latency of each request, microseconds.
    pub latency: Histogram<u64>,
    /// Requests answered with an error.
    pub errors: u64,
    /// Records acknowledged per second.
    pub records_per_second: f64,
    /// Payload megabytes (10^6) acknowledged per second.
    pub megabytes_per_second: f64,
}

/// Failures of the benchmark itself.
#[derive(Debug, thiserror::Error)]
pub enum ProduceBenchError {
    /// The client failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// Partition 0 of the topic had no leader in time.
    #[error("no leader for partition 0 of {topic:?} after {waited:?}")]
    NoLeader {
        /// The topic.
        topic: String,
        /// How long the benchmark waited.
        waited: Duration,
    },
}

/// How long to wait for partition 0 to have a leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Runs the benchmark.
pub fn run_produce_bench(
    options: &ProduceBenchOptions,
) -> Result<ProduceBenchReport, ProduceBenchError> {
    let mut client = ClusterClient::with_security(&options.bootstrap, options.security.clone());
    let topics = client.list_topics()?;
    if !topics.iter().any(|(name, _)| name == &options.topic) {
        // The node asked may not have applied a creation that just committed elsewhere.
        match client.create_topic(&options.topic, 1) {
            Err(ClientError::Broker {
                code: ErrorCode::TopicAlreadyExists,
                ..
            }) => {}
            other => other?,
        }
    }
    // Find the shard of partition 0 (a probe produce would write; the metadata tells),
    // waiting out an election or a node that has not applied the creation yet.
    let key = (options.topic.clone(), 0);
    let deadline = Instant::now() + LEADER_WAIT;
    let address = loop {
        if let Some(place) = client.refresh_metadata()?.places.get(&key) {
            break place.address.clone();
        }
        if Instant::now() > deadline {
            return Err(ProduceBenchError::NoLeader {
                topic: options.topic.clone(),
                waited: LEADER_WAIT,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The partition's shard learns of a new topic from the controller a moment after the
    // metadata shows it: a fetch (retried while the topic is unknown there) waits for it
    // without writing anything.
    client.fetch(&options.topic, 0, 0, 1, Duration::ZERO)?;
    let records: Vec<RecordData> = (0..options.records_per_request.max(1))
        .map(|_| RecordData {
            value: vec![0x6b; options.record_bytes],
            ..Default::default()
        })
        .collect();
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
    let (writer, mut reader) = bench_stream::open(&address, &options.security)?;
    let total = if options.rate > 0 {
        (options.rate as f64 * options.duration.as_secs_f64()) as u64
    } else {
        u64::MAX
    };
    // Send times by correlation id (ids are 1..), shared with the receiver.
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let deadline = started + options.duration;
    let window = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
    let sender = {
        let mut stream = writer;
        let (sent_at, window, options, batch) = (
            sent_at.clone(),
            window.clone(),
            options.clone(),
            batch.clone(),
        );
        std::thread::spawn(move || -> std::io::Result<u64> {
            precise_sleeps();
            let interval = if options.rate > 0 {
                Duration::from_secs_f64(1.0 / options.rate as f64)
            } else {
                Duration::ZERO
            };
            let mut id = 0u64;
            let mut out = Vec::new();
            loop {
                let due = if options.rate > 0 {
                    if id >= total {
                        break;
                    }
                    let due = started + interval.mul_f64(id as f64);
                    // At high rates the thread sleeps to the next send time without
                    // spinning, then sends every request that is due in one write: it
                    // wakes some tens of microseconds late, which is counted (latency
                    // runs from the intended time), but it leaves the cores to the
                    // system being measured.
                    wait_until(due, interval >= PRECISE_PACING_INTERVAL);
                    due
                } else {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let (count, ready) = &*window;
                    let mut in_flight = count.lock().unwrap_or_else(|e| e.into_inner());
                    while *in_flight >= options.window.max(1) {
                        in_flight = ready.wait(in_flight).unwrap_or_else(|e| e.into_inner());
                    }
                    *in_flight += 1;
                    Instant::now()
                };
                out.clear();
                let mut due = due;
                loop {
                    id += 1;
                    let payload = encode_produce_request(
                        id,
                        &options.topic,
                        options.acks,
                        30_000,
                        &[PartitionBatchData {
                            partition: 0,
                            batch: &batch,
                            crc32c: crc,
                        }],
                    );
                    sent_at
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Some(due));
                    let _ = append_frame(&mut out, &payload);
                    if options.rate == 0 || id >= total || out.len() >= SEND_COALESCE_BYTES {
                        break;
                    }
                    due = started + interval.mul_f64(id as f64);
                    if due > Instant::now() {
                        break;
                    }
                }
                stream.write_all(&out)?;
            }
            Ok(id)
        })
    };
    // Short reads so the loop notices when everything sent has been answered.
    reader.set_read_timeout(Duration::from_millis(100))?;
    let mut idle_since = Instant::now();
    let mut decoder = FrameDecoder::new(1 << 24);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut latency = hgrm::new_histogram();
    let mut errors = 0u64;
    let mut answered = 0u64;
    let mut acknowledged = 0u64;
    loop {
        if sender.is_finished() {
            let sent = sent_at.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
            if answered >= sent {
                break;
            }
        }
        let count = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if idle_since.elapsed() > Duration::from_secs(30) {
                    return Err(ProduceBenchError::Io(e));
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        idle_since = Instant::now();
        decoder.push(&buffer[..count]);
        while let Ok(Some(frame)) = decoder.next_frame() {
            let now = Instant::now();
            let Ok(response) = decode_response(&frame) else {
                errors += 1;
                continue;
            };
            let id = response.correlation_id();
            let ok = response.error().is_none()
                && response
                    .body_as_produce_response()
                    .and_then(|p| p.results())
                    .is_some_and(|r| {
                        r.iter()
                            .all(|x| x.error().is_none_or(|e| e.code() == ErrorCode::None))
                    });
            let sent = sent_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get((id as usize).wrapping_sub(1))
                .copied()
                .flatten();
            if let Some(sent) = sent {
                hgrm::record(&mut latency, now.duration_since(sent).as_micros() as u64);
            }
            answered += 1;
            if ok {
                acknowledged += 1
            } else {
                errors += 1
            }
            if options.rate == 0 {
                let (count, ready) = &*window;
                let mut in_flight = count.lock().unwrap_or_else(|e| e.into_inner());
                *in_flight = in_flight.saturating_sub(1);
                ready.notify_one();
            }
        }
    }
    // A sender that failed (the connection broke under it) fails the run: a short run
    // must not read as a clean one.
    match sender.join() {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(error.into()),
        Err(_) => return Err(std::io::Error::other("the sender thread panicked").into()),
    }
    let elapsed = started.elapsed().as_secs_f64();
    let records = acknowledged * options.records_per_request.max(1) as u64;
    Ok(ProduceBenchReport {
        latency,
        errors,
        records_per_second: records as f64 / elapsed,
        megabytes_per_second: (records * options.record_bytes as u64) as f64 / elapsed / 1e6,
    })
}

/// Asks the kernel to wake this thread's sleeps on time: the default timer slack lets a
/// sleep overshoot by 50 µs, which the open-loop latency would count.
fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and only affects the calling
    // thread's timer rounding; no memory is passed.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong, 0, 0, 0) };
}

/// Below this interval between requests, the sender does not spin to hit send times.
const PRECISE_PACING_INTERVAL: Duration = Duration::from_micros(100);

/// Requests due together are written together, up to about this many bytes.
const SEND_COALESCE_BYTES: usize = 256 * 1024;

/// Sleeps until `due`; with `spin`, spins the last stretch to hit it closely. Short: on a
/// small host the spinning thread competes with the broker being measured.
fn wait_until(due: Instant, spin: bool) {
    const SPIN: Duration = Duration::from_micros(30);
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if !spin {
            std::thread::sleep(left);
        } else if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
        }
    }
}
