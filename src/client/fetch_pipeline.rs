//! The group consumer's fetching: one fetch in flight per assigned partition, each sent
//! to the shard leading the partition (a connection per shard), and, while a partition
//! has more records than an answer brought, its next fetch sent as soon as its answer is
//! taken, before its records go to the application: the broker reads while the
//! application works. Runs on the consumer's thread (answers
//! are decoded where their records are used; an earlier design with a thread per shard
//! cost the client half again the CPU: records allocated on one thread and freed on
//! another, answers checked twice).
//!
//! Owns those connections and what is in flight on them. Never decides where a partition
//! is read from: the consumer says, and the answer to a fetch sent before it last said
//! counts for nothing. A failed fetch pauses its partition until the consumer says again;
//! it never retries on its own.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags};

use crate::client::cluster::{decode_fetch_answer, Fetched};
use crate::client::connection::{ClientSecurity, Connection};
use crate::client::error::ClientError;
use crate::client::group_calls::TopicPartition;
use crate::constants::{CLIENT_FETCH_MAX_BYTES, FETCH_LONG_POLL};
use crate::protocol::codec::encode_fetch_request;

/// How long a shard has to accept a fetch connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long to wait for the rest of an answer whose first bytes came.
const ANSWER_REST_WAIT: Duration = Duration::from_millis(1);

/// What one fetch brought.
pub(crate) struct Fetch {
    /// The partition.
    pub tp: TopicPartition,
    /// The offset the fetch asked for.
    pub from: u64,
    /// Records from `from` on (at least one), or why the partition is paused.
    pub outcome: Result<Fetched, ClientError>,
}

/// Where one partition is read.
struct Read {
    address: String,
    from: u64,
    /// The correlation id of its fetch in flight.
    awaiting: Option<u64>,
    /// Its last fetch failed: nothing is sent until the consumer says again.
    paused: bool,
}

/// The fetches of one consumer.
#[derive(Default)]
pub(crate) struct FetchPipeline {
    connections: HashMap<String, Connection>,
    reads: HashMap<TopicPartition, Read>,
    /// Fetches sent: (shard address, correlation id) to partition.
    in_flight: HashMap<(String, u64), TopicPartition>,
    /// Failures to report before waiting again.
    failed: VecDeque<Fetch>,
    /// How its connections are made (TLS).
    security: ClientSecurity,
}

impl FetchPipeline {
    /// A pipeline whose connections are made as `security` says.
    pub fn with_security(security: ClientSecurity) -> FetchPipeline {
        FetchPipeline {
            security,
            ..FetchPipeline::default()
        }
    }

    /// Reads `tp` from `from` at the shard at `address` from now on.
    pub(crate) fn read(&mut self, address: &str, tp: &TopicPartition, from: u64) {
        let read = Read {
            address: address.to_string(),
            from,
            awaiting: None,
            paused: false,
        };
        self.reads.insert(tp.clone(), read);
        self.failed.retain(|failure| failure.tp != *tp);
    }

    /// Stops reading `tp`.
    pub(crate) fn forget(&mut self, tp: &TopicPartition) {
        self.reads.remove(tp);
        self.failed.retain(|failure| failure.tp != *tp);
    }

