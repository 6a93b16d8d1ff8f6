//! `keel bench log`: the CommitLog's own speed, end to end on a real disk.
//!
//! Two runs, each on a fresh log directory:
//! - throughput: large batches appended back to back, each flushed while the next is
//!   appended (four flushes in the pipeline); reports MB/s of payload made durable;
//! - latency: small entries appended by an open-loop generator at a fixed rate; a flusher
//!   makes whatever is pending durable, over and over (group commit). Each entry's latency
//!   runs from its *intended* send time (so a stalled generator cannot hide a stall) to the
//!   return of the flush that made it durable. Recorded in an HdrHistogram.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use raft::eraftpb::Entry;

use crate::bench::hgrm;
use crate::bench::pacer::Pacer;

/// Flushes the throughput run keeps in flight (they overlap on the device).
const FLUSHES_IN_FLIGHT: usize = 4;
use crate::log::{CommitLog, LogConfig, LogError, Preallocation, SyncMethod};

/// Settings of `keel bench log`.
#[derive(Clone, Debug)]
pub struct LogBenchOptions {
    /// Directory to create the benchmark logs in (removed afterwards).
    pub dir: PathBuf,
    /// Payload bytes to write in the throughput run (0 skips it).
    pub throughput_total_bytes: u64,
    /// Payload of each entry in the throughput run.
    pub throughput_entry_bytes: u32,
    /// Entries per batch (one flush each) in the throughput run.
    pub throughput_batch_entries: u32,
    /// Entries per second in the latency run (0 skips it).
    pub latency_rate_per_second: u64,
    /// Length of the latency run.
    pub latency_duration: Duration,
    /// Payload of each entry in the latency run.
    pub latency_entry_bytes: u32,
    /// Segment preparation mode.
    pub preallocation: Preallocation,
    /// How flushes make writes durable.
    pub sync: SyncMethod,
    /// Segment size.
    pub segment_size_bytes: u64,
    /// Where to write the latency histogram (`.hgrm`).
    pub hgrm_path: PathBuf,
}

/// What `keel bench log` measured.
#[derive(Debug)]
pub struct LogBenchReport {
    /// Throughput run: payload megabytes (10^6) per second made durable.
    pub throughput_megabytes_per_second: Option<f64>,
    /// Latency run: the histogram of append-to-durable microseconds.
    pub latency: Option<Histogram<u64>>,
    /// Latency run: flushes issued (entries per flush = samples / flushes).
    pub latency_flushes: u64,
    /// Latency run: how long each flush took (write and fdatasync), microseconds.
    pub flush_time: Option<Histogram<u64>>,
    /// Latency run: how late the generator appended each entry, microseconds.
    pub generator_lateness: Option<Histogram<u64>>,
}

struct LatencyRun {
    latency: Histogram<u64>,
    flush_time: Histogram<u64>,
    lateness: Histogram<u64>,
    flushes: u64,
}

/// The entry at `index`, sharing the template's payload (a reference count, not a copy).
fn entry(index: u64, template: &Entry) -> Entry {
    let mut entry = template.clone();
    entry.index = index;
    entry
}

fn template(payload_bytes: u32, fill: u8) -> Entry {
    Entry {
        term: 1,
        data: vec![fill; payload_bytes as usize].into(),
        ..Default::default()
    }
}

/// Runs both parts of the benchmark; must run on a glommio executor.
pub async fn run_log_bench(options: &LogBenchOptions) -> Result<LogBenchReport, LogError> {
    let mut report = LogBenchReport {
        throughput_megabytes_per_second: None,
        latency: None,
        latency_flushes: 0,
        flush_time: None,
        generator_lateness: None,
    };
    if options.throughput_total_bytes > 0 {
        let dir = options.dir.join("throughput");
        let result = throughput_run(&dir, options).await;
        let _ = std::fs::remove_dir_all(&dir);
        report.throughput_megabytes_per_second = Some(result?);
    }
    if options.latency_rate_per_second > 0 {
        let dir = options.dir.join("latency");
        let result = latency_run(&dir, options).await;
        let _ = std::fs::remove_dir_all(&dir);
        let run = result?;
        report.latency = Some(run.latency);
        report.latency_flushes = run.flushes;
        report.flush_time = Some(run.flush_time);
        report.generator_lateness = Some(run.lateness);
    }
    Ok(report)
}

fn config_for(options: &LogBenchOptions, max_entry_bytes: u32) -> LogConfig {
    LogConfig {
        segment_size_bytes: options.segment_size_bytes,
        max_entry_payload_bytes: max_entry_bytes.max(1024 * 1024),
        preallocation: options.preallocation,
        sync: options.sync,
        ..LogConfig::default()
    }
}

