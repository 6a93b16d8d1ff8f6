//! A single-node broker as a real process: produce with the client, kill -9, restart,
//! consume; graceful shutdown; bad input of every kind.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel::client::{ClientError, ClusterClient};
use keel::protocol::codec::{
    decode_response, encode_fetch_request, encode_produce_request, encode_record_batch,
    BatchProducer, PartitionBatchData, RecordData,
};
use keel::protocol::frame::{encode_frame, FrameDecoder};
use keel::protocol::wire::{Acks, ErrorCode};
use support::{free_ports, Broker};

fn records(first: u64, count: u64) -> Vec<RecordData> {
    (first..first + count)
        .map(|n| RecordData {
            value: format!("message-{n}").into_bytes(),
            ..Default::default()
        })
        .collect()
}

/// Every record of a partition, by fetching from 0 to the end.
fn consume_all(client: &mut ClusterClient, topic: &str, partition: u32) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let fetched = client
            .fetch(topic, partition, offset, 1 << 20, Duration::ZERO)
            .unwrap();
        if fetched.records.is_empty() {
            assert_eq!(offset, fetched.high_watermark);
            return out;
        }
        for record in fetched.records {
            assert_eq!(record.offset, offset, "offsets are dense and in order");
            out.push((
                record.offset,
                String::from_utf8(record.value.to_vec()).unwrap(),
            ));
            offset += 1;
        }
    }
}

#[test]
fn acknowledged_messages_survive_kill_9_in_order_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(2);
    let mut broker = Broker::start(dir.path(), port, 2);
    let mut client = ClusterClient::new(&broker.address(0));
    client.create_topic("events", 4).unwrap();

    // Producers on two partitions (one per shard) until the broker is killed under them.
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for partition in [0u32, 1] {
        let (address, stop) = (broker.address(0), stop.clone());
        producers.push(std::thread::spawn(move || {
            let mut client = ClusterClient::new(&address);
            let mut acknowledged = Vec::new();
            let mut next = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (batch, crc) =
                    encode_record_batch(BatchProducer::default(), 0, &records(next, 10));
                match client.produce("events", partition, &batch, crc, Acks::Quorum) {
                    Ok(offset) => acknowledged.push((offset, next)),
                    Err(_) => break, // the broker is gone: the last batch's fate is unknown
                }
                next += 10;
            }
            (partition, acknowledged, next)
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    broker.kill();
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    let broker = broker.restart();
    let mut client = ClusterClient::new(&broker.address(0));
    for (partition, acknowledged, attempted) in results {
        assert!(
            acknowledged.len() > 5,
            "the producer made progress before the kill"
        );
        let stored = consume_all(&mut client, "events", partition);
        // Acknowledged batches are there at their offsets, in order...
        for &(offset, first) in &acknowledged {
            for k in 0..10 {
                assert_eq!(
                    stored[(offset + k) as usize].1,
                    format!("message-{}", first + k)
                );
            }
        }
        // ...and nothing else but possibly the one batch in flight at the kill, once.
        let acked_records = acknowledged.len() * 10;
        assert!(
            stored.len() == acked_records || stored.len() == acked_records + 10,
            "{} stored",
            stored.len()
        );
        let values: Vec<u64> = stored
            .iter()
            .map(|(_, v)| v["message-".len()..].parse().unwrap())
            .collect();
        assert!(
            values.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, no duplicates"
        );
        assert!(values.last().copied().unwrap_or(0) < attempted + 10);
    }
}

#[test]
fn sigterm_flushes_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let mut broker = Broker::start(dir.path(), port, 1);
    let mut client = ClusterClient::new(&broker.address(0));
    client.create_topic("t", 1).unwrap();
    for n in 0..20 {
        let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records(n * 5, 5));
        client.produce("t", 0, &batch, crc, Acks::Leader).unwrap();
    }
    let status = broker
        .terminate(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let broker = broker.restart();
    let mut client = ClusterClient::new(&broker.address(0));
    assert_eq!(consume_all(&mut client, "t", 0).len(), 100);
}

/// Sends one raw frame payload and reads one answer.
fn raw_call(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(&encode_frame(payload).unwrap()).unwrap();
    read_answer(stream).expect("an answer")
}

fn read_answer(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut decoder = FrameDecoder::new(1 << 24);
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            return Some(frame);
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return None,
            Ok(count) => decoder.push(&buffer[..count]),
        }
    }
}

