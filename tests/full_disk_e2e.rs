//! A single node whose disk fills up, as a real process. Regression test for a reported
//! defect: after a restart on a full disk the node exited at start (`fallocate ...: No
//! space left on device`) and nothing could be read until an operator freed space by hand.
//!
//! What it checks, on a 48 MiB tmpfs that also holds 9 MiB of files to delete later:
//! 1. Producing 1 KiB records until the disk is full ends in a clear `StorageFull`
//!    refusal, not a crash or a dropped connection; the node keeps running.
//! 2. While it runs, every acknowledged record reads back at its offset with its bytes,
//!    and nothing the broker refused (P1, P5, P6).
//! 3. The node restarts on the full disk, serves the same reads, and refuses writes with
//!    `StorageFull` (it takes them once there is room for its space reserve and a segment
//!    more, `shard::no_space`): (a) after SIGTERM, with 1 MiB free (room for small files,
//!    not for a 4 MiB segment: the reported case), (b) after kill -9, with nothing free.
//! 4. Once the files that filled the disk are deleted, a produce succeeds within 15 s
//!    without a restart, and reads return the acknowledged records followed by the new one
//!    (P8).
//!
//! A second test: a node whose disk filled frees it itself by retention (by age) and
//! takes writes again, with no operator.
//!
//! Needs root (it mounts a tmpfs, which accepts O_DIRECT and returns ENOSPC when full);
//! without root it says so and passes without checking anything.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use keel::client::{ClientError, ClusterClient};
use keel::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use keel::protocol::wire::{Acks, ErrorCode};
use support::{free_ports, Broker, SmallDisk};

const TOPIC: &str = "full";
const RECORD_SIZE_BYTES: usize = 1024;
const RECORDS_PER_BATCH: u64 = 64;
/// More than a 48 MiB disk can hold: reaching it means the disk never filled.
const MAX_BATCHES: u64 = 2_000;
/// How long a refusal or an answer may take; far above what either needs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the node may take to notice that space was freed.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Record `n`'s value: 1 KiB that differs from every other record's.
fn record_value(n: u64) -> Vec<u8> {
    format!("record-{n:08}|")
        .bytes()
        .cycle()
        .take(RECORD_SIZE_BYTES)
        .collect()
}

/// The batch of records `first..first + count`.
fn batch(first: u64, count: u64) -> (Vec<u8>, u32) {
    let records: Vec<RecordData> = (first..first + count)
        .map(|n| RecordData {
            value: record_value(n),
            ..Default::default()
        })
        .collect();
    encode_record_batch(BatchProducer::default(), 0, &records)
}

fn connect(broker: &Broker) -> ClusterClient {
    let mut client = ClusterClient::new(&broker.address(0));
    client.set_request_timeout(REQUEST_TIMEOUT);
    client
}

/// Panics unless `error` is the broker's StorageFull refusal and the broker still runs.
fn assert_storage_full(error: &ClientError, broker: &mut Broker, what: &str) {
    let running = broker.is_running();
    match error {
        ClientError::Broker { code, .. } if *code == ErrorCode::StorageFull && running => {}
        other => panic!(
            "{what}: expected a StorageFull refusal from a running broker, got {other} \
             (broker running: {running})"
        ),
    }
}

/// Produces 64-record batches until one is refused; returns how many records were
/// acknowledged and the refusal.
fn produce_until_refused(client: &mut ClusterClient, from: u64) -> (u64, ClientError) {
    let mut acknowledged = from;
    for _ in 0..MAX_BATCHES {
        let (bytes, crc) = batch(acknowledged, RECORDS_PER_BATCH);
        match client.produce(TOPIC, 0, &bytes, crc, Acks::Quorum) {
            Ok(offset) => {
                assert_eq!(offset, acknowledged, "offsets are dense from 0");
                acknowledged += RECORDS_PER_BATCH;
            }
            Err(error) => return (acknowledged, error),
        }
    }
    panic!("a 48 MiB disk never filled ({MAX_BATCHES} batches of 64 KiB acknowledged)");
}

/// Every record of the partition as (offset, value), fetched from 0 to the high watermark.
fn read_all(client: &mut ClusterClient) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let offset = out.len() as u64;
        let fetched = client
            .fetch(TOPIC, 0, offset, 1 << 20, Duration::ZERO)
            .unwrap_or_else(|error| panic!("fetch from offset {offset}: {error}"));
        if fetched.records.is_empty() {
            assert_eq!(
                offset, fetched.high_watermark,
                "read up to the high watermark"
            );
            return out;
        }
        out.extend(
            fetched
                .records
                .into_iter()
                .map(|r| (r.offset, r.value.to_vec())),
        );
    }
}

