//! The simulated clients: an admin that creates the topic, idempotent producers with
//! acks=quorum (one batch in flight each, retried with the same sequence until answered),
//! and fire-and-forget acks=none batches. Every acknowledgement goes into the history the
//! checkers read.

use std::collections::BTreeMap;

use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::Applied;
use crate::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use crate::replication::events::{RequestId, ShardError};
use crate::replication::prng::Prng;

/// PRNG domain of the workload.
const WORKLOAD_DOMAIN: u64 = 30;

/// The topic every producer writes to.
pub const TOPIC: &str = "sim";

/// A batch as the history keeps it.
#[derive(Clone, Debug)]
pub struct BatchRecord {
    /// Producer id.
    pub producer: u64,
    /// Partition.
    pub partition: u32,
    /// Epoch.
    pub epoch: u16,
    /// Base sequence.
    pub sequence: u32,
    /// Records in it.
    pub record_count: u32,
    /// crc32c of its bytes.
    pub crc: u32,
    /// Offsets it was acknowledged at (every answer; all must be equal).
    pub acked_offsets: Vec<u64>,
}

/// A batch on its way.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// Index in the history.
    pub batch: usize,
    /// The entry to propose.
    pub data: Vec<u8>,
    /// The request now waiting (older ones are abandoned).
    pub request: Option<RequestId>,
    /// When it was last sent, ns.
    pub sent_at: u64,
}

/// One idempotent producer.
#[derive(Clone, Debug)]
pub struct Producer {
    /// Its id.
    pub id: u64,
    /// Next sequence per partition.
    pub next_sequence: Vec<u32>,
    /// The batch in flight.
    pub in_flight: Option<InFlight>,
    /// The node it sends to.
    pub target: u64,
    /// Batches still to send after faults stop (liveness).
    pub closing_batches: u32,
    /// Only the newest scheduled wake-up acts.
    pub wake_token: u64,
    /// Its epoch (bumped when it "restarts": sequences start again at 0).
    pub epoch: u16,
}

/// What a request was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Creating the topic.
    CreateTopic,
    /// A producer's batch.
    Batch(usize),
    /// A fire-and-forget batch.
    FireAndForget,
    /// Creating or deleting the churned topic.
    Churn,
    /// Creating a large-state topic.
    LargeState,
    /// A consumer group change (`world::groups`).
    Group,
    /// A membership change (`world::membership`).
    Membership,
}

/// Every client of the run.
pub struct Workload {
    /// Random choices of the clients.
    pub rng: Prng,
    /// The producers.
    pub producers: Vec<Producer>,
    /// Every batch sent by an idempotent producer.
    pub history: Vec<BatchRecord>,
    /// Requests waiting: id → purpose.
    pub requests: BTreeMap<RequestId, Purpose>,
    /// The topic's id, once created.
    pub topic_id: Option<u32>,
    /// Its partitions.
    pub partitions: u32,
    next_request: u64,
    max_value_bytes: u64,
    /// Acknowledgements that contradict each other or the protocol.
    pub anomalies: Vec<String>,
    /// Batches acknowledged.
    pub acked: u64,
    /// Highest high watermark served per partition (S6).
    pub served_high_watermarks: BTreeMap<u32, u64>,
}

impl Workload {
    /// Clients as the profile says.
    pub fn new(seed: u64, producers: u64, partitions: u32, max_value_bytes: u64) -> Workload {
        let producers = (0..producers)
            .map(|i| Producer {
                id: 1000 + i,
                next_sequence: vec![0; partitions as usize],
                in_flight: None,
                target: 1,
                closing_batches: 1,
                wake_token: 0,
                epoch: 0,
            })
            .collect();
        Workload {
            rng: Prng::derive(seed, WORKLOAD_DOMAIN, 0),
            producers,
            history: Vec::new(),
            requests: BTreeMap::new(),
            topic_id: None,
            partitions,
            next_request: 1,
            max_value_bytes,
            anomalies: Vec::new(),
            acked: 0,
            served_high_watermarks: BTreeMap::new(),
        }
    }

