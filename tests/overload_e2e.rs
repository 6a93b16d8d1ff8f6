//! A broker given more than it can take, as a real process: a flood of acks=none produce
//! requests of 1 MiB batches, and a client that sends large requests without reading its
//! answers. The node stays responsive and alive, refuses what it cannot take with clear
//! errors, and holds a bounded amount of memory for what it has read.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::client::ClusterClient;
use keel::protocol::codec::{
    decode_response, encode_fetch_request, encode_metadata_request, encode_produce_request,
    encode_record_batch, BatchProducer, PartitionBatchData, RecordData,
};
use keel::protocol::frame::{encode_frame, FrameDecoder};
use keel::protocol::wire::{Acks, ErrorCode};
use support::{free_ports, retry, start_cluster_with_segments, Broker};

/// A batch of one record of `value_bytes` bytes.
fn batch_of_bytes(value_bytes: usize) -> (Vec<u8>, u32) {
    let record = RecordData {
        value: vec![b'f'; value_bytes],
        ..Default::default()
    };
    encode_record_batch(BatchProducer::default(), 0, &[record])
}

/// Bytes of a record value that makes a batch just under the broker's default 1 MiB
/// batch limit.
const NEAR_MIB_VALUE_BYTES: usize = 1_000_000;

/// What one flooding connection saw.
#[derive(Debug, Default)]
struct FloodReport {
    /// Requests written whole.
    sent: u64,
    /// Answers by outcome: "ok" or the error code.
    answers: BTreeMap<String, u64>,
    /// Why the connection ended before every request was answered, if it did.
    dropped: Option<String>,
    /// Why sending ended before the flood was over, if it did.
    stalled: Option<String>,
}

/// How long a flood connection waits, once the flood is over, for the broker to read the
/// rest of its last request.
const STALL_LIMIT: Duration = Duration::from_secs(5);

/// The outcome of one produce answer: "ok" or its error code.
fn produce_outcome(answer: &[u8]) -> String {
    match answer_code(answer) {
        ErrorCode::None => "ok".to_string(),
        code => format!("{code:?}"),
    }
}

/// Sends acks=none produce requests of ~1 MiB batches to `address` as fast as the broker
/// reads them until `stop`, reading every answer on another thread; then waits (bounded)
/// for the answers still due.
fn flood(address: &str, topic: &str, stop: &AtomicBool) -> FloodReport {
    let (batch, crc32c) = batch_of_bytes(NEAR_MIB_VALUE_BYTES);
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut reader = stream.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let writing_done = Arc::new(AtomicBool::new(false));
    let answers_thread = {
        let (sent, writing_done) = (sent.clone(), writing_done.clone());
        std::thread::spawn(move || {
            let mut report = FloodReport::default();
            let mut decoder = FrameDecoder::new(8 << 20);
            let mut buffer = vec![0u8; 64 * 1024];
            let mut answered = 0u64;
            let mut deadline = None;
            loop {
                while let Ok(Some(frame)) = decoder.next_frame() {
                    *report.answers.entry(produce_outcome(&frame)).or_default() += 1;
                    answered += 1;
                }
                if writing_done.load(Ordering::Relaxed) {
                    if answered >= sent.load(Ordering::Relaxed) {
                        break;
                    }
                    let due = *deadline.get_or_insert(Instant::now() + Duration::from_secs(10));
                    if Instant::now() > due {
                        report.dropped = Some("answers missing 10 s after the flood".into());
                        break;
                    }
                }
                match reader.read(&mut buffer) {
                    Ok(0) => {
                        report.dropped = Some("the broker closed the connection".into());
                        break;
                    }
                    Ok(count) => decoder.push(&buffer[..count]),
                    Err(error)
                        if matches!(
                            error.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(error) => {
                        report.dropped = Some(format!("read failed: {error}"));
                        break;
                    }
                }
            }
            report
        })
    };
    // Writes time out so that a broker that stops reading for good fails the test
    // instead of hanging it.
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut stalled = None;
    let mut id = 0u64;
    'flooding: while !stop.load(Ordering::Relaxed) {
        id += 1;
        let batches = [PartitionBatchData {
            partition: 0,
            batch: &batch,
            crc32c,
        }];
        let frame = encode_frame(&encode_produce_request(
            id,
            topic,
            Acks::None,
            5000,
            &batches,
        ))
        .unwrap();
        let (mut written, mut progress_at) = (0, Instant::now());
        while written < frame.len() {
            match stream.write(&frame[written..]) {
                Ok(count) => (written, progress_at) = (written + count, Instant::now()),
                // The broker reads no more for now (back-pressure): wait, but not forever
                // once the flood is over.
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) && progress_at.elapsed() > STALL_LIMIT {
                        stalled = Some(format!("the broker read nothing for {STALL_LIMIT:?}"));
                        break 'flooding;
                    }
                }
                Err(error) => {
                    stalled = Some(format!("write failed: {error}"));
                    break 'flooding;
                }
            }
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    writing_done.store(true, Ordering::Relaxed);
    let mut report = answers_thread.join().expect("answer thread");
    report.sent = sent.load(Ordering::Relaxed);
    report.stalled = stalled;
    report
}

