//! A broker given more than it can take, as a real process: a client that sends large
//! requests without reading its answers. The node holds a bounded amount of memory for
//! what it has read.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::client::ClusterClient;
use keel::protocol::codec::{
    decode_response, encode_fetch_request, encode_produce_request, encode_record_batch,
    encode_request, BatchProducer, PartitionBatchData, RecordData,
};
use keel::protocol::frame::{encode_frame, FrameDecoder};
use keel::protocol::wire::{self, Acks};
use support::{free_ports, retry, Broker};

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

fn metadata_request(id: u64) -> Vec<u8> {
    let mut builder = flatbuffers::FlatBufferBuilder::new();
    let body =
        wire::MetadataRequest::create(&mut builder, &wire::MetadataRequestArgs { topics: None });
    encode_request(
        &mut builder,
        id,
        wire::RequestBody::MetadataRequest,
        body.as_union_value(),
    )
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
                    .write_all(&encode_frame(&metadata_request(id)).unwrap())
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
