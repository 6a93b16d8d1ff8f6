//! `GroupConsumer`: a member of a consumer group. It joins, consumes the partitions the
//! coordinator assigns it from their committed offsets, heartbeats from `poll`, follows
//! rebalances (telling the application which partitions it lost and got), and commits
//! what it consumed: automatically at an interval, or when the application says.
//!
//! At-least-once: an automatic commit, made at the start of a `poll`, covers the records
//! earlier polls returned (the application processed them before polling again), never
//! those about to be returned. After a crash or a rebalance the next owner starts from
//! the last commit, so a record is consumed again at most once per uncommitted window.
//! Blocking, like the rest of the client; never skips a record: each partition is read
//! from where the previous poll stopped.
//!
//! Fetching runs ahead of `poll` (`FetchPipeline`): a fetch in flight per assigned
//! partition, at the shard leading it. Every positioning (assignment, seek, reset, a
//! failed fetch placed again) tells the pipeline anew; a fetch counts only if it starts
//! where its partition's position is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::cluster::{ClusterClient, ConsumedRecord};
use crate::client::connection::ClientSecurity;
use crate::client::error::ClientError;
use crate::client::fetch_pipeline::{Fetch, FetchPipeline};
use crate::client::group_calls::{JoinOptions, Membership, TopicPartition};
use crate::constants::{FETCH_RETRY_BACKOFF, MAX_HEARTBEAT_INTERVAL};
use crate::protocol::wire::ErrorCode;

/// Attempts of a commit that meets rebalances (each followed before the next): members
/// joining or leaving together move the generation several times in a row.
const COMMIT_ATTEMPTS: usize = 5;

/// Where a partition without a committed offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    /// At its first kept record (the default: nothing is skipped).
    Earliest,
    /// At its end: only records produced from now on.
    Latest,
    /// Nowhere: `poll` fails with `OffsetOutOfRange`.
    Error,
}

/// How a group consumer behaves.
#[derive(Clone, Debug)]
pub struct GroupConsumerConfig {
    /// The group.
    pub group: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// How it joins (client name, instance, mode, strategy, session timeout).
    pub join: JoinOptions,
    /// Commit what was consumed this often (at the start of a poll); `None`: only on
    /// `commit` calls.
    pub auto_commit: Option<Duration>,
    /// Where partitions without a committed offset (or one retention removed) start.
    pub offset_reset: OffsetReset,
    /// How it connects (TLS).
    pub security: ClientSecurity,
}

impl GroupConsumerConfig {
    /// Clustering mode, sticky assignment, a commit every 5 s, earliest when nothing is
    /// committed.
    pub fn new(group: &str, topics: &[&str]) -> GroupConsumerConfig {
        GroupConsumerConfig {
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            join: JoinOptions::default(),
            auto_commit: Some(Duration::from_secs(5)),
            offset_reset: OffsetReset::Earliest,
            security: ClientSecurity::default(),
        }
    }
}

/// A change of the partitions a member consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebalance {
    /// The group's new generation.
    pub generation: u64,
    /// Partitions this member no longer consumes (another member continues from their
    /// last commit).
    pub revoked: Vec<TopicPartition>,
    /// Partitions it consumes from now on.
    pub assigned: Vec<TopicPartition>,
}

/// A consumed record and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    /// Topic (shared by the records of one fetch).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// The record.
    pub record: ConsumedRecord,
}

/// The application's hook for rebalances.
pub type RebalanceListener = Box<dyn FnMut(&Rebalance)>;

/// A member of a consumer group.
pub struct GroupConsumer {
    client: ClusterClient,
    config: GroupConsumerConfig,
    membership: Membership,
    /// Next offset to fetch, per assigned partition.
    positions: BTreeMap<TopicPartition, u64>,
    /// Next offset after the records polls returned, per assigned partition: what a
    /// commit commits.
    consumed: BTreeMap<TopicPartition, u64>,
    /// What was last committed, per partition (nothing to commit when unchanged).
    committed: BTreeMap<TopicPartition, u64>,
    /// Assigned partitions not yet handed to the pipeline, and when to try.
    unplaced: BTreeMap<TopicPartition, Instant>,
    pipeline: FetchPipeline,
    last_heartbeat: Instant,
    last_commit: Instant,
    listener: Option<RebalanceListener>,
}