/// How long each probe request took, at most, and what went wrong.
#[derive(Debug, Default)]
struct ProbeReport {
    rounds: u64,
    slowest: BTreeMap<&'static str, Duration>,
    produced: u64,
    produce_refusals: BTreeMap<String, u64>,
    failures: Vec<String>,
}

/// One request on `stream` and its answer, read within the stream's timeout.
fn call(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    stream
        .write_all(&encode_frame(request).unwrap())
        .map_err(|e| format!("send: {e}"))?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            return Ok(frame);
        }
        let count = stream
            .read(&mut buffer)
            .map_err(|e| format!("answer: {e}"))?;
        if count == 0 {
            return Err("the broker closed the connection".into());
        }
        decoder.push(&buffer[..count]);
    }
}

/// The error code of an answer, if it has one (the response's or its first result's).
fn answer_code(answer: &[u8]) -> ErrorCode {
    let Ok(response) = decode_response(answer) else {
        return ErrorCode::MalformedFrame;
    };
    if let Some(error) = response.error().filter(|e| e.code() != ErrorCode::None) {
        return error.code();
    }
    let produced = response
        .body_as_produce_response()
        .and_then(|p| p.results())
        .and_then(|r| r.iter().next());
    produced
        .and_then(|r| r.error())
        .map_or(ErrorCode::None, |e| e.code())
}

