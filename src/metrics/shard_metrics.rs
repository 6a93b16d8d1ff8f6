//! What one shard counts: its clients' requests (`ShardMetrics`) and each of its replica
//! groups' state and events (`GroupMetrics`), as handles into the node's families taken
//! once, so the hot path adds to an atomic without looking a series up.
//!
//! Owns the handles and the last values it published. Never decides anything and never
//! reads a replica itself: the driver hands it what it saw.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::families::{
    AcksLabels, ErrorLabels, FollowerLabels, GroupLabels, NodeMetrics, ProduceLabels, RoleLabels,
    ShardLabels, ROLES,
};
use crate::protocol::wire::{Acks, ErrorCode};
use crate::replication::ReplicaCounts;

/// The produce series of one acks mode whose result is `ok`.
#[derive(Clone, Debug)]
struct ProduceOk {
    requests: Counter,
    records: Counter,
    bytes: Counter,
    latency: Histogram,
}

/// One shard's client-side series. Cheap to clone (handles share their series).
#[derive(Clone, Debug)]
pub struct ShardMetrics {
    node: Arc<NodeMetrics>,
    shard: u32,
    /// By acks mode: quorum, leader, none.
    produce_ok: [ProduceOk; 3],
    fetch_requests: Counter,
    fetch_bytes: Counter,
    fetch_long_polls: Counter,
    connections: Gauge,
    requests_in_flight: Gauge,
}

fn acks_name(acks: Acks) -> &'static str {
    match acks {
        Acks::Leader => "leader",
        Acks::None => "none",
        _ => "quorum",
    }
}

fn acks_slot(acks: Acks) -> usize {
    match acks {
        Acks::Leader => 1,
        Acks::None => 2,
        _ => 0,
    }
}

/// An error code as a label value (its name in the protocol's schema).
pub fn code_name(code: ErrorCode) -> &'static str {
    code.variant_name().unwrap_or("Unknown")
}

impl ShardMetrics {
    /// The series of shard `shard` in `node`'s families.
    pub fn new(node: Arc<NodeMetrics>, shard: u32) -> ShardMetrics {
        let labels = ShardLabels { shard };
        let produce_ok = [Acks::Quorum, Acks::Leader, Acks::None].map(|acks| {
            let labels = ProduceLabels {
                shard,
                acks: acks_name(acks),
                result: "ok",
            };
            ProduceOk {
                requests: node.produce_requests.get_or_create_owned(&labels),
                records: node.produce_records.get_or_create_owned(&labels),
                bytes: node.produce_bytes.get_or_create_owned(&labels),
                latency: node.produce_latency.get_or_create_owned(&AcksLabels {
                    shard,
                    acks: acks_name(acks),
                }),
            }
        });
        ShardMetrics {
            shard,
            produce_ok,
            fetch_requests: node.fetch_requests.get_or_create_owned(&labels),
            fetch_bytes: node.fetch_bytes.get_or_create_owned(&labels),
            fetch_long_polls: node.fetch_long_polls.get_or_create_owned(&labels),
            connections: node.connections.get_or_create_owned(&labels),
            requests_in_flight: node.requests_in_flight.get_or_create_owned(&labels),
            node,
        }
    }

    /// Series of a node of their own (tests, and drivers started without a node).
    pub fn detached(shard: u32) -> ShardMetrics {
        ShardMetrics::new(NodeMetrics::new(0), shard)
    }

    /// The shard these series are of.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// A produce request was answered after `elapsed`: `Ok` if every partition was,
    /// else the error code of the first that was not.
    pub fn produce_answered(&self, acks: Acks, result: Result<(), ErrorCode>, elapsed: Duration) {
        let ok = &self.produce_ok[acks_slot(acks)];
        ok.latency.observe(elapsed.as_secs_f64());
        match result {
            Ok(()) => ok.requests.inc(),
            Err(code) => self
                .node
                .produce_requests
                .get_or_create(&self.produce_labels(acks, code))
                .inc(),
        };
    }

