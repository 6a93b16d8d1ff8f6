//! Idempotent producers writing while a test changes the cluster under them, and the
//! check that every record they had acknowledged is stored once, in send order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use keel::client::ClusterClient;
use keel::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use keel::protocol::wire::Acks;

use super::read_partition;

/// Five records of `partition` from `first`, from that partition's idempotent producer
/// (a retry after a lost answer is stored once).
pub fn batch_of(partition: u32, first: u64) -> (Vec<u8>, u32) {
    let records: Vec<RecordData> = (first..first + 5)
        .map(|n| RecordData {
            value: format!("p{partition}-{n}").into_bytes(),
            ..Default::default()
        })
        .collect();
    let producer = BatchProducer {
        producer_id: 100 + u64::from(partition),
        producer_epoch: 0,
        base_sequence: first as u32,
    };
    encode_record_batch(producer, 0, &records)
}

/// Producers writing every partition until stopped: what was acknowledged
/// (partition, offset, first record) and every error they saw.
pub struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u32, u64, u64)>>>,
    errors: Arc<Mutex<Vec<String>>>,
    thread: JoinHandle<()>,
}

impl Writers {
    /// Starts writing `partitions` partitions of `topic` through `bootstrap`.
    pub fn start(bootstrap: &str, topic: &str, partitions: u32) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<(u32, u64, u64)>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, a, e, bootstrap, topic) = (
            stop.clone(),
            acked.clone(),
            errors.clone(),
            bootstrap.to_string(),
            topic.to_string(),
        );
        let thread = std::thread::spawn(move || {
            let mut client = ClusterClient::new(&bootstrap);
            let mut next = vec![0u64; partitions as usize];
            while !s.load(Ordering::Relaxed) {
                for partition in 0..partitions {
                    let first = next[partition as usize];
                    let (batch, crc) = batch_of(partition, first);
                    match client.produce(&topic, partition, &batch, crc, Acks::Quorum) {
                        Ok(offset) => a.lock().unwrap().push((partition, offset, first)),
                        Err(error) => {
                            e.lock()
                                .unwrap()
                                .push(format!("{partition}/{first}: {error}"));
                            // Sent again with the same sequence: stored once.
                            continue;
                        }
                    }
                    next[partition as usize] += 5;
                }
            }
        });
        Writers {
            stop,
            acked,
            errors,
            thread,
        }
    }

    /// Batches acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Lets them have `more` batches acknowledged past now, stops them, and checks that
    /// they saw no error and that every acknowledged record is stored once, in order.
    pub fn finish_cleanly(self, bootstrap: &str, topic: &str, partitions: u32, more: usize) {
        let before = self.acked_count();
        super::retry("writes after the change", || {
            if self.acked_count() > before + more {
                Ok(())
            } else {
                Err("not yet")
            }
        });
        let (acked, errors) = self.stop();
        assert!(errors.is_empty(), "the producers saw errors: {errors:?}");
        check_every_acknowledged_record(bootstrap, topic, partitions, &acked);
    }

    /// Stops them: what was acknowledged and the errors seen.
    pub fn stop(self) -> (Vec<(u32, u64, u64)>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let errors = self.errors.lock().unwrap().clone();
        (acked, errors)
    }
}

/// Every acknowledged batch is stored where it was acknowledged, once, in send order.
pub fn check_every_acknowledged_record(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    acked: &[(u32, u64, u64)],
) {
    let mut client = ClusterClient::new(bootstrap);
    for partition in 0..partitions {
        let stored = read_partition(&mut client, topic, partition);
        for &(_, offset, first) in acked.iter().filter(|(p, ..)| *p == partition) {
            for k in 0..5 {
                assert_eq!(
                    stored[(offset + k) as usize],
                    format!("p{partition}-{}", first + k),
                    "acknowledged record at {partition}/{}",
                    offset + k
                );
            }
        }
        let values: Vec<u64> = stored
            .iter()
            .map(|v| v.rsplit('-').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "partition {partition}: once, in send order"
        );
    }
}