/// Asserts that the partition holds exactly records `0..count`, each at its offset with its
/// bytes: every acknowledged one (P1, P5) and nothing that was refused (P6).
fn assert_reads_exactly(client: &mut ClusterClient, count: u64, when: &str) {
    let stored = read_all(client);
    for (expected_offset, (offset, value)) in stored.iter().enumerate() {
        let expected_offset = expected_offset as u64;
        assert_eq!(
            *offset, expected_offset,
            "{when}: offsets are dense and in order"
        );
        assert!(
            expected_offset < count,
            "{when}: offset {offset} is readable, but only {count} records were acknowledged \
             (a refused write became visible: P6)"
        );
        assert!(
            *value == record_value(expected_offset),
            "{when}: offset {offset} holds other bytes than were acknowledged (P5)"
        );
    }
    assert_eq!(
        stored.len() as u64,
        count,
        "{when}: acknowledged records missing (P1)"
    );
}

/// Restarts the broker and asserts it starts, serves every acknowledged record, and
/// refuses writes with StorageFull (after any its active segment still takes while its
/// space reserve is held). Returns the broker and the records acknowledged in all.
fn restart_on_full_disk(
    broker: Broker,
    acknowledged: u64,
    how: &str,
    stderr: &Path,
) -> (Broker, u64) {
    let started = Instant::now();
    let mut broker = broker.try_restart(stderr).unwrap_or_else(|why| {
        panic!("after {how}, a node on a full disk must start and serve reads: {why}")
    });
    eprintln!("restarted after {how} in {:?}", started.elapsed());
    let mut client = connect(&broker);
    assert_reads_exactly(&mut client, acknowledged, &format!("after {how}"));
    let (acknowledged, error) = produce_until_refused(&mut client, acknowledged);
    eprintln!("{acknowledged} acknowledged in all when writes were refused again: {error}");
    assert_storage_full(&error, &mut broker, &format!("a produce after {how}"));
    assert_reads_exactly(
        &mut client,
        acknowledged,
        &format!("after {how} and a refusal"),
    );
    (broker, acknowledged)
}

