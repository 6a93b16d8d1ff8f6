//! A follower far behind catches up from disk reads made off the Ready path: the leader's
//! shard keeps ticking and heartbeating meanwhile, so there is no election, and a
//! producer writing through the catch-up sees no error.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::client::{ClientError, ClusterClient, GroupStatus};
use keel::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use keel::protocol::wire::{Acks, ErrorCode};
use support::{retry, settled, start_cluster_with};

/// Writes `megabytes` MiB in batches of about 1 MiB from four connections.
fn write_backlog(bootstrap: &str, megabytes: usize) {
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let bootstrap = bootstrap.to_string();
            std::thread::spawn(move || {
                let mut client = ClusterClient::new(&bootstrap);
                client.set_request_timeout(Duration::from_secs(10));
                let records: Vec<RecordData> = (0..10)
                    .map(|_| RecordData {
                        value: vec![b'b'; 100_000],
                        ..Default::default()
                    })
                    .collect();
                let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
                for _ in 0..megabytes / 4 {
                    client
                        .produce("backlog", 0, &batch, crc, Acks::Quorum)
                        .expect("a backlog batch acknowledged");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("every backlog batch acknowledged");
    }
}

/// Records the steady producer sends per batch, one batch every `STEADY_INTERVAL`: 1,000
/// records/s.
const STEADY_BATCH_RECORDS: u64 = 10;
const STEADY_INTERVAL: Duration = Duration::from_millis(10);

/// Produces 1,000 small records/s (a batch of 10 every 10 ms, on a schedule: a late
/// answer delays the next send, and latency counts from when a batch was due, so a stall
/// is not hidden) until `stop`; returns (records acknowledged, errors, latencies in µs).
fn steady_producer(bootstrap: String, stop: Arc<AtomicBool>) -> (u64, Vec<String>, Vec<u64>) {
    let mut client = ClusterClient::new(&bootstrap);
    client.set_request_timeout(Duration::from_secs(10));
    let (mut acknowledged, mut errors, mut latencies) = (0, Vec::new(), Vec::new());
    // The first request connects and learns the leader: not part of the schedule.
    let (batch, crc) = encode_record_batch(
        BatchProducer::default(),
        0,
        &[RecordData {
            value: b"steady-warm-up".to_vec(),
            ..Default::default()
        }],
    );
    if let Err(error) = client.produce("steady", 0, &batch, crc, Acks::Quorum) {
        errors.push(error.to_string());
    }
    let mut due = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let records: Vec<RecordData> = (acknowledged..acknowledged + STEADY_BATCH_RECORDS)
            .map(|n| RecordData {
                value: format!("steady-{n}").into_bytes(),
                ..Default::default()
            })
            .collect();
        let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        match client.produce("steady", 0, &batch, crc, Acks::Quorum) {
            Ok(_) => {
                acknowledged += STEADY_BATCH_RECORDS;
                latencies.push(due.elapsed().as_micros() as u64);
            }
            Err(error) => errors.push(error.to_string()),
        }
        due += STEADY_INTERVAL;
    }
    (acknowledged, errors, latencies)
}

#[test]
fn a_follower_300_mb_behind_catches_up_without_an_election_and_a_producer_sees_no_error() {
    let root = tempfile::tempdir().unwrap();
    let args = ["--leader-balance-delay", "off"];
    let mut nodes = start_cluster_with(root.path(), 3, 1, &args);
    let bootstrap: String = nodes
        .iter()
        .map(|n| n.address(0))
        .collect::<Vec<_>>()
        .join(",");
    let mut client = ClusterClient::new(&bootstrap);
    for topic in ["backlog", "steady"] {
        retry("create a topic", || match client.create_topic(topic, 1) {
            Err(ClientError::Broker { code, .. }) if code == ErrorCode::TopicAlreadyExists => {
                Ok(())
            }
            other => other,
        });
    }
    let before = settled(&mut client);
    let follower = before.iter().find(|r| r.role == "follower").unwrap().node;
    let index = follower as usize - 1;
    nodes[index].kill();
    write_backlog(&bootstrap, 300);

    let stop = Arc::new(AtomicBool::new(false));
    let steady = {
        let (bootstrap, stop) = (bootstrap.clone(), stop.clone());
        std::thread::spawn(move || steady_producer(bootstrap, stop))
    };
    let node = nodes.remove(index);
    nodes.insert(index, node.restart());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let caught_up = loop {
        let rows = settled(&mut client);
        let leader_commit = rows.iter().find(|r| r.role == "leader").unwrap().commit;
        let behind = rows.iter().find(|r| r.node == follower).unwrap();
        if behind.applied >= leader_commit {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never caught up: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, errors, mut latencies) = steady.join().unwrap();
    latencies.sort_unstable();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or(0);
    eprintln!(
        "caught up 300 MB in {took:?}; steady producer: {acknowledged} acknowledged, {} errors, \
         p99 {p99} µs",
        errors.len()
    );
    let leader = |rows: &[GroupStatus]| {
        let leader = rows.iter().find(|r| r.role == "leader").unwrap();
        (leader.node, leader.term)
    };
    assert_eq!(
        leader(&caught_up),
        leader(&before),
        "no election on the way"
    );
    assert!(
        errors.is_empty(),
        "the steady producer saw errors: {errors:?}"
    );
    assert!(
        acknowledged > 0,
        "the steady producer wrote through the catch-up"
    );
    // The target is 20 ms (met at 9-19 ms in 9 runs of 10 here). Three nodes and the
    // producer share two cores, so a loaded host pushed one CI run to 44 ms: the test
    // asserts only that the shard never stalls for long (with 64 appends in flight per
    // follower it was 75-155 ms, and seconds before catch-up left the Ready pass); the
    // number itself belongs to the benchmarks.
    assert!(
        p99 < 100_000,
        "the steady producer's p99 through the catch-up is {p99} µs (the target is 20 ms)"
    );
}