fn error_code(answer: &[u8]) -> ErrorCode {
    let response = decode_response(answer).unwrap();
    if let Some(error) = response.error() {
        return error.code();
    }
    let produce = response
        .body_as_produce_response()
        .expect("a produce answer");
    produce
        .results()
        .unwrap()
        .get(0)
        .error()
        .map_or(ErrorCode::None, |e| e.code())
}

#[test]
fn bad_input_gets_clear_errors_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(2);
    let broker = Broker::start(dir.path(), port, 2);
    let mut client = ClusterClient::new(&broker.address(0));
    client.create_topic("good", 2).unwrap();
    let mut stream = TcpStream::connect(broker.address(0)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    // Garbage inside a well-formed frame: an error answer, and the connection goes on.
    assert_eq!(
        error_code(&raw_call(&mut stream, b"this is not a flatbuffer message")),
        ErrorCode::MalformedFrame
    );
    // Unknown topic, unknown partition, a partition of the other shard, a corrupt batch.
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records(0, 3));
    let produce = |topic: &str, partition: u32, crc: u32| {
        encode_produce_request(
            7,
            topic,
            Acks::Quorum,
            5000,
            &[PartitionBatchData {
                partition,
                batch: &batch,
                crc32c: crc,
            }],
        )
    };
    assert_eq!(
        error_code(&raw_call(&mut stream, &produce("nope", 0, crc))),
        ErrorCode::UnknownTopic
    );
    assert_eq!(
        error_code(&raw_call(&mut stream, &produce("good", 9, crc))),
        ErrorCode::UnknownPartition
    );
    let both = [
        error_code(&raw_call(&mut stream, &produce("good", 0, crc))),
        error_code(&raw_call(&mut stream, &produce("good", 1, crc))),
    ];
    assert!(
        both.contains(&ErrorCode::WrongShard) && both.contains(&ErrorCode::None),
        "{both:?}"
    );
    let partition = if both[0] == ErrorCode::None { 0 } else { 1 };
    assert_eq!(
        error_code(&raw_call(&mut stream, &produce("good", partition, crc ^ 1))),
        ErrorCode::CorruptBatch
    );
    // Fetch past the end.
    let answer = raw_call(
        &mut stream,
        &encode_fetch_request(8, "good", partition, 1000, 1024, 0),
    );
    assert_eq!(error_code(&answer), ErrorCode::OffsetOutOfRange);
    // An empty frame breaks the framing: an error answer, then the connection is closed.
    // (An oversized one is skipped: see the test below.)
    stream.write_all(&0u32.to_le_bytes()).unwrap();
    assert_eq!(
        error_code(&read_answer(&mut stream).unwrap()),
        ErrorCode::MalformedFrame
    );
    assert!(
        read_answer(&mut stream).is_none(),
        "closed after a broken frame"
    );
    // A client that disconnects in the middle of a frame.
    let mut half = TcpStream::connect(broker.address(0)).unwrap();
    half.write_all(&100u32.to_le_bytes()).unwrap();
    half.write_all(b"only part of it").unwrap();
    drop(half);
    // Random bytes on a fresh connection.
    let mut noise = TcpStream::connect(broker.address(0)).unwrap();
    let bytes: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = noise.write_all(&bytes);
    drop(noise);

    // The broker still serves everyone.
    let mut client = ClusterClient::new(&broker.address(1));
    let offset = client
        .produce("good", partition, &batch, crc, Acks::Quorum)
        .unwrap();
    let fetched = client
        .fetch("good", partition, offset, 1 << 20, Duration::ZERO)
        .unwrap();
    assert_eq!(fetched.records.len(), 3);
    let error = client
        .produce("missing", 0, &batch, crc, Acks::Quorum)
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::GaveUp { .. } | ClientError::Broker { .. }
        ),
        "{error}"
    );
}

