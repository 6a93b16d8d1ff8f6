//! Checking frames into typed messages, and building messages.
//!
//! Every frame from the network goes through `decode_request` (broker side) or
//! `decode_response` (client side): file identifier, the flatbuffers verifier with bounded
//! depth, table count and size, the protocol version, a body. Record batches are checked
//! against their crc32c before they are verified, and once stored they are served as
//! they came.

use flatbuffers::{FlatBufferBuilder, VerifierOptions, WIPOffset};

use crate::protocol::byte_vector::byte_vector;
use crate::protocol::error::ProtocolError;
use crate::protocol::records::{self, RecordBatch};
use crate::protocol::wire::{self, Request, RequestBody, Response};

/// The protocol version this code speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// File identifier of requests and responses.
pub const MESSAGE_IDENTIFIER: &str = "KCP1";

/// File identifier of record batches.
pub const BATCH_IDENTIFIER: &str = "KRB1";

/// Deepest nesting of tables a message may have (ours have at most 5).
const MAX_TABLE_DEPTH: usize = 16;

/// Most records one batch may hold.
pub const MAX_RECORDS_PER_BATCH: usize = 100_000;

/// Verifier bounds for a message of `length` bytes. The apparent size counts every table
/// with its vtable (which tables share), so it is allowed a multiple of the length; the
/// bounds only keep a crafted buffer from making verification expensive.
pub fn verifier_options(length: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: MAX_TABLE_DEPTH,
        max_tables: length / 4 + 64,
        max_apparent_size: length.saturating_mul(16).max(64 * 1024),
        ignore_missing_null_terminator: false,
    }
}

fn check_identifier(bytes: &[u8], identifier: &str) -> Result<(), ProtocolError> {
    if bytes.len() < 8 || !flatbuffers::buffer_has_identifier(bytes, identifier, false) {
        return Err(ProtocolError::Malformed(format!(
            "not a {identifier} message"
        )));
    }
    Ok(())
}

/// Checks a request frame's payload and returns a view of it.
pub fn decode_request(bytes: &[u8]) -> Result<Request<'_>, ProtocolError> {
    check_identifier(bytes, MESSAGE_IDENTIFIER)?;
    let options = verifier_options(bytes.len());
    let request = wire::root_as_request_with_opts(&options, bytes)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if request.version() != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion(request.version()));
    }
    if request.body_type() == RequestBody::NONE || request.body_type().variant_name().is_none() {
        return Err(ProtocolError::Missing("request body"));
    }
    Ok(request)
}

/// Checks a response frame's payload and returns a view of it.
pub fn decode_response(bytes: &[u8]) -> Result<Response<'_>, ProtocolError> {
    check_identifier(bytes, MESSAGE_IDENTIFIER)?;
    let options = verifier_options(bytes.len());
    flatbuffers::root_with_opts::<Response>(&options, bytes)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Checks a record batch sent with `crc32c`: size, checksum, then structure (records
/// present, offset deltas 0, 1, 2, ...).
pub fn check_record_batch(
    bytes: &[u8],
    crc32c: u32,
    max_batch_bytes: usize,
) -> Result<RecordBatch<'_>, ProtocolError> {
    if bytes.len() > max_batch_bytes {
        return Err(ProtocolError::BatchTooLarge {
            length: bytes.len() as u64,
            limit: max_batch_bytes as u64,
        });
    }
    let computed = crc32c::crc32c(bytes);
    if computed != crc32c {
        return Err(ProtocolError::BatchChecksum {
            expected: crc32c,
            computed,
        });
    }
    check_identifier(bytes, BATCH_IDENTIFIER)?;
    let options = verifier_options(bytes.len());
    let batch = flatbuffers::root_with_opts::<RecordBatch>(&options, bytes)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let records = batch.records().ok_or(ProtocolError::Missing("records"))?;
    if records.is_empty() || records.len() > MAX_RECORDS_PER_BATCH {
        return Err(ProtocolError::Malformed(format!(
            "a batch holds 1 to {MAX_RECORDS_PER_BATCH} records, not {}",
            records.len()
        )));
    }
    for (position, record) in records.iter().enumerate() {
        if record.offset_delta() as usize != position {
            return Err(ProtocolError::Malformed(format!(
                "record {position} has offset delta {}",
                record.offset_delta()
            )));
        }
    }
    Ok(batch)
}