    /// One partition's batch of a produce request: stored (`Ok`) or refused.
    pub fn produce_batch(
        &self,
        acks: Acks,
        result: Result<(), ErrorCode>,
        records: u64,
        bytes: u64,
    ) {
        match result {
            Ok(()) => {
                let ok = &self.produce_ok[acks_slot(acks)];
                ok.records.inc_by(records);
                ok.bytes.inc_by(bytes);
            }
            Err(code) => {
                let labels = self.produce_labels(acks, code);
                self.node
                    .produce_records
                    .get_or_create(&labels)
                    .inc_by(records);
                self.node.produce_bytes.get_or_create(&labels).inc_by(bytes);
                self.rejected(code);
            }
        }
    }

    /// One partition's batch was stored before (an idempotent resend, a spill journal's
    /// replay): answered ok, counted under `result="duplicate"`, not as new records.
    pub fn produce_duplicate(&self, acks: Acks, records: u64, bytes: u64) {
        let labels = ProduceLabels {
            shard: self.shard,
            acks: acks_name(acks),
            result: "duplicate",
        };
        self.node
            .produce_records
            .get_or_create(&labels)
            .inc_by(records);
        self.node.produce_bytes.get_or_create(&labels).inc_by(bytes);
    }

    fn produce_labels(&self, acks: Acks, code: ErrorCode) -> ProduceLabels {
        ProduceLabels {
            shard: self.shard,
            acks: acks_name(acks),
            result: code_name(code),
        }
    }

    /// A fetch was answered with `bytes` of batches; `waited` if it long-polled.
    pub fn fetched(&self, bytes: u64, waited: bool) {
        self.fetch_requests.inc();
        self.fetch_bytes.inc_by(bytes);
        if waited {
            self.fetch_long_polls.inc();
        }
    }

    /// A request (or a produce partition) was answered with an error.
    pub fn rejected(&self, code: ErrorCode) {
        let labels = ErrorLabels {
            shard: self.shard,
            code: code_name(code),
        };
        self.node.rejected_requests.get_or_create(&labels).inc();
    }

    /// A client connection opened (`true`) or closed.
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections.inc();
        } else {
            self.connections.dec();
        }
    }

    /// A request was received (`true`) or answered.
    pub fn request_in_flight(&self, received: bool) {
        if received {
            self.requests_in_flight.inc();
        } else {
            self.requests_in_flight.dec();
        }
    }

    /// The series of replica group `group` on this shard.
    pub fn group(&self, group: u32) -> GroupMetrics {
        GroupMetrics::new(
            self.node.clone(),
            GroupLabels {
                shard: self.shard,
                group,
            },
        )
    }
}

/// A group's state as the driver saw it, to publish.
pub struct GroupSnapshot<'a> {
    /// Its role (one of `ROLES`).
    pub role: &'static str,
    /// Term, commit, applied, durable and last index.
    pub term: u64,
    /// Highest committed index.
    pub commit: u64,
    /// Highest applied index.
    pub applied: u64,
    /// Highest durable index.
    pub durable: u64,
    /// Highest index in the log.
    pub last: u64,
    /// (node, entries behind, bytes behind) of each follower, when leading.
    pub followers: &'a [(u32, u64, u64)],
    /// Bytes of entries in the log's segments.
    pub log_bytes: u64,
    /// The log's segment files.
    pub log_segments: u64,
    /// The replica's counts so far.
    pub counts: ReplicaCounts,
}

