//! `keel bench catchup`: what a steady producer sees while a follower far behind catches
//! up.
//!
//! Starts a local three-node cluster (`bench::local_cluster`, leader balancing off so the
//! leader stays where it is), creates the topics `backlog` and `steady`, and runs a
//! steady producer (acks=quorum) in two phases: a baseline with every node up, then,
//! after one follower was killed and the backlog written without it (1 MiB batches from
//! four connections, acks=quorum), from the follower's restart until it has applied the
//! leader's commit index and a settle period after. The producer sends on a schedule and
//! each batch's latency counts from when it was due, so a stall of the leader's shard is
//! charged in full (no coordinated omission). Reports both phases' HdrHistograms, the
//! errors, the leader and term before and after (an election started by a timeout moves
//! the term), and how long the catch-up took.
//!
//! Owns the load and the measurement; the cluster's processes belong to `LocalCluster`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::bench::hgrm::{new_histogram, record};
use crate::bench::local_cluster::{LocalCluster, LocalClusterSpec};
use crate::client::{ClientError, ClusterClient, GroupStatus};
use crate::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use crate::protocol::wire::{Acks, ErrorCode};

/// Settings of `keel bench catchup`.
#[derive(Clone, Debug)]
pub struct CatchupBenchOptions {
    /// The `keel` executable to start nodes with.
    pub executable: PathBuf,
    /// Data directory for the nodes (emptied first).
    pub data_dir: PathBuf,
    /// Port of node 1; node n uses port + 10 * (n - 1).
    pub port: u16,
    /// Bytes written while the follower is down.
    pub backlog_bytes: u64,
    /// The steady producer's records per second.
    pub rate: u64,
    /// Records per steady request.
    pub records_per_request: u64,
    /// Length of the baseline phase.
    pub baseline: Duration,
}

/// What one run measured.
#[derive(Debug)]
pub struct CatchupBenchReport {
    /// Steady latencies with every node up, µs.
    pub baseline: Histogram<u64>,
    /// Steady latencies from the restart to the end of the catch-up, µs.
    pub during: Histogram<u64>,
    /// Errors the steady producer saw (both phases).
    pub errors: Vec<String>,
    /// (leader node, term) before the follower was stopped and after it caught up.
    pub leader_before: (u32, u64),
    /// See `leader_before`.
    pub leader_after: (u32, u64),
    /// From the restart until the follower applied the leader's commit index.
    pub catch_up: Duration,
}