/// Metadata, an acks=quorum produce and a fetch, one after the other on one connection,
/// every 50 ms until `stop`; each request once (no retries), timed. Stops at the first
/// request that gets no answer within 5 s.
fn probe(address: &str, topic: &str, stop: &AtomicBool) -> ProbeReport {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_nodelay(true).unwrap();
    // Far above the bound asserted (2 s), so a slow answer is measured, not lost; low
    // enough that an unresponsive broker fails the test soon.
    let limit = Some(Duration::from_secs(5));
    stream.set_read_timeout(limit).unwrap();
    stream.set_write_timeout(limit).unwrap();
    let mut decoder = FrameDecoder::new(8 << 20);
    let mut report = ProbeReport::default();
    let (batch, crc32c) = batch_of_bytes(5);
    let batches = [PartitionBatchData {
        partition: 0,
        batch: &batch,
        crc32c,
    }];
    let (mut id, mut last_offset) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) && report.failures.is_empty() {
        report.rounds += 1;
        id += 3;
        let requests: [(&'static str, Vec<u8>); 3] = [
            ("metadata", encode_metadata_request(id)),
            (
                "produce",
                encode_produce_request(id + 1, topic, Acks::Quorum, 1500, &batches),
            ),
            (
                "fetch",
                encode_fetch_request(id + 2, topic, 0, last_offset, 64 * 1024, 0),
            ),
        ];
        for (what, request) in requests {
            let started = Instant::now();
            let answer = match call(&mut stream, &mut decoder, &request) {
                Ok(answer) => answer,
                Err(error) => {
                    report.failures.push(format!("{what}: {error}"));
                    break;
                }
            };
            let slowest = report.slowest.entry(what).or_default();
            *slowest = (*slowest).max(started.elapsed());
            match (what, answer_code(&answer)) {
                ("produce", ErrorCode::None) => {
                    report.produced += 1;
                    // Retention (the flood fills the log) removes older offsets.
                    last_offset = decode_response(&answer)
                        .ok()
                        .and_then(|r| r.body_as_produce_response())
                        .and_then(|p| p.results())
                        .and_then(|r| r.iter().next())
                        .map_or(last_offset, |r| r.base_offset());
                }
                ("produce", code) => {
                    *report
                        .produce_refusals
                        .entry(format!("{code:?}"))
                        .or_default() += 1
                }
                // A clear answer: retention removed the offset meanwhile.
                (_, ErrorCode::None | ErrorCode::OffsetOutOfRange) => {}
                (_, code) => report.failures.push(format!("{what}: {code:?}")),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    report
}

/// Two connections flood `address` with acks=none produce requests of ~1 MiB batches to
/// topic "flood" for 6 s while a third probes it on topic "probe"; `alive` is checked
/// throughout.
fn flood_and_probe(
    address: &str,
    mut alive: impl FnMut() -> bool,
) -> (Vec<FloodReport>, ProbeReport) {
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..2)
        .map(|_| {
            let (stop, address) = (stop.clone(), address.to_string());
            std::thread::spawn(move || flood(&address, "flood", &stop))
        })
        .collect();
    let prober = {
        let (stop, address) = (stop.clone(), address.to_string());
        std::thread::spawn(move || probe(&address, "probe", &stop))
    };
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        assert!(alive(), "a broker died under the flood");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let floods: Vec<FloodReport> = floods.into_iter().map(|f| f.join().unwrap()).collect();
    let probed = prober.join().unwrap();
    eprintln!("flood: {floods:?}\nprobe: {probed:?}");
    assert!(alive(), "a broker died under the flood");
    (floods, probed)
}

/// Item 4's acceptance: every flood request was answered, accepted or refused with
/// RequestTimedOut (the broker's "overloaded"), never with the connection dropped; every
/// probe request was answered within 2 s.
fn assert_responsive(floods: &[FloodReport], probed: &ProbeReport) {
    for report in floods {
        assert_eq!(report.dropped, None, "{report:?}");
        assert_eq!(report.stalled, None, "{report:?}");
        let answered: u64 = report.answers.values().sum();
        assert_eq!(
            answered, report.sent,
            "every flood request answered: {report:?}"
        );
        assert!(
            report
                .answers
                .keys()
                .all(|outcome| outcome == "ok" || outcome == "RequestTimedOut"),
            "accepted or refused as overloaded: {report:?}"
        );
    }
    let flooded: u64 = floods.iter().map(|r| r.sent).sum();
    assert!(flooded >= 50, "the flood sent {flooded} MiB");
    assert!(probed.failures.is_empty(), "{probed:?}");
    assert!(probed.rounds >= 5, "{probed:?}");
    for (what, slowest) in &probed.slowest {
        assert!(
            *slowest < Duration::from_secs(2),
            "a {what} request took {slowest:?} under the flood: {probed:?}"
        );
    }
}

/// Once the flood is over, acks=quorum writes are taken again and read back.
fn assert_writes_go_on(client: &mut ClusterClient) {
    let (batch, crc32c) = batch_of_bytes(10);
    let offset = retry("produce after the flood", || {
        client.produce("probe", 0, &batch, crc32c, Acks::Quorum)
    });
    let fetched = client
        .fetch("probe", 0, offset, 1 << 20, Duration::ZERO)
        .unwrap();
    assert_eq!(fetched.records.len(), 1);
}

/// Issue 11, item 4: an acks=none flood of ~1 MiB batches from two connections leaves a
/// single node alive and responsive: a third connection's metadata, acks=quorum produce
/// and fetch requests are each answered within 2 s throughout, every flood request is
/// answered (accepted, or refused as overloaded: the replica refuses proposals beyond
/// MAX_UNCOMMITTED_BYTES and half the log's unflushed bound), and writes go on after it.
/// Against the pre-redesign build (eaff40a) the node stopped reading altogether.
#[test]
fn an_acks_none_flood_of_1_mib_batches_leaves_the_node_responsive() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let mut broker = Broker::start_with_args(
        dir.path(),
        port,
        1,
        "64MiB",
        &["--retention-bytes".to_string(), "512MiB".to_string()],
    );
    let address = broker.address(0);
    let mut client = ClusterClient::new(&address);
    retry("create topic", || client.create_topic("flood", 1));
    retry("create topic", || client.create_topic("probe", 1));
    let (floods, probed) = flood_and_probe(&address, || broker.is_running());
    assert_responsive(&floods, &probed);
    assert_writes_go_on(&mut client);
}

/// Issue 11, item 4: the same flood against the leader of a three-node cluster: the
/// leader stays responsive and keeps leading (the flood is refused before raft-rs takes
/// it, not by an election), and writes go on after it.
///
/// It failed before (2 of 2 runs), the leader losing its group within a second of the flood
/// (every later flood request answered NotLeader): with 64 appends of 1 MiB in flight to
/// each follower, one Ready pass encoded and sent 64 MiB and the leader's heartbeats
/// waited behind it. At `MAX_INFLIGHT_APPENDS` (4) it passed 4 of 4.
///
/// It failed again, in about a third of runs of this file (its three tests run together
/// on two cores: 12 of 30 before, at 111d376 and 394330a), the same way: the client
/// connections' read loops never waited (their sockets always had the next 1 MiB frame)
/// and ran in the same glommio task queue as the replica's ticks, so a flooded leader went
/// 200-660 ms without a tick or a heartbeat. With the replica in its own latency task queue
/// and the loops yielding when asked, it passed 28 of 28 (18 alternated with the build
/// before, at a 5 ms queue latency; 10 at the 10 ms kept).
///
/// It still failed about one run in ten to twenty (1 of 40, 1 of 30, 2 of 6, 1 of 12 on
/// 2026-12-03), and not for anything the broker did: with the election watch's log
/// (`shard/election_watch.rs`) and probes of each tick's lateness and of the shard
/// thread's run and run-queue time (`/proc/thread-self/schedstat`), the leaders of this
/// file's brokers (this cluster's and the single node's, three tests on two cores) went
/// 60-130 ms between ticks about once per run, most of that time neither running nor
/// waiting to run, and the same with glommio unpatched (13 such stalls in 12 runs). A
/// stall of 100 ms or more is an election at the default timeout (the followers heard
/// nothing for 97-136 ms before standing). At 300-600 ms the test still catches what it
/// is about: the stalls of 200-660 ms that a leader's own flood work caused before.
#[test]
fn an_acks_none_flood_of_1_mib_batches_leaves_a_cluster_leader_responsive() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with_segments(
        root.path(),
        3,
        1,
        "64MiB",
        &[
            "--retention-bytes",
            "512MiB",
            // The leader at start keeps the group: a planned hand-over under the flood
            // would answer NotLeader too.
            "--leader-balance-delay",
            "off",
            // An election timeout of 300-600 ms instead of 100-200 ms: see below.
            "--election-ticks",
            "30",
        ],
    );
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let mut client = ClusterClient::new(&bootstrap.join(","));
    retry("create topic", || client.create_topic("flood", 1));
    retry("create topic", || client.create_topic("probe", 1));
    let leader = retry("leader", || {
        client.refresh_metadata()?;
        let metadata = client.metadata()?;
        metadata
            .places
            .get(&("flood".to_string(), 0))
            .map(|place| place.address.clone())
            .ok_or_else(|| keel::client::ClientError::Unexpected("no leader yet".into()))
    });
    let (floods, probed) = flood_and_probe(&leader, || nodes.iter_mut().all(|n| n.is_running()));
    assert_responsive(&floods, &probed);
    assert_writes_go_on(&mut client);
}

