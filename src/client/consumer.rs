//! `Consumer`: follows partitions of a topic from given offsets, fetching in turn with
//! long polls; never goes back or skips (P3): each poll returns the records right after
//! the last ones it returned.

use std::time::Duration;

use crate::client::cluster::{ClusterClient, ConsumedRecord};
use crate::client::error::ClientError;
use crate::constants::CLIENT_FETCH_MAX_BYTES;

/// A record and the partition it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRecord {
    /// Partition.
    pub partition: u32,
    /// The record.
    pub record: ConsumedRecord,
}

/// Follows some partitions of one topic.
pub struct Consumer {
    client: ClusterClient,
    topic: String,
    positions: Vec<(u32, u64)>,
    next: usize,
}

impl Consumer {
    /// A consumer of `partitions` of `topic`, each from its offset.
    pub fn new(bootstrap: &str, topic: &str, partitions: &[(u32, u64)]) -> Consumer {
        Consumer::with_client(ClusterClient::new(bootstrap), topic, partitions)
    }

    /// The same, reading through `client` (connected as its security says: TLS).
    pub fn with_client(client: ClusterClient, topic: &str, partitions: &[(u32, u64)]) -> Consumer {
        Consumer {
            client,
            topic: topic.to_string(),
            positions: partitions.to_vec(),
            next: 0,
        }
    }

    /// The next offset of each partition.
    pub fn positions(&self) -> &[(u32, u64)] {
        &self.positions
    }

    /// Returns the next records of some partition, waiting up to `max_wait` (split over
    /// the partitions) when none has any.
    pub fn poll(&mut self, max_wait: Duration) -> Result<Vec<PartitionRecord>, ClientError> {
        if self.positions.is_empty() {
            return Ok(Vec::new());
        }
        let count = self.positions.len();
        let wait = max_wait / count as u32;
        for _ in 0..count {
            let slot = self.next % count;
            self.next = (self.next + 1) % count;
            let (partition, offset) = self.positions[slot];
            let fetched =
                self.client
                    .fetch(&self.topic, partition, offset, CLIENT_FETCH_MAX_BYTES, wait)?;
            if let Some(last) = fetched.records.last() {
                assert!(last.offset >= offset, "fetch went back");
                self.positions[slot].1 = last.offset + 1;
                return Ok(fetched
                    .records
                    .into_iter()
                    .map(|record| PartitionRecord { partition, record })
                    .collect());
            }
        }
        Ok(Vec::new())
    }
}