/// One record to put in a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordData {
    /// Optional key.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Vec<u8>,
    /// Application headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds after the batch's first timestamp.
    pub timestamp_delta_ms: i64,
}

/// Who sends a batch, for idempotence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchProducer {
    /// Producer id (0: not idempotent).
    pub producer_id: u64,
    /// Producer epoch.
    pub producer_epoch: u16,
    /// Sequence number of the first record.
    pub base_sequence: u32,
}

/// Builds a record batch; returns its bytes and their crc32c.
pub fn encode_record_batch(
    producer: BatchProducer,
    first_timestamp_ms: i64,
    records: &[RecordData],
) -> (Vec<u8>, u32) {
    let mut builder = FlatBufferBuilder::with_capacity(
        64 + records.iter().map(|r| r.value.len() + 64).sum::<usize>(),
    );
    let mut offsets = Vec::with_capacity(records.len());
    for (position, record) in records.iter().enumerate() {
        let key = record
            .key
            .as_ref()
            .map(|key| byte_vector(&mut builder, key));
        let value = byte_vector(&mut builder, &record.value);
        let headers: Vec<_> = record
            .headers
            .iter()
            .map(|(key, value)| {
                let args = records::RecordHeaderArgs {
                    key: Some(builder.create_string(key)),
                    value: Some(byte_vector(&mut builder, value)),
                };
                records::RecordHeader::create(&mut builder, &args)
            })
            .collect();
        let headers = (!headers.is_empty()).then(|| builder.create_vector(&headers));
        let args = records::RecordArgs {
            offset_delta: position as u32,
            timestamp_delta_ms: record.timestamp_delta_ms,
            key,
            value: Some(value),
            headers,
        };
        offsets.push(records::Record::create(&mut builder, &args));
    }
    let records_vector = builder.create_vector(&offsets);
    let batch = records::RecordBatch::create(
        &mut builder,
        &records::RecordBatchArgs {
            producer_id: producer.producer_id,
            producer_epoch: producer.producer_epoch,
            base_sequence: producer.base_sequence,
            first_timestamp_ms,
            records: Some(records_vector),
        },
    );
    builder.finish(batch, Some(BATCH_IDENTIFIER));
    let bytes = builder.finished_data().to_vec();
    let crc = crc32c::crc32c(&bytes);
    (bytes, crc)
}

/// Bytes a record batch may take beyond its records (table, vtable, records vector,
/// identifier, alignment), at most.
pub const RECORD_BATCH_OVERHEAD_BOUND_BYTES: usize = 128;

/// Bytes a byte vector or string of `length` bytes takes in a flatbuffer, at most (length
/// prefix, terminator, alignment padding).
fn vector_bound(length: usize) -> usize {
    length + 12
}

/// Bytes one record adds to an encoded batch, at most: what a producer adds up to keep a
/// batch under the broker's limit without encoding it first.
pub fn record_bytes_bound(record: &RecordData) -> usize {
    let headers = if record.headers.is_empty() {
        0
    } else {
        vector_bound(4 * record.headers.len())
            + record
                .headers
                .iter()
                .map(|(key, value)| 40 + vector_bound(key.len()) + vector_bound(value.len()))
                .sum::<usize>()
    };
    // The record's table and vtable (at most 64 bytes), its slot in the records vector,
    // then key, value and headers.
    68 + record.key.as_ref().map_or(0, |key| vector_bound(key.len()))
        + vector_bound(record.value.len())
        + headers
}

/// Bytes `encode_record_batch` produces for `records`, at most.
pub fn record_batch_bytes_bound(records: &[RecordData]) -> usize {
    RECORD_BATCH_OVERHEAD_BOUND_BYTES + records.iter().map(record_bytes_bound).sum::<usize>()
}