/// A connection to `address` with a small receive buffer: its peer's answers back up
/// after a few KiB when it does not read them.
fn connect_with_small_receive_buffer(address: &str) -> TcpStream {
    use std::net::ToSocketAddrs;
    let target = address.to_socket_addrs().unwrap().next().unwrap();
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.connect(&target.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Waits until `written` stops moving for `quiet`, within `limit`; its last value.
fn wait_until_still(written: &AtomicU64, quiet: Duration, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    let mut last = written.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = written.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

/// Issue 11, item 13: a client sends 300 requests of 1 MiB without reading its answers
/// (its answers back up behind large fetch answers). The broker stops reading from the
/// connection once the connection's requests hold their bound (32 MiB), so its memory
/// grows by far less than the 300 MiB sent; once the client reads, every request is
/// answered and the connection goes on. Before: the broker read on, holding every request
/// whose answer could not be queued (up to 1,024 of up to 8 MiB each).
#[test]
fn a_client_that_does_not_read_its_answers_cannot_grow_the_broker_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let broker = Broker::start_with_segments(dir.path(), port, 1, "64MiB");
    let address = broker.address(0);
    let mut client = ClusterClient::new(&address);
    retry("create topic", || client.create_topic("held", 1));
    let (batch, crc32c) = batch_of_bytes(NEAR_MIB_VALUE_BYTES);
    retry("produce", || {
        client.produce("held", 0, &batch, crc32c, Acks::Quorum)
    });

    let stream = connect_with_small_receive_buffer(&address);
    let mut writer = stream.try_clone().unwrap();
    // 1. Fetch answers of ~1 MiB each fill the socket buffers: the broker's writer waits.
    // 2. Small metadata answers queue up behind them (900, under the 1,024 requests a
    //    connection may have being answered).
    // 3. Requests of 1 MiB each (a produce to a topic that does not exist: refused at once,
    //    nothing stored), 300 of them.
    const FETCHES: u64 = 16;
    const SMALL: u64 = 900;
    const LARGE: u64 = 300;
    let written = Arc::new(AtomicU64::new(0));
    let writer_thread = {
        let written = written.clone();
        std::thread::spawn(move || {
            let mut id = 0u64;
            for _ in 0..FETCHES {
                id += 1;
                let request = encode_fetch_request(id, "held", 0, 0, 1 << 20, 0);
                writer.write_all(&encode_frame(&request).unwrap()).unwrap();
            }
            for _ in 0..SMALL {
                id += 1;
                writer
                    .write_all(&encode_frame(&encode_metadata_request(id)).unwrap())
                    .unwrap();
            }
            let batches = [PartitionBatchData {
                partition: 0,
                batch: &batch,
                crc32c,
            }];
            for _ in 0..LARGE {
                id += 1;
                let request = encode_produce_request(id, "nowhere", Acks::Quorum, 5000, &batches);
                writer.write_all(&encode_frame(&request).unwrap()).unwrap();
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Wait until the large requests stop going out (the broker stopped reading) or all
    // went out; give the broker a moment to take what it read.
    let before = broker.resident_bytes().expect("broker RSS");
    let large_written = wait_until_still(&written, Duration::from_secs(2), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let after = broker.resident_bytes().expect("broker RSS");
    let grown_mib = after.saturating_sub(before) as f64 / (1 << 20) as f64;
    eprintln!(
        "large requests written: {large_written} of {LARGE}; broker RSS {} MiB -> {} MiB",
        before >> 20,
        after >> 20
    );
    assert!(
        large_written < LARGE,
        "the broker kept reading 1 MiB requests whose answers could not be written"
    );
    assert!(
        grown_mib < 100.0,
        "the broker grew by {grown_mib:.0} MiB while its answers were not read"
    );

    // The client reads now: every request is answered, in a connection that goes on.
    let mut reader = stream;
    reader
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut decoder = FrameDecoder::new(8 << 20);
    let mut buffer = vec![0u8; 256 * 1024];
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let expected = FETCHES + SMALL + LARGE;
    let mut answered = 0u64;
    while answered < expected {
        let count = reader.read(&mut buffer).expect("answers keep coming");
        assert!(count > 0, "the broker closed the connection");
        decoder.push(&buffer[..count]);
        while let Some(frame) = decoder.next_frame().unwrap() {
            let response = decode_response(&frame).unwrap();
            let kind = if response.body_as_fetch_response().is_some() {
                "fetch".to_string()
            } else if response.body_as_metadata_response().is_some() {
                "metadata".to_string()
            } else {
                response
                    .error()
                    .map_or("other".to_string(), |e| format!("{:?}", e.code()))
            };
            *outcomes.entry(kind).or_default() += 1;
            answered += 1;
        }
    }
    writer_thread.join().unwrap();
    assert_eq!(outcomes.get("fetch"), Some(&FETCHES), "{outcomes:?}");
    assert_eq!(outcomes.get("metadata"), Some(&SMALL), "{outcomes:?}");
    assert_eq!(outcomes.get("UnknownTopic"), Some(&LARGE), "{outcomes:?}");
}