/// Issue 18 (broker side): a frame above `max_frame_bytes` is answered `FrameTooLarge`
/// (naming the limit and the size), its bytes are skipped exactly, and the connection
/// goes on: the produce right behind it is answered, and stored at offset 0 although
/// the skipped bytes are full of produce requests (none of them was read).
#[test]
fn an_oversized_frame_is_answered_and_skipped_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), free_ports(1), 1);
    let mut client = ClusterClient::new(&broker.address(0));
    client.create_topic("big", 1).unwrap();
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records(0, 3));
    let produce = |correlation_id: u64| {
        let request = encode_produce_request(
            correlation_id,
            "big",
            Acks::Quorum,
            5000,
            &[PartitionBatchData {
                partition: 0,
                batch: &batch,
                crc32c: crc,
            }],
        );
        encode_frame(&request).unwrap()
    };
    let limit = keel::config::DEFAULT_MAX_FRAME_BYTES as usize;
    let oversize = limit + (1 << 20);
    let mut stream_bytes = (oversize as u32).to_le_bytes().to_vec();
    let filler = produce(99);
    stream_bytes.extend(filler.iter().cycle().take(oversize));
    stream_bytes.extend(produce(7));
    let mut stream = TcpStream::connect(broker.address(0)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(&stream_bytes)
        .expect("the broker reads the whole oversized frame");
    let mut decoder = FrameDecoder::new(1 << 24);
    let mut next_answer = |stream: &mut TcpStream| loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            return frame;
        }
        let mut buffer = [0u8; 4096];
        match stream.read(&mut buffer) {
            Ok(0) => panic!("the broker closed the connection"),
            Ok(count) => decoder.push(&buffer[..count]),
            Err(error) => panic!("no answer: {error}"),
        }
    };
    let refusal = next_answer(&mut stream);
    let response = decode_response(&refusal).unwrap();
    let error = response.error().expect("an error answer");
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);
    let message = error.message().unwrap_or_default();
    assert!(
        message.contains(&oversize.to_string()) && message.contains(&limit.to_string()),
        "{message}"
    );
    let answer = next_answer(&mut stream);
    assert_eq!(decode_response(&answer).unwrap().correlation_id(), 7);
    assert_eq!(error_code(&answer), ErrorCode::None);
    let offset = decode_response(&answer)
        .unwrap()
        .body_as_produce_response()
        .and_then(|p| p.results())
        .map(|r| r.get(0).base_offset());
    assert_eq!(
        offset,
        Some(0),
        "nothing inside the skipped frame was stored"
    );
    // And the connection keeps serving.
    stream.write_all(&produce(8)).unwrap();
    let answer = next_answer(&mut stream);
    assert_eq!(error_code(&answer), ErrorCode::None);
}

