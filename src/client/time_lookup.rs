//! Finding a partition's offset for a time: the first record whose timestamp (its
//! batch's `first_timestamp_ms` plus its own delta, set by the producer) is at or after
//! the time. A binary search over the partition's offsets, one small fetch per step
//! (each answers the batch holding the offset asked), so a few dozen fetches for any
//! partition. Owns nothing; assumes timestamps that do not go back (as producers stamp
//! them): where they do, it finds one offset where they cross the time, not the first.

use crate::client::cluster::{checked_batches, ClusterClient};
use crate::client::error::ClientError;
use crate::protocol::codec::encode_fetch_request;

impl ClusterClient {
    /// The offset of the first record of `topic/partition` stamped at or after
    /// `timestamp_ms` (milliseconds since the Unix epoch); the partition's end when none
    /// is (only records produced from now on).
    pub fn offset_for_time(
        &mut self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<u64, ClientError> {
        let (mut low, mut high) = self.partition_offsets(topic, partition)?;
        // The answer is in [low, high]; `high` is the end until a record at or after the
        // time is found.
        while low < high {
            let middle = low + (high - low) / 2;
            let records: Vec<(u64, i64)> = self
                .record_times(topic, partition, middle)?
                .into_iter()
                .filter(|(offset, _)| (low..high).contains(offset))
                .collect();
            let Some(&(first, first_time)) = records.first() else {
                return Err(ClientError::Unexpected(format!(
                    "a fetch of {topic}/{partition} at {middle} returned no record there"
                )));
            };
            match records.iter().find(|(_, time)| *time >= timestamp_ms) {
                // The whole batch (within the range) is before the time.
                None => low = records[records.len() - 1].0 + 1,
                // It crosses the time inside the batch: found.
                Some(&(offset, _)) if first_time < timestamp_ms => return Ok(offset),
                // It starts at or after the time: the answer is here or before.
                Some(_) => high = first,
            }
        }
        Ok(high)
    }

    /// (offset, timestamp) of every record of the batch holding `offset`.
    fn record_times(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Vec<(u64, i64)>, ClientError> {
        self.with_retries(|client| {
            let address = client.place(topic, partition)?;
            // One byte asked: the broker answers the first batch, whole.
            let answer = client.call(&address, |id| {
                encode_fetch_request(id, topic, partition, offset, 1, 0)
            })?;
            let (_, batches) = checked_batches(&answer)?;
            let mut times = Vec::new();
            for (base_offset, batch) in batches {
                for record in batch.records().iter().flatten() {
                    times.push((
                        base_offset + u64::from(record.offset_delta()),
                        batch
                            .first_timestamp_ms()
                            .saturating_add(record.timestamp_delta_ms()),
                    ));
                }
            }
            Ok(times)
        })
    }
}