/// Opens a fresh log and writes entry 1, so the first segment is prepared before any
/// clock starts, as it would be in service.
async fn open_warmed(dir: &Path, config: LogConfig) -> Result<Rc<CommitLog>, LogError> {
    let log = Rc::new(CommitLog::open(dir, config).await?);
    log.append(&[Entry {
        index: 1,
        term: 1,
        ..Default::default()
    }])?;
    log.flush().await?;
    Ok(log)
}

async fn throughput_run(dir: &Path, options: &LogBenchOptions) -> Result<f64, LogError> {
    let log = open_warmed(dir, config_for(options, options.throughput_entry_bytes)).await?;
    let payload = template(options.throughput_entry_bytes, 0x5a);
    let entries_total =
        options.throughput_total_bytes / u64::from(options.throughput_entry_bytes).max(1);
    let mut next_index = 2;
    let last_index = 1 + entries_total;
    let mut in_flight = VecDeque::new();
    let started = Instant::now();
    while next_index <= last_index {
        let batch_end =
            (next_index + u64::from(options.throughput_batch_entries)).min(last_index + 1);
        let batch: Vec<Entry> = (next_index..batch_end)
            .map(|index| entry(index, &payload))
            .collect();
        log.append(&batch)?;
        next_index = batch_end;
        let flusher = log.clone();
        in_flight.push_back(glommio::spawn_local(async move { flusher.flush().await }));
        if in_flight.len() >= FLUSHES_IN_FLIGHT {
            if let Some(task) = in_flight.pop_front() {
                task.await?;
            }
        }
    }
    for task in in_flight {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(log.durable_index(), last_index);
    let bytes = entries_total * u64::from(options.throughput_entry_bytes);
    drop(log);
    Ok(bytes as f64 / elapsed / 1e6)
}

async fn latency_run(dir: &Path, options: &LogBenchOptions) -> Result<LatencyRun, LogError> {
    let log = open_warmed(dir, config_for(options, options.latency_entry_bytes)).await?;
    let payload = template(options.latency_entry_bytes, 0xa5);
    let total =
        (options.latency_rate_per_second as f64 * options.latency_duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / options.latency_rate_per_second as f64);
    // Intended send times of appended entries not yet durable, oldest first (index 2..).
    let intended: Rc<std::cell::RefCell<VecDeque<(u64, Instant)>>> = Rc::default();
    let started = Instant::now();
    // The generator wakes the flusher when it appends to an idle log.
    let (wake, woken) = glommio::channels::local_channel::new_bounded::<()>(1);
    let lateness: Rc<std::cell::RefCell<Histogram<u64>>> =
        Rc::new(std::cell::RefCell::new(hgrm::new_histogram()));
    let generator = {
        let (log, intended, lateness) = (log.clone(), intended.clone(), lateness.clone());
        glommio::spawn_local(async move {
            let mut pacer = Pacer::default();
            let due_of = |sequence: u64| started + interval.mul_f64(sequence as f64);
            let mut sequence = 0;
            while sequence < total {
                let slept = pacer.wait_until(due_of(sequence)).await;
                // Append everything that is due by now in one go (when the generator
                // runs late, the entries it owes are sent at once, each charged from its
                // own intended time).
                let now = Instant::now();
                let mut batch = Vec::new();
                while sequence < total && (batch.is_empty() || due_of(sequence) <= now) {
                    let due = due_of(sequence);
                    let index = sequence + 2;
                    hgrm::record(
                        &mut lateness.borrow_mut(),
                        now.saturating_duration_since(due).as_micros() as u64,
                    );
                    batch.push(entry(index, &payload));
                    intended.borrow_mut().push_back((index, due));
                    sequence += 1;
                }
                log.append(&batch)?;
                let _ = wake.try_send(());
                if !slept {
                    // Await the reactor at least once per round: a task that never
                    // awaits keeps glommio from polling I/O, starving the flushes.
                    glommio::timer::sleep(Duration::from_micros(1)).await;
                }
            }
            Ok::<(), LogError>(())
        })
    };
    let mut histogram = hgrm::new_histogram();
    let mut flush_time = hgrm::new_histogram();
    let mut flushes = 0u64;
    loop {
        if log.last_index() == log.durable_index() {
            // Idle: wait for the next append, or for the generator to finish.
            if woken.recv().await.is_none() && log.last_index() == log.durable_index() {
                break;
            }
            continue;
        }
        let flush_started = Instant::now();
        let durable = log.flush().await?;
        flushes += 1;
        let now = Instant::now();
        hgrm::record(
            &mut flush_time,
            now.duration_since(flush_started).as_micros() as u64,
        );
        let mut waiting = intended.borrow_mut();
        while waiting.front().is_some_and(|&(index, _)| index <= durable) {
            if let Some((_, due)) = waiting.pop_front() {
                hgrm::record(&mut histogram, now.duration_since(due).as_micros() as u64);
            }
        }
    }
    generator.await?;
    drop(log);
    let lateness = lateness.borrow().clone();
    Ok(LatencyRun {
        latency: histogram,
        flush_time,
        lateness,
        flushes,
    })
}