/// The records of a checked batch, with its first timestamp: what a producer needs to
/// encode the same records again under another identity.
pub fn batch_records(batch: &RecordBatch<'_>) -> (i64, Vec<RecordData>) {
    let records = batch
        .records()
        .iter()
        .flatten()
        .map(|record| RecordData {
            key: record.key().map(|k| k.bytes().to_vec()),
            value: record
                .value()
                .map(|v| v.bytes().to_vec())
                .unwrap_or_default(),
            headers: record
                .headers()
                .iter()
                .flatten()
                .map(|h| {
                    let value = h.value().map(|v| v.bytes().to_vec()).unwrap_or_default();
                    (h.key().unwrap_or_default().to_string(), value)
                })
                .collect(),
            timestamp_delta_ms: record.timestamp_delta_ms(),
        })
        .collect();
    (batch.first_timestamp_ms(), records)
}

/// Finishes a request around a body built by `body`.
pub fn encode_request<'a>(
    builder: &mut FlatBufferBuilder<'a>,
    correlation_id: u64,
    body_type: RequestBody,
    body: WIPOffset<flatbuffers::UnionWIPOffset>,
) -> Vec<u8> {
    let request = Request::create(
        builder,
        &wire::RequestArgs {
            correlation_id,
            version: PROTOCOL_VERSION,
            body_type,
            body: Some(body),
        },
    );
    builder.finish(request, Some(MESSAGE_IDENTIFIER));
    builder.finished_data().to_vec()
}

/// One partition's batch in a produce request.
pub struct PartitionBatchData<'b> {
    /// Partition number.
    pub partition: u32,
    /// The batch bytes (from `encode_record_batch`).
    pub batch: &'b [u8],
    /// Their crc32c.
    pub crc32c: u32,
}

/// A metadata request (every topic).
pub fn encode_metadata_request(correlation_id: u64) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let body =
        wire::MetadataRequest::create(&mut builder, &wire::MetadataRequestArgs { topics: None });
    encode_request(
        &mut builder,
        correlation_id,
        wire::RequestBody::MetadataRequest,
        body.as_union_value(),
    )
}

/// Builds a produce request.
pub fn encode_produce_request(
    correlation_id: u64,
    topic: &str,
    acks: wire::Acks,
    timeout_ms: u32,
    batches: &[PartitionBatchData<'_>],
) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::with_capacity(
        256 + batches.iter().map(|b| b.batch.len() + 32).sum::<usize>(),
    );
    let entries: Vec<_> = batches
        .iter()
        .map(|entry| {
            let batch = byte_vector(&mut builder, entry.batch);
            wire::PartitionBatch::create(
                &mut builder,
                &wire::PartitionBatchArgs {
                    partition: entry.partition,
                    crc32c: entry.crc32c,
                    batch: Some(batch),
                },
            )
        })
        .collect();
    let entries = builder.create_vector(&entries);
    let topic = builder.create_string(topic);
    let body = wire::ProduceRequest::create(
        &mut builder,
        &wire::ProduceRequestArgs {
            topic: Some(topic),
            acks,
            timeout_ms,
            batches: Some(entries),
        },
    );
    encode_request(
        &mut builder,
        correlation_id,
        RequestBody::ProduceRequest,
        body.as_union_value(),
    )
}

/// Builds a fetch request.
pub fn encode_fetch_request(
    correlation_id: u64,
    topic: &str,
    partition: u32,
    offset: u64,
    max_bytes: u32,
    max_wait_ms: u32,
) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::with_capacity(128);
    let topic = builder.create_string(topic);
    let body = wire::FetchRequest::create(
        &mut builder,
        &wire::FetchRequestArgs {
            topic: Some(topic),
            partition,
            offset,
            max_bytes,
            max_wait_ms,
        },
    );
    encode_request(
        &mut builder,
        correlation_id,
        RequestBody::FetchRequest,
        body.as_union_value(),
    )
}

/// Builds a response that carries only an error (the whole request failed).
pub fn encode_error_response(correlation_id: u64, code: wire::ErrorCode, message: &str) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::with_capacity(128 + message.len());
    let message = builder.create_string(message);
    let error = wire::Error::create(
        &mut builder,
        &wire::ErrorArgs {
            code,
            message: Some(message),
            leader_node: 0,
            leader_address: None,
        },
    );
    let response = Response::create(
        &mut builder,
        &wire::ResponseArgs {
            correlation_id,
            error: Some(error),
            body_type: wire::ResponseBody::NONE,
            body: None,
        },
    );
    builder.finish(response, Some(MESSAGE_IDENTIFIER));
    builder.finished_data().to_vec()
}