/// Produces record `next` until it is taken (refusals must be StorageFull from a running
/// broker) and returns its offset; panics if it is still refused after `limit`.
fn produce_once_taken(
    client: &mut ClusterClient,
    broker: &mut Broker,
    next: u64,
    limit: Duration,
    when: &str,
) -> u64 {
    let (bytes, crc) = batch(next, 1);
    let deadline = Instant::now() + limit;
    loop {
        match client.produce(TOPIC, 0, &bytes, crc, Acks::Quorum) {
            Ok(offset) => return offset,
            Err(error) => {
                assert_storage_full(&error, broker, &format!("a produce {when}"));
                assert!(
                    Instant::now() < deadline,
                    "writes still refused {limit:?} {when}: {error}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Free bytes on the file system holding `path` (as `df` reports them).
fn free_bytes(path: &Path) -> u64 {
    let output = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .expect("df");
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text.lines().last().unwrap_or_default().trim();
    last.parse()
        .unwrap_or_else(|_| panic!("df's output: {text}"))
}

/// Writes `path` until the file system has no room left (ENOSPC).
fn fill_remaining(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create the top-up file");
    let chunk = vec![0u8; 4096];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => return,
            Ok(count) => written += count as u64,
            Err(error) if error.raw_os_error() == Some(28) => return,
            Err(error) => panic!("writing the top-up file: {error}"),
        }
        assert!(written < 64 << 20, "the top-up file never filled the disk");
    }
}

#[test]
fn a_node_on_a_full_disk_restarts_serves_reads_and_takes_writes_once_space_is_freed() {
    if !support::is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let test_started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&root.path().join("small"), "48m");
    // Space to give back later: 1 MiB (room for small files, not for a 4 MiB segment) and
    // 8 MiB (room for new segments).
    let slack = disk.path.join("slack");
    std::fs::write(&slack, vec![0u8; 1 << 20]).expect("write the slack file");
    let filler = disk.path.join("filler");
    std::fs::write(&filler, vec![0u8; 8 << 20]).expect("write the filler file");
    let stderr = root.path().join("broker.stderr");

    // 1. Fill the disk.
    let mut broker = Broker::start_with_segments(&disk.path.join("data"), free_ports(1), 1, "4MiB");
    let mut client = connect(&broker);
    client.create_topic(TOPIC, 1).unwrap();
    let (acknowledged, error) = produce_until_refused(&mut client, 0);
    eprintln!(
        "disk full after {acknowledged} acknowledged records ({} bytes free): {error}",
        free_bytes(&disk.path)
    );
    assert!(
        acknowledged > 0,
        "nothing acknowledged before the disk filled"
    );
    assert_storage_full(&error, &mut broker, "the produce that found the disk full");

    // 2. Reads while it runs.
    assert_reads_exactly(&mut client, acknowledged, "while running on a full disk");

    // 3a. A clean stop, and a restart with 1 MiB free: room for small files but not for a
    // new segment (the reported case: the start failed in fallocate).
    let status = broker.terminate(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "the broker did not stop within 10 s of SIGTERM"
    );
    fill_remaining(&disk.path.join("top-up-1"));
    std::fs::remove_file(&slack).expect("delete the slack file");
    eprintln!(
        "stopped with SIGTERM ({status:?}); {} bytes free",
        free_bytes(&disk.path)
    );
    let (mut broker, acknowledged) =
        restart_on_full_disk(broker, acknowledged, "SIGTERM and a restart", &stderr);

    // 3b. kill -9, and a restart with no room at all (not even for a 4 KiB file).
    fill_remaining(&disk.path.join("top-up-2"));
    eprintln!("topped up: {} bytes free", free_bytes(&disk.path));
    assert_reads_exactly(&mut connect(&broker), acknowledged, "after the top-up");
    assert!(
        broker.is_running(),
        "the broker exited when the disk filled up again"
    );
    let (mut broker, acknowledged) =
        restart_on_full_disk(broker, acknowledged, "kill -9 and a restart", &stderr);

    // 4. Free space (the shard needs room for its reserve and a segment more): writes come
    // back without a restart.
    for file in [
        filler,
        disk.path.join("top-up-1"),
        disk.path.join("top-up-2"),
    ] {
        std::fs::remove_file(&file).expect("delete a file that filled the disk");
    }
    let mut client = connect(&broker);
    let offset = produce_once_taken(
        &mut client,
        &mut broker,
        acknowledged,
        RECOVERY_TIMEOUT,
        "after space was freed",
    );
    assert_eq!(
        offset, acknowledged,
        "the new record follows the acknowledged ones"
    );
    assert_reads_exactly(&mut client, acknowledged + 1, "after space was freed");
    eprintln!("passed in {:?}", test_started.elapsed());
}

/// A node whose disk filled frees it itself: with retention by age (3 s), the shard that
/// stopped on ENOSPC releases its space reserve, restarts, refuses records with
/// StorageFull, and its retention removes the aged segments; then it takes writes again,
/// without a restart and without anyone deleting a file. Before, a replica stopped by a
/// full disk ran no retention, and writes stayed refused until an operator freed space.
#[test]
fn a_full_disk_is_freed_by_retention_and_writes_resume_without_an_operator() {
    if !support::is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&root.path().join("small"), "48m");
    // Other data on the disk: about 24 MiB stay for the node (a 4 MiB reserve and about
    // five 4 MiB segments).
    std::fs::write(disk.path.join("other"), vec![0u8; 24 << 20]).expect("write other data");
    let args = ["--retention-age".to_string(), "3s".to_string()];
    let mut broker =
        Broker::start_with_args(&disk.path.join("data"), free_ports(1), 1, "4MiB", &args);
    let mut client = connect(&broker);
    client.create_topic(TOPIC, 1).unwrap();
    let filling = Instant::now();
    let (acknowledged, error) = produce_until_refused(&mut client, 0);
    eprintln!(
        "disk full after {acknowledged} records in {:?} ({} bytes free): {error}",
        filling.elapsed(),
        free_bytes(&disk.path)
    );
    assert_storage_full(&error, &mut broker, "the produce that found the disk full");
    let offset = produce_once_taken(
        &mut client,
        &mut broker,
        acknowledged,
        Duration::from_secs(30),
        "after the disk filled, with retention by age 3 s",
    );
    eprintln!(
        "writes resumed {:?} after the disk filled ({} bytes free)",
        filling.elapsed(),
        free_bytes(&disk.path)
    );
    assert_eq!(offset, acknowledged, "the new record follows the old ones");
    let fetched = client
        .fetch(TOPIC, 0, offset, 1 << 20, Duration::ZERO)
        .expect("fetch the new record");
    let values: Vec<_> = fetched
        .records
        .iter()
        .map(|r| (r.offset, r.value.to_vec()))
        .collect();
    assert_eq!(
        values,
        [(offset, record_value(offset))],
        "the new record reads back"
    );
}