/// Failures of the benchmark itself.
#[derive(Debug, thiserror::Error)]
pub enum CatchupBenchError {
    /// A node could not be started.
    #[error("cannot start a node: {0}")]
    Start(#[from] std::io::Error),
    /// The cluster did not answer.
    #[error("the cluster did not answer: {0}")]
    Client(#[from] ClientError),
    /// The cluster did not agree on one leader.
    #[error("no single leader within {0:?}: {1}")]
    NoLeader(Duration, String),
    /// The follower did not catch up.
    #[error("the follower was still behind {0:?} after its restart: {1}")]
    NotCaughtUp(Duration, String),
}

/// How long the cluster may take to agree on a leader.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// How long the catch-up may take.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(300);
/// The steady producer goes on this long after the catch-up.
const AFTER_CATCH_UP: Duration = Duration::from_millis(500);
/// Bytes of one backlog request (ten records of 100 kB).
const BACKLOG_REQUEST_BYTES: u64 = 1_000_000;
/// Connections writing the backlog.
const BACKLOG_WRITERS: u64 = 4;

/// Runs the benchmark once.
pub fn run_catchup_bench(
    options: &CatchupBenchOptions,
) -> Result<CatchupBenchReport, CatchupBenchError> {
    let _ = std::fs::remove_dir_all(&options.data_dir);
    let mut cluster = LocalCluster::new(LocalClusterSpec {
        executable: options.executable.clone(),
        data_dir: options.data_dir.clone(),
        port: options.port,
        extra_args: vec!["--leader-balance-delay".into(), "off".into()],
    });
    cluster.start_all()?;
    let bootstrap = cluster.bootstrap();
    let mut client = ClusterClient::new(&bootstrap);
    for topic in ["backlog", "steady"] {
        create_topic(&mut client, topic)?;
    }
    let rows = settled(&mut client)?;
    let leader_before = leader_of(&rows);
    let (baseline, mut errors) = steady_for(options, &bootstrap, Some(options.baseline), None);
    let follower = rows
        .iter()
        .find(|r| r.role == "follower")
        .map(|r| r.node)
        .ok_or_else(|| CatchupBenchError::NoLeader(SETTLE_LIMIT, format!("{rows:?}")))?;
    cluster.kill(follower);
    write_backlog(&bootstrap, options.backlog_bytes)?;
    let stop = Arc::new(AtomicBool::new(false));
    let steady = {
        let (options, bootstrap, stop) = (options.clone(), bootstrap.clone(), stop.clone());
        std::thread::spawn(move || steady_for(&options, &bootstrap, None, Some(stop)))
    };
    cluster.start_node(follower)?;
    let restarted = Instant::now();
    let caught_up = wait_for_catch_up(&mut client, follower, restarted);
    let catch_up = restarted.elapsed();
    std::thread::sleep(AFTER_CATCH_UP);
    stop.store(true, Ordering::Relaxed);
    let (during, during_errors) = steady
        .join()
        .unwrap_or_else(|_| (new_histogram(), vec!["the steady producer panicked".into()]));
    errors.extend(during_errors);
    let rows = caught_up?;
    drop(cluster);
    let _ = std::fs::remove_dir_all(&options.data_dir);
    Ok(CatchupBenchReport {
        baseline,
        during,
        errors,
        leader_before,
        leader_after: leader_of(&rows),
        catch_up,
    })
}

fn create_topic(client: &mut ClusterClient, topic: &str) -> Result<(), CatchupBenchError> {
    let started = Instant::now();
    loop {
        match client.create_topic(topic, 1) {
            Ok(_) => return Ok(()),
            Err(ClientError::Broker { code, .. }) if code == ErrorCode::TopicAlreadyExists => {
                return Ok(())
            }
            Err(error) if started.elapsed() > SETTLE_LIMIT => return Err(error.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Group 0's rows once all three replicas answer and agree on one leader.
fn settled(client: &mut ClusterClient) -> Result<Vec<GroupStatus>, CatchupBenchError> {
    let started = Instant::now();
    loop {
        let rows = client.cluster_status().unwrap_or_default();
        let leaders: Vec<_> = rows.iter().filter(|r| r.role == "leader").collect();
        if leaders.len() == 1
            && rows.len() == 3
            && rows
                .iter()
                .all(|r| r.leader == leaders[0].node && r.term == leaders[0].term)
        {
            return Ok(rows);
        }
        if started.elapsed() > SETTLE_LIMIT {
            return Err(CatchupBenchError::NoLeader(
                SETTLE_LIMIT,
                format!("{rows:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn leader_of(rows: &[GroupStatus]) -> (u32, u64) {
    rows.iter()
        .find(|r| r.role == "leader")
        .map_or((0, 0), |r| (r.node, r.term))
}

/// Waits until `follower` applied the leader's commit index; the rows then.
fn wait_for_catch_up(
    client: &mut ClusterClient,
    follower: u32,
    restarted: Instant,
) -> Result<Vec<GroupStatus>, CatchupBenchError> {
    loop {
        let rows = client.cluster_status().unwrap_or_default();
        let leader_commit = rows.iter().find(|r| r.role == "leader").map(|r| r.commit);
        let applied = rows.iter().find(|r| r.node == follower).map(|r| r.applied);
        if let (Some(commit), Some(applied)) = (leader_commit, applied) {
            if applied >= commit {
                return Ok(rows);
            }
        }
        if restarted.elapsed() > CATCH_UP_LIMIT {
            return Err(CatchupBenchError::NotCaughtUp(
                CATCH_UP_LIMIT,
                format!("{rows:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `bytes` to `backlog` in 1 MB requests from four connections.
fn write_backlog(bootstrap: &str, bytes: u64) -> Result<(), CatchupBenchError> {
    let requests = bytes.div_ceil(BACKLOG_REQUEST_BYTES);
    let writers: Vec<_> = (0..BACKLOG_WRITERS)
        .map(|writer| {
            let bootstrap = bootstrap.to_string();
            let count = requests / BACKLOG_WRITERS + u64::from(writer < requests % BACKLOG_WRITERS);
            std::thread::spawn(move || -> Result<(), ClientError> {
                let mut client = ClusterClient::new(&bootstrap);
                client.set_request_timeout(Duration::from_secs(10));
                let records: Vec<RecordData> = (0..10)
                    .map(|_| RecordData {
                        value: vec![b'b'; (BACKLOG_REQUEST_BYTES / 10) as usize],
                        ..Default::default()
                    })
                    .collect();
                let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
                for _ in 0..count {
                    client.produce("backlog", 0, &batch, crc, Acks::Quorum)?;
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer
            .join()
            .unwrap_or_else(|_| Err(ClientError::Unexpected("a backlog writer panicked".into())))?;
    }
    Ok(())
}

/// The steady producer: for `length`, or until `stop`. Latencies from each request's
/// due time, µs; the errors.
fn steady_for(
    options: &CatchupBenchOptions,
    bootstrap: &str,
    length: Option<Duration>,
    stop: Option<Arc<AtomicBool>>,
) -> (Histogram<u64>, Vec<String>) {
    let mut client = ClusterClient::new(bootstrap);
    client.set_request_timeout(Duration::from_secs(10));
    let (mut histogram, mut errors) = (new_histogram(), Vec::new());
    let records_per_request = options.records_per_request.max(1);
    let interval = Duration::from_secs_f64(records_per_request as f64 / options.rate.max(1) as f64);
    let records: Vec<RecordData> = (0..records_per_request)
        .map(|n| RecordData {
            value: format!("steady-{n:08}").into_bytes(),
            ..Default::default()
        })
        .collect();
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
    // The first request connects and learns the leader: not part of the schedule.
    if let Err(error) = client.produce("steady", 0, &batch, crc, Acks::Quorum) {
        errors.push(error.to_string());
    }
    let started = Instant::now();
    let mut due = started;
    loop {
        let stopped = stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
        if stopped || length.is_some_and(|l| due >= started + l) {
            return (histogram, errors);
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        match client.produce("steady", 0, &batch, crc, Acks::Quorum) {
            Ok(_) => record(&mut histogram, due.elapsed().as_micros() as u64),
            Err(error) => errors.push(error.to_string()),
        }
        due += interval;
    }
}