    /// A new request id for `purpose`.
    pub fn request(&mut self, purpose: Purpose) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(id, purpose);
        id
    }

    /// Builds the next batch of `producer` (idempotent) and records it in the history.
    pub fn next_batch(&mut self, producer: usize, now: u64) -> Option<InFlight> {
        let topic_id = self.topic_id?;
        if self.rng.chance(1, 50) {
            // The producer process restarts: a new epoch, every sequence from 0.
            let restarted = &mut self.producers[producer];
            restarted.epoch += 1;
            restarted.next_sequence.iter_mut().for_each(|s| *s = 0);
        }
        let epoch = self.producers[producer].epoch;
        let partition = self.rng.range(0, u64::from(self.partitions)) as u32;
        let sequence = self.producers[producer].next_sequence[partition as usize];
        let count = self.rng.range(1, 5) as u32;
        let id = self.producers[producer].id;
        let records: Vec<RecordData> = (0..count)
            .map(|i| RecordData {
                key: None,
                value: self.value(id, sequence + i),
                headers: Vec::new(),
                timestamp_delta_ms: 0,
            })
            .collect();
        let batch_producer = BatchProducer {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: sequence,
        };
        let (bytes, crc) = encode_record_batch(batch_producer, 0, &records);
        let data = BrokerEntry::RecordBatch {
            proposed_at_ms: now / 1_000_000,
            topic_id,
            partition,
            record_count: count,
            batch_crc32c: crc,
            batch: &bytes,
        }
        .encode();
        self.producers[producer].next_sequence[partition as usize] = sequence + count;
        self.history.push(BatchRecord {
            producer: id,
            partition,
            epoch,
            sequence,
            record_count: count,
            crc,
            acked_offsets: Vec::new(),
        });
        Some(InFlight {
            batch: self.history.len() - 1,
            data,
            request: None,
            sent_at: now,
        })
    }

    /// A batch of a producer without idempotence, not waited for.
    pub fn fire_and_forget(&mut self, topic: Option<u32>) -> Option<Vec<u8>> {
        let topic_id = topic.or(self.topic_id)?;
        let partition = self.rng.range(0, u64::from(self.partitions)) as u32;
        let records = vec![RecordData {
            key: None,
            value: self.value(0, self.next_request as u32),
            headers: Vec::new(),
            timestamp_delta_ms: 0,
        }];
        let (bytes, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
        Some(
            BrokerEntry::RecordBatch {
                proposed_at_ms: 0,
                topic_id,
                partition,
                record_count: 1,
                batch_crc32c: crc,
                batch: &bytes,
            }
            .encode(),
        )
    }

    fn value(&mut self, producer: u64, sequence: u32) -> Vec<u8> {
        let length = self.rng.range(8, self.max_value_bytes.max(9)) as usize;
        let mut value = format!("{producer}:{sequence}:").into_bytes();
        value.resize(length.max(value.len()), b'v');
        value
    }

    /// An answer to a producer's batch. Returns whether the batch is done.
    pub fn on_batch_answer(
        &mut self,
        producer: usize,
        outcome: &Result<Applied, ShardError>,
    ) -> bool {
        let Some(in_flight) = self.producers[producer].in_flight.clone() else {
            return false;
        };
        let batch = in_flight.batch;
        match outcome {
            Ok(Applied::Batch { base_offset, .. }) | Ok(Applied::Duplicate { base_offset }) => {
                let record = &mut self.history[batch];
                if record.acked_offsets.iter().any(|o| o != base_offset) {
                    self.anomalies.push(format!(
                        "P4: producer {} partition {} sequence {} acknowledged at offsets {:?} \
                         and {base_offset}",
                        record.producer, record.partition, record.sequence, record.acked_offsets
                    ));
                }
                record.acked_offsets.push(*base_offset);
                self.acked += 1;
                self.producers[producer].in_flight = None;
                true
            }
            Ok(other) => {
                let record = &self.history[batch];
                self.anomalies.push(format!(
                    "producer {} partition {} sequence {}: unexpected answer {other:?}",
                    record.producer, record.partition, record.sequence
                ));
                self.producers[producer].in_flight = None;
                true
            }
            Err(_) => false,
        }
    }
}
