//! `keel bench failover`: how long writes stop when a leader dies.
//!
//! Starts a local cluster of broker processes (like `keel dev`), keeps a producer writing
//! to one partition with acks=quorum, and repeatedly kills the partition's leader with
//! SIGKILL. Each fail-over time runs from the kill to the first write acknowledged after
//! it (by the new leader). The killed node is started again and allowed to catch up
//! before the next kill. Reports every time and p50/max.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bench::local_cluster::{LocalCluster, LocalClusterSpec};
use crate::client::{ClientError, ClusterClient};
use crate::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use crate::protocol::wire::Acks;

/// Settings of `keel bench failover`.
#[derive(Clone, Debug)]
pub struct FailoverBenchOptions {
    /// The `keel` executable to start nodes with.
    pub executable: PathBuf,
    /// Data directory for the nodes (emptied first).
    pub data_dir: PathBuf,
    /// Port of node 1; node n uses port + 10 * (n - 1).
    pub port: u16,
    /// Leader kills to measure.
    pub kills: usize,
}

/// Failures of the benchmark itself.
#[derive(Debug, thiserror::Error)]
pub enum FailoverBenchError {
    /// A node could not be started.
    #[error("cannot start a node: {0}")]
    Start(#[from] std::io::Error),
    /// The cluster did not answer.
    #[error("the cluster did not answer: {0}")]
    Client(#[from] ClientError),
    /// Writes did not resume.
    #[error("writes did not resume within {0:?} after a kill")]
    NoResume(Duration),
}

const RESUME_LIMIT: Duration = Duration::from_secs(20);

/// The timeline around each kill: from this long before it...
pub const TIMELINE_BEFORE: Duration = Duration::from_millis(200);
/// ...to this long after it...
pub const TIMELINE_AFTER: Duration = Duration::from_millis(800);
/// ...counting acknowledged writes per bin of this length.
pub const TIMELINE_BIN: Duration = Duration::from_millis(10);

/// What a fail-over run measured.
#[derive(Clone, Debug, Default)]
pub struct FailoverReport {
    /// Each kill's fail-over time: from the kill to the first write sent after it and
    /// acknowledged.
    pub times: Vec<Duration>,
    /// Each kill's acknowledged writes per `TIMELINE_BIN`, from `TIMELINE_BEFORE` before
    /// it to `TIMELINE_AFTER` after it.
    pub timelines: Vec<Vec<u32>>,
}

/// Acknowledged writes per bin around `kill` (by the time each was acknowledged).
fn timeline(acks: &[(Instant, Instant)], kill: Instant) -> Vec<u32> {
    let bins = ((TIMELINE_BEFORE + TIMELINE_AFTER).as_millis() / TIMELINE_BIN.as_millis()) as usize;
    let mut counts = vec![0u32; bins];
    let start = kill.checked_sub(TIMELINE_BEFORE).unwrap_or(kill);
    for &(_, acked) in acks {
        if acked < start {
            continue;
        }
        let bin = (acked.duration_since(start).as_millis() / TIMELINE_BIN.as_millis()) as usize;
        if let Some(count) = counts.get_mut(bin) {
            *count += 1;
        }
    }
    counts
}

fn leader_node(client: &mut ClusterClient, cluster: &LocalCluster) -> Option<u32> {
    client.refresh_metadata().ok()?;
    let address = client
        .metadata()
        .ok()?
        .places
        .get(&("failover".to_string(), 0))?
        .address
        .clone();
    cluster.node_of(&address)
}

/// Runs the benchmark; returns the fail-over times and the timelines around the kills.
pub fn run_failover_bench(
    options: &FailoverBenchOptions,
) -> Result<FailoverReport, FailoverBenchError> {
    let _ = std::fs::remove_dir_all(&options.data_dir);
    let mut cluster = LocalCluster::new(LocalClusterSpec {
        executable: options.executable.clone(),
        data_dir: options.data_dir.clone(),
        port: options.port,
        extra_args: Vec::new(),
    });
    cluster.start_all()?;
    let mut client = ClusterClient::new(&cluster.bootstrap());
    let started = Instant::now();
    while let Err(error) = client.create_topic("failover", 1) {
        if started.elapsed() > RESUME_LIMIT {
            return Err(error.into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // (request started, acknowledged) of every acknowledged write.
    let acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (acks, stop, bootstrap) = (acks.clone(), stop.clone(), cluster.bootstrap());
        std::thread::spawn(move || {
            let mut client = ClusterClient::new(&bootstrap);
            let record = RecordData {
                value: vec![1u8; 1024],
                ..Default::default()
            };
            let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &[record]);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if client
                    .produce("failover", 0, &batch, crc, Acks::Quorum)
                    .is_ok()
                {
                    acks.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((started, Instant::now()));
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    let mut times = Vec::with_capacity(options.kills);
    let mut kills = Vec::with_capacity(options.kills);
    let mut attempts = 0;
    while times.len() < options.kills && attempts < options.kills * 3 {
        attempts += 1;
        std::thread::sleep(Duration::from_millis(500));
        let Some(leader) = leader_node(&mut client, &cluster) else {
            continue;
        };
        let killed_at = Instant::now();
        cluster.kill(leader);
        let resumed = loop {
            // The first write *sent* after the kill that was acknowledged: one in flight
            // at the kill may still have been answered by the old leader.
            let first_after = acks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|(sent, _)| *sent >= killed_at)
                .map(|&(_, acked)| acked);
            if let Some(at) = first_after {
                break at;
            }
            if killed_at.elapsed() > RESUME_LIMIT {
                stop.store(true, Ordering::Relaxed);
                return Err(FailoverBenchError::NoResume(RESUME_LIMIT));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        times.push(resumed.duration_since(killed_at));
        kills.push(killed_at);
        cluster.start_node(leader)?;
        // Give the restarted node time to come back and catch up.
        std::thread::sleep(Duration::from_millis(1000));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    let acks = acks.lock().unwrap_or_else(|e| e.into_inner());
    let timelines = kills.iter().map(|&kill| timeline(&acks, kill)).collect();
    Ok(FailoverReport { times, timelines })
}