    /// Sends what is due and returns the next fetch's outcome, waiting up to `wait`.
    pub(crate) fn next(&mut self, wait: Duration) -> Option<Fetch> {
        let deadline = Instant::now() + wait;
        loop {
            self.send_due();
            if let Some(failure) = self.failed.pop_front() {
                return Some(failure);
            }
            if let Some(fetch) = self.take_buffered() {
                return Some(fetch);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            for address in self.readable(deadline - now) {
                if let Some(fetch) = self.receive(&address) {
                    return Some(fetch);
                }
            }
        }
    }

    /// Sends a fetch for every partition without one in flight.
    fn send_due(&mut self) {
        let due: Vec<TopicPartition> = self
            .reads
            .iter()
            .filter(|(_, read)| !read.paused && read.awaiting.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            self.send(&tp);
        }
    }

    fn send(&mut self, tp: &TopicPartition) {
        let Some(read) = self.reads.get(tp) else {
            return;
        };
        let (address, from) = (read.address.clone(), read.from);
        if !self.connections.contains_key(&address) {
            match Connection::connect_with(&address, CONNECT_TIMEOUT, &self.security) {
                Ok(connection) => {
                    self.connections.insert(address.clone(), connection);
                }
                Err(error) => return self.fail_connection(&address, &error),
            }
        }
        let Some(connection) = self.connections.get_mut(&address) else {
            return;
        };
        let id = connection.next_correlation_id();
        let wait_ms = FETCH_LONG_POLL.as_millis() as u32;
        let request = encode_fetch_request(id, &tp.0, tp.1, from, CLIENT_FETCH_MAX_BYTES, wait_ms);
        if let Err(error) = connection.send(&request) {
            return self.fail_connection(&address, &error);
        }
        if let Some(read) = self.reads.get_mut(tp) {
            read.awaiting = Some(id);
        }
        self.in_flight.insert((address, id), tp.clone());
    }

    /// An answer some connection has already read.
    fn take_buffered(&mut self) -> Option<Fetch> {
        let addresses: Vec<String> = self.connections.keys().cloned().collect();
        for address in addresses {
            let buffered = self.connections.get_mut(&address)?.buffered_answer();
            match buffered {
                Ok(Some((id, answer))) => {
                    if let Some(fetch) = self.answered(&address, id, answer) {
                        return Some(fetch);
                    }
                }
                Ok(None) => {}
                Err(error) => self.fail_connection(&address, &error),
            }
        }
        None
    }

    /// The connections with fetches in flight that have bytes to read, waiting up to
    /// `wait` for one.
    fn readable(&self, wait: Duration) -> Vec<String> {
        let waiting: Vec<(&String, &Connection)> = self
            .connections
            .iter()
            .filter(|(address, _)| self.in_flight.keys().any(|(a, _)| a == *address))
            .collect();
        if waiting.is_empty() {
            std::thread::sleep(wait);
            return Vec::new();
        }
        let mut fds: Vec<PollFd> = waiting
            .iter()
            .map(|(_, connection)| PollFd::new(connection.socket(), PollFlags::POLLIN))
            .collect();
        let timeout_ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        if poll(&mut fds, timeout_ms).is_err() {
            // Interrupted: the caller's loop waits again.
            return Vec::new();
        }
        waiting
            .iter()
            .zip(&fds)
            .filter(|(_, fd)| fd.any().unwrap_or(false))
            .map(|((address, _), _)| (*address).clone())
            .collect()
    }

    fn receive(&mut self, address: &str) -> Option<Fetch> {
        let received = self
            .connections
            .get_mut(address)?
            .receive_any(ANSWER_REST_WAIT);
        match received {
            Ok(Some((id, answer))) => self.answered(address, id, answer),
            Ok(None) => None,
            Err(error) => {
                self.fail_connection(address, &error);
                self.failed.pop_front()
            }
        }
    }

    /// Takes an answer: the next fetch of its partition leaves at once; `None` when it
    /// counts for nothing (asked before the consumer last said) or holds no record.
    fn answered(&mut self, address: &str, id: u64, answer: bytes::Bytes) -> Option<Fetch> {
        let tp = self.in_flight.remove(&(address.to_string(), id))?;
        let read = self.reads.get_mut(&tp)?;
        if read.awaiting != Some(id) || read.address != address {
            return None;
        }
        read.awaiting = None;
        let from = read.from;
        let outcome = decode_fetch_answer(answer, from);
        match &outcome {
            Ok(fetched) => {
                // The long poll ended without data: asked again by the next `send_due`.
                let last = fetched.records.last()?;
                read.from = last.offset + 1;
                if read.from < fetched.high_watermark {
                    // More is there: fetch it while the application works. (At the end
                    // the next fetch waits for the next poll: sent now, the broker
                    // taking it competed with the application for the CPU and cost the
                    // next record's latency ~50 µs on two cores.)
                    self.send(&tp);
                }
            }
            Err(_) => read.paused = true,
        }
        Some(Fetch { tp, from, outcome })
    }

    /// A connection failed: every partition read there is reported and paused.
    fn fail_connection(&mut self, address: &str, error: &ClientError) {
        self.connections.remove(address);
        self.in_flight.retain(|(a, _), _| a != address);
        for (tp, read) in self.reads.iter_mut() {
            if read.address != address || read.paused {
                continue;
            }
            read.paused = true;
            read.awaiting = None;
            self.failed.push_back(Fetch {
                tp: tp.clone(),
                from: read.from,
                outcome: Err(ClientError::Closed(format!("{address}: {error}"))),
            });
        }
    }
}