#[test]
fn a_batching_producer_and_a_consumer_round_trip_across_shards() {
    use keel::client::{Consumer, Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(2);
    let broker = Broker::start(dir.path(), port, 2);
    let mut admin = ClusterClient::new(&broker.address(0));
    admin.create_topic("stream", 4).unwrap();
    let producer = Producer::new(ProducerConfig::new(&broker.address(1)));
    let mut deliveries = Vec::new();
    for n in 0..4000u32 {
        let partition = n % 4;
        let record = RecordData {
            value: format!("{partition}:{n}").into_bytes(),
            ..Default::default()
        };
        deliveries.push((partition, n, producer.send("stream", partition, record)));
    }
    producer.flush();
    // Every record acknowledged, offsets dense per partition in send order.
    let mut next = [0u64; 4];
    for (partition, _, delivery) in &deliveries {
        let offset = delivery.wait().unwrap().offset().unwrap();
        assert_eq!(offset, next[*partition as usize], "partition {partition}");
        next[*partition as usize] += 1;
    }
    drop(producer);
    let partitions: Vec<(u32, u64)> = (0..4).map(|p| (p, 0)).collect();
    let mut consumer = Consumer::new(&broker.address(0), "stream", &partitions);
    let mut seen = vec![Vec::new(); 4];
    while seen.iter().map(Vec::len).sum::<usize>() < 4000 {
        for item in consumer.poll(Duration::from_millis(200)).unwrap() {
            seen[item.partition as usize]
                .push(String::from_utf8(item.record.value.to_vec()).unwrap());
        }
    }
    for partition in 0..4u32 {
        let expected: Vec<String> = (0..4000u32)
            .filter(|n| n % 4 == partition)
            .map(|n| format!("{partition}:{n}"))
            .collect();
        assert_eq!(seen[partition as usize], expected);
    }
    assert!(
        consumer.poll(Duration::from_millis(50)).unwrap().is_empty(),
        "nothing more"
    );
}

#[test]
fn a_full_disk_refuses_writes_clearly_keeps_serving_reads_and_loses_nothing_acknowledged() {
    if !support::is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let disk = support::SmallDisk::mount(&root.path().join("small"), "24m");
    let data = disk.path.join("data");
    let port = free_ports(1);
    let mut broker = Broker::start_with_segments(&data, port, 1, "4MiB");
    let mut client = ClusterClient::new(&broker.address(0));
    client.create_topic("fill", 1).unwrap();
    let big: Vec<RecordData> = (0..64)
        .map(|_| RecordData {
            value: vec![7u8; 1024],
            ..Default::default()
        })
        .collect();
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &big);
    let mut acknowledged = 0u64;
    let error = loop {
        match client.produce("fill", 0, &batch, crc, Acks::Quorum) {
            Ok(offset) => {
                assert_eq!(offset, acknowledged * 64);
                acknowledged += 1;
            }
            Err(error) => break error,
        }
        assert!(acknowledged < 10_000, "a 24 MiB disk never filled");
    };
    match &error {
        ClientError::Broker { code, .. } => assert_eq!(*code, ErrorCode::StorageFull, "{error}"),
        other => panic!("expected StorageFull, got {other}"),
    }
    // Reads go on; so do other requests.
    let fetched = client.fetch("fill", 0, 0, 1 << 20, Duration::ZERO).unwrap();
    assert!(!fetched.records.is_empty());
    assert_eq!(client.list_topics().unwrap().len(), 1);
    // With room again and a restart, every acknowledged record is there.
    broker.kill();
    disk.resize("256m");
    let broker = broker.restart();
    let mut client = ClusterClient::new(&broker.address(0));
    let stored = consume_all(&mut client, "fill", 0);
    assert!(
        stored.len() as u64 >= acknowledged * 64,
        "{} < {}",
        stored.len(),
        acknowledged * 64
    );
}

#[test]
fn the_cli_creates_produces_and_consumes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(2);
    let broker = Broker::start(dir.path(), port, 2);
    let keel = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(args)
            .args(["--bootstrap", &broker.address(1)])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    keel(&["topic", "create", "cli", "--partitions", "3"]);
    assert!(keel(&["topic", "list"]).contains("cli\t3 partitions"));
    keel(&[
        "produce",
        "cli",
        "--partition",
        "2",
        "--generate",
        "250",
        "--size",
        "20",
    ]);
    let consumed = keel(&["consume", "cli", "--partition", "2", "--offsets"]);
    let lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines.len(), 250);
    assert!(lines[0].starts_with("0\tmessage-0") && lines[249].starts_with("249\tmessage-249"));
    keel(&["topic", "delete", "cli"]);
    assert!(!keel(&["topic", "list"]).contains("cli"));
}