impl GroupConsumer {
    /// Joins the group and positions every assigned partition at its committed offset.
    pub fn subscribe(
        bootstrap: &str,
        config: GroupConsumerConfig,
    ) -> Result<GroupConsumer, ClientError> {
        let mut client = ClusterClient::with_security(bootstrap, config.security.clone());
        let membership = client.join_group(&config.group, "", &config.topics, &config.join)?;
        let pipeline = FetchPipeline::with_security(client.security().clone());
        let mut consumer = GroupConsumer {
            client,
            config,
            membership: Membership {
                member_id: membership.member_id.clone(),
                generation: membership.generation,
                assignment: Vec::new(),
            },
            positions: BTreeMap::new(),
            consumed: BTreeMap::new(),
            committed: BTreeMap::new(),
            unplaced: BTreeMap::new(),
            pipeline,
            last_heartbeat: Instant::now(),
            last_commit: Instant::now(),
            listener: None,
        };
        consumer.take_assignment(membership)?;
        Ok(consumer)
    }

    /// Calls `listener` at every rebalance (after the change: revoked partitions are no
    /// longer polled, assigned ones are positioned).
    pub fn on_rebalance(&mut self, listener: RebalanceListener) {
        self.listener = Some(listener);
    }

    /// This member's id.
    pub fn member_id(&self) -> &str {
        &self.membership.member_id
    }

    /// The group's generation as this member last heard it.
    pub fn generation(&self) -> u64 {
        self.membership.generation
    }

