//! The Rust client: a blocking connection per shard, a cluster client that routes by
//! metadata and retries what is safe to retry.
//!
//! ```no_run
//! use keel::client::ClusterClient;
//! use keel::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
//! use keel::protocol::wire::Acks;
//!
//! let mut client = ClusterClient::new("127.0.0.1:9700");
//! client.create_topic("orders", 4)?;
//! let record = RecordData { value: b"hello".to_vec(), ..Default::default() };
//! let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &[record]);
//! let offset = client.produce("orders", 0, &batch, crc, Acks::Quorum)?;
//! let fetched = client.fetch("orders", 0, offset, 1 << 20, std::time::Duration::ZERO)?;
//! # Ok::<(), keel::client::ClientError>(())
//! ```

pub mod access_calls;
pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod error;
mod fetch_pipeline;
pub mod group_calls;
pub mod group_consumer;
pub mod join_calls;
pub mod move_calls;
pub mod mover;
pub mod producer;
pub mod producer_identity;
pub mod producer_metrics;
mod replay;
pub mod spill_journal;
mod time_lookup;

pub use cluster::{ClusterClient, ConsumedRecord, Fetched, GroupStatus};
pub use connection::{ClientSecurity, Credentials};
pub use consumer::{Consumer, PartitionRecord};
pub use error::ClientError;
pub use group_consumer::{
    GroupConsumer, GroupConsumerConfig, GroupRecord, OffsetReset, Rebalance, RebalanceListener,
};
pub use producer::{Delivered, Delivery, Producer, ProducerConfig, SkippedBatches, SpillConfig};