#[test]
fn a_second_broker_on_a_port_in_use_refuses_to_start() {
    let root = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let _first = Broker::start(&root.path().join("first"), port, 1);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["broker", "--port", &port.to_string(), "--shards", "1"])
        .args(["--io-memory", "512KiB", "--segment-size", "4MiB"])
        .arg("--data-dir")
        .arg(root.path().join("second"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Address already in use"), "{stderr}");
}

#[test]
fn retention_keeps_a_single_node_within_budget_across_restarts_and_needs_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let extra = ["--retention-bytes".to_string(), "8MiB".to_string()];
    let mut broker = Broker::start_with_args(dir.path(), port, 1, "4MiB", &extra);
    let mut client = ClusterClient::new(&broker.address(0));
    client.create_topic("rolling", 1).unwrap();
    let value = vec![b'x'; 1000];
    let mut sent = 0u64;
    while sent < 24_000 {
        let records: Vec<RecordData> = (0..100)
            .map(|_| RecordData {
                value: value.clone(),
                ..Default::default()
            })
            .collect();
        let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
        assert_eq!(
            client
                .produce("rolling", 0, &batch, crc, Acks::Quorum)
                .unwrap(),
            sent
        );
        sent += 100;
    }
    let log_bytes = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir.join("group-0"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".segment"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while log_bytes(dir.path()) > 12 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A restart starts from the snapshot at the cut and goes on at the same offsets.
    broker = broker.restart();
    let mut client = ClusterClient::new(&broker.address(0));
    let records = records(0, 1);
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
    assert_eq!(
        client
            .produce("rolling", 0, &batch, crc, Acks::Quorum)
            .unwrap(),
        sent
    );
    let fetched = client
        .fetch("rolling", 0, sent, 1 << 20, Duration::ZERO)
        .unwrap();
    assert_eq!(fetched.records.len(), 1);
    // Without that snapshot the state cannot be rebuilt: the node refuses to start.
    assert!(broker.terminate(Duration::from_secs(10)).is_some());
    std::fs::remove_dir_all(dir.path().join("group-0.snapshots")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["broker", "--port", &port.to_string(), "--shards", "1"])
        .args(["--io-memory", "512KiB", "--segment-size", "4MiB"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot rebuild its state"), "{stderr}");
}

#[test]
fn retention_by_age_removes_sealed_segments_once_they_are_old() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let extra = ["--retention-age".to_string(), "5s".to_string()];
    let broker = Broker::start_with_args(dir.path(), port, 1, "4MiB", &extra);
    let mut client = ClusterClient::new(&broker.address(0));
    client.create_topic("aging", 1).unwrap();
    let value = vec![b'y'; 1000];
    let mut sent = 0u64;
    while sent < 10_000 {
        let records: Vec<RecordData> = (0..100)
            .map(|_| RecordData {
                value: value.clone(),
                ..Default::default()
            })
            .collect();
        let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
        client
            .produce("aging", 0, &batch, crc, Acks::Quorum)
            .unwrap();
        sent += 100;
    }
    // Young segments stay.
    assert_eq!(
        client
            .fetch("aging", 0, 0, 1 << 16, Duration::ZERO)
            .unwrap()
            .records[0]
            .offset,
        0
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match client.fetch("aging", 0, 0, 1 << 16, Duration::ZERO) {
            Err(ClientError::Broker { code, .. }) if code == ErrorCode::OffsetOutOfRange => break,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "old segments stayed: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    // The active segment's records are still there.
    let last = client
        .fetch("aging", 0, sent - 1, 1 << 16, Duration::ZERO)
        .unwrap();
    assert_eq!(last.records.len(), 1);
}

/// Issue 11, item 18: a record over the broker's batch limit is refused by the client
/// before it is sent (RecordTooLarge, naming the limit and the size); the CLI says so for
/// that line, goes on with the next lines, and exits with status 1 (before: the 26 MB
/// frame made the broker close the connection, "unacknowledged ...: Broken pipe", and
/// nothing after it was sent).
#[test]
fn an_oversized_record_is_refused_before_sending_and_the_rest_goes_on() {
    use keel::client::{Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let broker = Broker::start(dir.path(), port, 1);
    let mut client = ClusterClient::new(&broker.address(0));
    support::retry("create topic", || client.create_topic("big", 2));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["produce", "big", "--bootstrap", &broker.address(0)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let huge = "x".repeat(26_000_000);
    let writer = std::thread::spawn(move || {
        let _ = writeln!(stdin, "before\n{huge}\nafter-1\nafter-2");
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("RecordTooLarge") && stderr.contains("1048512") && stderr.contains("26000"),
        "{stderr}"
    );
    let values: Vec<String> = consume_all(&mut client, "big", 0)
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    assert_eq!(values, ["before", "after-1", "after-2"]);

    let mut config = ProducerConfig::new(&broker.address(0));
    config.delivery_timeout = Duration::from_secs(2);
    let producer = Producer::new(config);
    let value = |text: &str| RecordData {
        value: text.as_bytes().to_vec(),
        ..Default::default()
    };
    let small = producer.send("big", 1, value("small"));
    let oversized = producer.send("big", 1, value(&"y".repeat(2_000_000)));
    let last = producer.send("big", 1, value("last"));
    match oversized.wait() {
        Err(error @ ClientError::RecordTooLarge { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("1048512") && message.contains("2000"),
                "{message}"
            );
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert!(small.wait().is_ok() && last.wait().is_ok());
    drop(producer);
    let values: Vec<String> = consume_all(&mut client, "big", 1)
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    assert_eq!(values, ["small", "last"]);
}

fn value(text: &str) -> RecordData {
    RecordData {
        value: text.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Issue 11, item 16 (a): a batch whose answer does not come within the delivery timeout
/// (the broker is paused with the request in its socket) may be stored — and here it is,
/// once the broker resumes. The producer must not reuse its sequence number: it starts a
/// new epoch, and every later record is stored (before: the sequence was rewound, and
/// every later batch of the partition was refused as out of order, forever).
#[test]
fn a_batch_stored_after_its_delivery_timeout_does_not_wedge_the_partition() {
    use keel::client::{Delivered, Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let broker = Broker::start(dir.path(), port, 1);
    let mut client = ClusterClient::new(&broker.address(0));
    support::retry("create topic", || client.create_topic("wedge", 1));
    let mut config = ProducerConfig::new(&broker.address(0));
    config.delivery_timeout = Duration::from_secs(1);
    let producer = Producer::new(config);
    assert_eq!(
        producer.send("wedge", 0, value("w0")).wait().unwrap(),
        Delivered::Stored(0)
    );
    broker.signal("STOP");
    let unknown = producer.send("wedge", 0, value("w1")).wait();
    broker.signal("CONT");
    assert!(unknown.is_err(), "{unknown:?}");
    // The paused broker takes the request it had received once it runs again.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while consume_all(&mut client, "wedge", 0).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "w1 never stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    for n in 2..5 {
        let result = producer.send("wedge", 0, value(&format!("w{n}"))).wait();
        assert_eq!(result.unwrap(), Delivered::Stored(n), "w{n}");
    }
    let values: Vec<String> = consume_all(&mut client, "wedge", 0)
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    assert_eq!(values, ["w0", "w1", "w2", "w3", "w4"]);
}

/// Issue 11, item 11: a partition that forgot a producer (here: its topic was deleted and
/// created again) refuses its next batch as UnknownProducer (its sequence is not 0); the
/// producer starts a new epoch and the record is stored (with the broker's refusal alone,
/// the record failed).
#[test]
fn a_producer_the_partition_forgot_starts_a_new_epoch_and_goes_on() {
    use keel::client::{Delivered, Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let _broker = Broker::start(dir.path(), port, 1);
    let mut client = ClusterClient::new(&_broker.address(0));
    support::retry("create topic", || client.create_topic("again", 1));
    let mut config = ProducerConfig::new(&_broker.address(0));
    config.delivery_timeout = Duration::from_secs(5);
    let producer = Producer::new(config);
    for n in 0..3 {
        let result = producer.send("again", 0, value(&format!("a{n}"))).wait();
        assert_eq!(result.unwrap(), Delivered::Stored(n));
    }
    client.delete_topic("again").unwrap();
    support::retry("create topic", || client.create_topic("again", 1));
    let result = producer.send("again", 0, value("b0")).wait();
    assert_eq!(result.unwrap(), Delivered::Stored(0));
    let values: Vec<String> = consume_all(&mut client, "again", 0)
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    assert_eq!(values, ["b0"]);
}

/// A fetch asking for more than a frame can hold (64 MiB, over the 8 MiB frame limit) is
/// answered with the batches that fit in one frame, and the consumer goes on from there.
/// Before: the broker built one answer of every batch up to `max_bytes`, larger than any
/// client accepts (the client's decoder refused the frame and the fetch failed).
#[test]
fn a_fetch_asking_for_more_than_a_frame_holds_is_answered_within_the_frame_limit() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let _broker = Broker::start_with_segments(dir.path(), port, 1, "64MiB");
    let mut client = ClusterClient::new(&_broker.address(0));
    client.create_topic("wide", 1).unwrap();
    // 12 batches of ~1 MB: 12 MB, more than one 8 MiB frame.
    for n in 0..12u8 {
        let record = RecordData {
            value: vec![n; 1_000_000],
            ..Default::default()
        };
        let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &[record]);
        client
            .produce("wide", 0, &batch, crc, Acks::Quorum)
            .unwrap();
    }
    let mut offset = 0;
    let mut fetches = 0;
    while offset < 12 {
        let fetched = client
            .fetch("wide", 0, offset, 64 << 20, Duration::ZERO)
            .expect("a fetch within the frame limit");
        assert!(!fetched.records.is_empty());
        for record in fetched.records {
            assert_eq!(record.offset, offset);
            assert_eq!(record.value, vec![offset as u8; 1_000_000]);
            offset += 1;
        }
        fetches += 1;
    }
    assert_eq!(
        fetches, 2,
        "8 MiB holds 8 of the 12 batches, the next fetch the rest"
    );
}

/// Issue 11, item 14, on a node with two shards: a deleted topic's partitions on the
/// shard that is not the controller go with the deletion (an entry the data group's
/// leader copies into its own log), a topic created again under the same name starts
/// empty, and a kill -9 and restart replays the same: the old records never come back.
#[test]
fn a_deleted_topic_is_gone_from_every_shard_and_stays_gone_after_a_restart() {
    use keel::client::{Delivered, Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(2);
    let broker = Broker::start(dir.path(), port, 2);
    let mut client = ClusterClient::new(&broker.address(0));
    support::retry("create topic", || client.create_topic("doomed", 2));
    let producer = Producer::new(ProducerConfig::new(&broker.address(0)));
    for partition in 0..2 {
        for n in 0..3 {
            let result = producer
                .send("doomed", partition, value(&format!("old{n}")))
                .wait();
            assert_eq!(result.unwrap(), Delivered::Stored(n));
        }
    }
    client.delete_topic("doomed").unwrap();
    support::retry("create topic", || client.create_topic("doomed", 2));
    let producer = Producer::new(ProducerConfig::new(&broker.address(0)));
    for partition in 0..2 {
        let stored = support::retry("produce to the new topic", || {
            producer.send("doomed", partition, value("new")).wait()
        });
        assert_eq!(stored, Delivered::Stored(0), "partition {partition}");
    }
    let read = |client: &mut ClusterClient| -> Vec<Vec<(u64, String)>> {
        (0..2).map(|p| consume_all(client, "doomed", p)).collect()
    };
    let wanted = vec![vec![(0, "new".to_string())]; 2];
    assert_eq!(read(&mut client), wanted, "before the restart");
    let broker = broker.restart();
    let mut client = ClusterClient::new(&broker.address(0));
    for partition in 0..2 {
        support::retry("fetch after the restart", || {
            client.fetch("doomed", partition, 0, 1 << 20, Duration::ZERO)
        });
    }
    assert_eq!(read(&mut client), wanted, "after the restart");
}