    /// The partitions this member consumes.
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.membership.assignment
    }

    /// The next offset each assigned partition is fetched from.
    pub fn positions(&self) -> &BTreeMap<TopicPartition, u64> {
        &self.positions
    }

    /// Fetches `partition` from `offset` next (and commits from there on).
    pub fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<(), ClientError> {
        if !self.positions.contains_key(partition) {
            return Err(ClientError::Unexpected(format!(
                "{}/{} is not assigned to this member",
                partition.0, partition.1
            )));
        }
        self.position(partition, offset);
        Ok(())
    }

    /// Heartbeats and commits when due, then returns the next records of some assigned
    /// partition (one fetch's worth), waiting up to `max_wait` (and no longer than the
    /// next heartbeat is due) when none has any.
    pub fn poll(&mut self, max_wait: Duration) -> Result<Vec<GroupRecord>, ClientError> {
        self.heartbeat_if_due()?;
        if let Some(interval) = self.config.auto_commit {
            if self.last_commit.elapsed() >= interval {
                self.commit()?;
            }
        }
        let heartbeat_due = self.last_heartbeat + self.heartbeat_interval();
        let deadline = (Instant::now() + max_wait).min(heartbeat_due);
        if self.positions.is_empty() {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            return Ok(Vec::new());
        }
        loop {
            self.place_due()?;
            let now = Instant::now();
            let mut until = deadline;
            if let Some(retry) = self.unplaced.values().min() {
                until = until.min((*retry).max(now));
            }
            match self.pipeline.next(until.saturating_duration_since(now)) {
                Some(fetch) => {
                    if let Some(records) = self.accept(fetch)? {
                        return Ok(records);
                    }
                }
                None if Instant::now() >= deadline => return Ok(Vec::new()),
                None => {}
            }
        }
    }

    /// Starts (again) reading `tp` from `offset`, placed at the next poll (what is in
    /// flight for it counts for nothing from now on).
    fn position(&mut self, tp: &TopicPartition, offset: u64) {
        self.positions.insert(tp.clone(), offset);
        self.consumed.insert(tp.clone(), offset);
        self.pipeline.forget(tp);
        self.unplaced.insert(tp.clone(), Instant::now());
    }

    /// Hands the partitions due to the pipeline, at the shard leading each.
    fn place_due(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        let due: Vec<TopicPartition> = self
            .unplaced
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            match self.client.place(&tp.0, tp.1) {
                Ok(address) => {
                    self.unplaced.remove(&tp);
                    self.pipeline.read(&address, &tp, self.positions[&tp]);
                }
                Err(error) if error.is_retriable() => {
                    self.unplaced.insert(tp, now + FETCH_RETRY_BACKOFF);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Takes a fetch of the pipeline: its records if it continues an assigned partition
    /// from its position, else nothing.
    fn accept(&mut self, fetch: Fetch) -> Result<Option<Vec<GroupRecord>>, ClientError> {
        let Fetch { tp, from, outcome } = fetch;
        if self.positions.get(&tp) != Some(&from) {
            return Ok(None);
        }
        let fetched = match outcome {
            Ok(fetched) => fetched,
            Err(error) if is_code(&error, ErrorCode::OffsetOutOfRange) => {
                match self.reset_position(&tp) {
                    Ok(reset) => self.position(&tp, reset),
                    Err(error) => {
                        // `OffsetReset::Error`: every poll says so until the application
                        // seeks.
                        self.position(&tp, from);
                        self.unplaced
                            .insert(tp, Instant::now() + FETCH_RETRY_BACKOFF);
                        return Err(error);
                    }
                }
                return Ok(None);
            }
            Err(error) => {
                // Placed again after a pause (the leader may have moved).
                self.position(&tp, from);
                self.unplaced
                    .insert(tp, Instant::now() + FETCH_RETRY_BACKOFF);
                if error.is_retriable() {
                    let _ = self.client.refresh_metadata();
                    return Ok(None);
                }
                return Err(error);
            }
        };
        let Some(last) = fetched.records.last() else {
            return Ok(None);
        };
        assert!(
            fetched.records[0].offset >= from && last.offset >= from,
            "a fetch from {from} went back"
        );
        self.positions.insert(tp.clone(), last.offset + 1);
        self.consumed.insert(tp.clone(), last.offset + 1);
        let topic: Arc<str> = Arc::from(tp.0.as_str());
        Ok(Some(
            fetched
                .records
                .into_iter()
                .map(|record| GroupRecord {
                    topic: topic.clone(),
                    partition: tp.1,
                    record,
                })
                .collect(),
        ))
    }

    /// Commits the offsets after every record polls returned (at-least-once: call it
    /// once they are processed). A rebalance found on the way is followed and the
    /// partitions still owned are committed.
    pub fn commit(&mut self) -> Result<(), ClientError> {
        self.last_commit = Instant::now();
        let due: Vec<(TopicPartition, u64)> = self
            .consumed
            .iter()
            .filter(|(tp, offset)| self.committed.get(*tp) != Some(offset))
            .map(|(tp, offset)| (tp.clone(), *offset))
            .collect();
        self.commit_offsets(&due)
    }

    /// Commits the given offsets (the next offset to consume per partition), for
    /// partitions this member owns.
    pub fn commit_offsets(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<(), ClientError> {
        for attempt in 0..COMMIT_ATTEMPTS {
            let owned: Vec<_> = offsets
                .iter()
                .filter(|(tp, _)| self.positions.contains_key(tp))
                .map(|(tp, offset)| (tp.clone(), *offset, String::new()))
                .collect();
            if owned.is_empty() {
                return Ok(());
            }
            let (group, member) = (&self.config.group, &self.membership.member_id);
            match self
                .client
                .commit_offsets(group, member, self.membership.generation, &owned)
            {
                Ok(()) => {
                    for (tp, offset, _) in owned {
                        self.committed.insert(tp, offset);
                    }
                    return Ok(());
                }
                // A rebalance happened: take it, then commit what is still ours.
                Err(error) if attempt + 1 < COMMIT_ATTEMPTS && is_rebalance(&error) => {
                    self.heartbeat()?
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Commits what was consumed (automatic commits on) and leaves the group: its
    /// partitions go to the others at once.
    pub fn close(mut self) -> Result<(), ClientError> {
        let committed = match self.config.auto_commit {
            Some(_) => self.commit(),
            None => Ok(()),
        };
        // Leave even if the commit failed: the partitions move now, not after a timeout.
        let left = self
            .client
            .leave_group(&self.config.group, &self.membership.member_id);
        committed.and(left)
    }

    fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.config.join.session_timeout_ms) / 3)
            .min(MAX_HEARTBEAT_INTERVAL)
    }

    /// Asks the coordinator now for the group's generation and this member's partitions
    /// (`poll` does every `MAX_HEARTBEAT_INTERVAL`), following a rebalance at once.
    pub fn refresh(&mut self) -> Result<(), ClientError> {
        self.heartbeat()
    }

    fn heartbeat_if_due(&mut self) -> Result<(), ClientError> {
        if self.last_heartbeat.elapsed() >= self.heartbeat_interval() {
            self.heartbeat()?;
        }
        Ok(())
    }

    /// Heartbeats; follows a rebalance; joins again (as a new member) if removed.
    fn heartbeat(&mut self) -> Result<(), ClientError> {
        self.last_heartbeat = Instant::now();
        let (group, member) = (&self.config.group, &self.membership.member_id);
        let membership = match self
            .client
            .heartbeat(group, member, self.membership.generation)
        {
            Ok(membership) => membership,
            Err(error) if is_code(&error, ErrorCode::UnknownMember) => {
                tracing::warn!(group = %self.config.group, member = %self.membership.member_id, "removed from the group (session timed out): joining again");
                self.client
                    .join_group(group, "", &self.config.topics, &self.config.join)?
            }
            Err(error) => return Err(error),
        };
        self.take_assignment(membership)
    }

    /// Switches to a (possibly) new generation and assignment: revoked partitions are
    /// dropped, assigned ones start at their committed offset.
    fn take_assignment(&mut self, membership: Membership) -> Result<(), ClientError> {
        let before: BTreeSet<TopicPartition> = self.membership.assignment.iter().cloned().collect();
        let after: BTreeSet<TopicPartition> = membership.assignment.iter().cloned().collect();
        let changed = membership.generation != self.membership.generation
            || membership.member_id != self.membership.member_id
            || before != after
            || self.positions.is_empty() && !after.is_empty();
        self.membership = membership;
        if !changed {
            return Ok(());
        }
        let revoked: Vec<_> = before.difference(&after).cloned().collect();
        let assigned: Vec<_> = after.difference(&before).cloned().collect();
        for tp in &revoked {
            self.positions.remove(tp);
            self.consumed.remove(tp);
            self.committed.remove(tp);
            self.unplaced.remove(tp);
            self.pipeline.forget(tp);
        }
        self.position_assigned(&assigned)?;
        let rebalance = Rebalance {
            generation: self.membership.generation,
            revoked,
            assigned,
        };
        if let Some(listener) = self.listener.as_mut() {
            listener(&rebalance);
        }
        Ok(())
    }

    /// Positions newly assigned partitions at their committed offsets (or per
    /// `offset_reset` where none is committed).
    fn position_assigned(&mut self, assigned: &[TopicPartition]) -> Result<(), ClientError> {
        if assigned.is_empty() {
            return Ok(());
        }
        let committed = self.client.fetch_offsets(
            &self.config.group,
            &self.config.join.instance,
            &self.config.topics,
        )?;
        for tp in assigned {
            let offset = committed
                .iter()
                .find(|c| c.topic == tp.0 && c.partition == tp.1)
                .map(|c| c.offset);
            let start = match offset {
                Some(offset) => {
                    self.committed.insert(tp.clone(), offset);
                    offset
                }
                None => self.reset_position(tp)?,
            };
            self.position(tp, start);
        }
        Ok(())
    }

    /// Where a partition starts without a usable committed offset.
    fn reset_position(&mut self, tp: &TopicPartition) -> Result<u64, ClientError> {
        let (start, end) = self.client.partition_offsets(&tp.0, tp.1)?;
        match self.config.offset_reset {
            OffsetReset::Earliest => Ok(start),
            OffsetReset::Latest => Ok(end),
            OffsetReset::Error => Err(ClientError::Broker {
                code: ErrorCode::OffsetOutOfRange,
                message: format!(
                    "{}/{} has no usable committed offset (it keeps {start}..{end}) and offset_reset is Error",
                    tp.0, tp.1
                ),
                leader_address: None,
            }),
        }
    }
}

fn is_code(error: &ClientError, wanted: ErrorCode) -> bool {
    match error {
        ClientError::Broker { code, .. } => *code == wanted,
        ClientError::GaveUp { last, .. } => is_code(last, wanted),
        _ => false,
    }
}

/// The group moved on without this member's knowledge: a rebalance, or its removal
/// (the heartbeat that follows joins it again).
fn is_rebalance(error: &ClientError) -> bool {
    is_code(error, ErrorCode::StaleGeneration)
        || is_code(error, ErrorCode::NotAssigned)
        || is_code(error, ErrorCode::UnknownMember)
}