/// One replica group's series on this shard. Its series leave the families when it is
/// dropped (the group moved away or stopped): no stale role or lag stays behind.
#[derive(Debug)]
pub struct GroupMetrics {
    node: Arc<NodeMetrics>,
    labels: GroupLabels,
    term: Gauge,
    commit: Gauge,
    applied: Gauge,
    durable: Gauge,
    last: Gauge,
    elections_started: Counter,
    elections_won: Counter,
    transfers: Counter,
    flushes: Counter,
    flush_latency: Histogram,
    flush_bytes: Histogram,
    log_bytes: Gauge,
    log_segments: Gauge,
    retention_cuts: Counter,
    snapshots_sent: Counter,
    snapshots_installed: Counter,
    /// `keel_raft_role` of each of `ROLES`.
    roles: [Gauge; ROLES.len()],
    /// The role last seen (`observe_role`).
    role: Cell<&'static str>,
    /// A candidate after a won pre-vote (an election, not a transfer).
    in_election: Cell<bool>,
    /// The replica's counts last published.
    counts: Cell<ReplicaCounts>,
    /// The followers whose lag was last published.
    followers: RefCell<Vec<u32>>,
    /// The series were taken out of the families (`remove`): never twice, so a later
    /// replica of the same group on this shard keeps its own.
    removed: Cell<bool>,
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl GroupMetrics {
    fn new(node: Arc<NodeMetrics>, labels: GroupLabels) -> GroupMetrics {
        let gauge = |family: &prometheus_client::metrics::family::Family<GroupLabels, Gauge>| {
            family.get_or_create_owned(&labels)
        };
        let counter = |family: &prometheus_client::metrics::family::Family<
            GroupLabels,
            Counter,
        >| { family.get_or_create_owned(&labels) };
        GroupMetrics {
            term: gauge(&node.term),
            commit: gauge(&node.commit_index),
            applied: gauge(&node.applied_index),
            durable: gauge(&node.durable_index),
            last: gauge(&node.last_index),
            elections_started: counter(&node.elections_started),
            elections_won: counter(&node.elections_won),
            transfers: counter(&node.leadership_transfers),
            flushes: counter(&node.flushes),
            flush_latency: node.flush_latency.get_or_create_owned(&labels),
            flush_bytes: node.flush_bytes.get_or_create_owned(&labels),
            log_bytes: gauge(&node.log_bytes),
            log_segments: gauge(&node.log_segments),
            retention_cuts: counter(&node.retention_cuts),
            snapshots_sent: counter(&node.snapshots_sent),
            snapshots_installed: counter(&node.snapshots_installed),
            roles: ROLES.map(|role| {
                node.role.get_or_create_owned(&RoleLabels {
                    shard: labels.shard,
                    group: labels.group,
                    role,
                })
            }),
            role: Cell::new(""),
            in_election: Cell::new(false),
            counts: Cell::new(ReplicaCounts::default()),
            followers: RefCell::new(Vec::new()),
            removed: Cell::new(false),
            labels,
            node,
        }
    }

    /// The replica's role after an input. An election is a campaign after a won
    /// pre-vote (pre-candidate to candidate: the election timeout ran out); it is won when
    /// that candidate becomes leader. A leadership transfer's target campaigns without a
    /// pre-vote: not an election (the old leader counts the transfer).
    pub fn observe_role(&self, role: &'static str) {
        let before = self.role.replace(role);
        match (before, role) {
            (before, role) if before == role => {}
            ("pre-candidate", "candidate") => {
                self.elections_started.inc();
                self.in_election.set(true);
            }
            ("candidate", "leader") if self.in_election.replace(false) => {
                self.elections_won.inc();
            }
            // A group of one voter campaigns and wins within one input (a transfer needs
            // another voter's vote: never within one input).
            ("follower" | "pre-candidate", "leader") => {
                self.elections_started.inc();
                self.elections_won.inc();
            }
            _ => self.in_election.set(false),
        }
    }

    #[cfg(test)]
    fn elections(&self) -> (u64, u64) {
        (self.elections_started.get(), self.elections_won.get())
    }

    /// A flush of `bytes` took `elapsed`.
    pub fn flushed(&self, bytes: u64, elapsed: Duration) {
        self.flushes.inc();
        self.flush_latency.observe(elapsed.as_secs_f64());
        self.flush_bytes.observe(bytes as f64);
    }

    /// The log's oldest segments were removed.
    pub fn retention_cut(&self) {
        self.retention_cuts.inc();
    }

    /// A snapshot from the leader was installed.
    pub fn snapshot_installed(&self) {
        self.snapshots_installed.inc();
    }

    /// Writes the group's state into its gauges.
    pub fn publish(&self, now: &GroupSnapshot<'_>) {
        if self.removed.get() {
            return;
        }
        self.term.set(gauge_value(now.term));
        self.commit.set(gauge_value(now.commit));
        self.applied.set(gauge_value(now.applied));
        self.durable.set(gauge_value(now.durable));
        self.last.set(gauge_value(now.last));
        self.log_bytes.set(gauge_value(now.log_bytes));
        self.log_segments.set(gauge_value(now.log_segments));
        for (gauge, role) in self.roles.iter().zip(ROLES) {
            gauge.set(i64::from(role == now.role));
        }
        let before = self.counts.replace(now.counts);
        // A replica started again (after a full disk) counts from 0: all of its count is
        // new.
        let added = |now: u64, before: u64| now.checked_sub(before).unwrap_or(now);
        self.transfers.inc_by(added(
            now.counts.transfers_started,
            before.transfers_started,
        ));
        self.snapshots_sent
            .inc_by(added(now.counts.snapshots_sent, before.snapshots_sent));
        self.publish_followers(now.followers);
    }

    fn publish_followers(&self, followers: &[(u32, u64, u64)]) {
        let mut published = self.followers.borrow_mut();
        for gone in published
            .iter()
            .filter(|node| !followers.iter().any(|f| f.0 == **node))
        {
            let labels = self.follower_labels(*gone);
            self.node.follower_lag_entries.remove(&labels);
            self.node.follower_lag_bytes.remove(&labels);
        }
        published.clear();
        for &(node, entries, bytes) in followers {
            let labels = self.follower_labels(node);
            self.node
                .follower_lag_entries
                .get_or_create(&labels)
                .set(gauge_value(entries));
            self.node
                .follower_lag_bytes
                .get_or_create(&labels)
                .set(gauge_value(bytes));
            published.push(node);
        }
    }

    fn role_labels(&self, role: &'static str) -> RoleLabels {
        RoleLabels {
            shard: self.labels.shard,
            group: self.labels.group,
            role,
        }
    }

    fn follower_labels(&self, follower: u32) -> FollowerLabels {
        FollowerLabels {
            shard: self.labels.shard,
            group: self.labels.group,
            follower,
        }
    }
}

impl Drop for GroupMetrics {
    fn drop(&mut self) {
        self.remove();
    }
}

impl GroupMetrics {
    /// Takes the group's series out of the node's families (the replica stopped for
    /// good): a scrape no longer shows them.
    pub fn remove(&self) {
        if self.removed.replace(true) {
            return;
        }
        let node = &self.node;
        let labels = &self.labels;
        for family in [
            &node.term,
            &node.commit_index,
            &node.applied_index,
            &node.durable_index,
            &node.last_index,
            &node.log_bytes,
            &node.log_segments,
        ] {
            family.remove(labels);
        }
        for family in [
            &node.elections_started,
            &node.elections_won,
            &node.leadership_transfers,
            &node.flushes,
            &node.retention_cuts,
            &node.snapshots_sent,
            &node.snapshots_installed,
        ] {
            family.remove(labels);
        }
        node.flush_latency.remove(labels);
        node.flush_bytes.remove(labels);
        for role in ROLES {
            node.role.remove(&self.role_labels(role));
        }
        self.publish_followers(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_campaign_after_a_pre_vote_counts_as_an_election() {
        let group = ShardMetrics::detached(0).group(1);
        // A start: an election, won.
        for role in ["follower", "pre-candidate", "candidate", "leader"] {
            group.observe_role(role);
        }
        assert_eq!(group.elections(), (1, 1));
        // A transfer to this replica: a campaign without a pre-vote, not an election.
        for role in ["follower", "candidate", "leader"] {
            group.observe_role(role);
        }
        assert_eq!(group.elections(), (1, 1));
        // A lone voter's election, seen as one change.
        for role in ["follower", "leader"] {
            group.observe_role(role);
        }
        assert_eq!(group.elections(), (2, 2));
        // An election lost.
        for role in ["follower", "pre-candidate", "candidate", "follower"] {
            group.observe_role(role);
        }
        assert_eq!(group.elections(), (3, 2));
    }

    #[test]
    fn a_replica_started_again_counts_from_zero_without_running_backwards() {
        let group = ShardMetrics::detached(0).group(1);
        let publish = |transfers| {
            group.publish(&GroupSnapshot {
                role: "leader",
                term: 1,
                commit: 0,
                applied: 0,
                durable: 0,
                last: 0,
                followers: &[],
                log_bytes: 0,
                log_segments: 1,
                counts: ReplicaCounts {
                    transfers_started: transfers,
                    snapshots_sent: 0,
                },
            })
        };
        publish(3);
        publish(1); // a new replica after a full disk
        publish(2);
        assert_eq!(group.transfers.get(), 5);
    }
}
