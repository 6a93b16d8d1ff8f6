//! Every metric a node exports, named once: the Prometheus registry and its families
//! (`NodeMetrics`), their label sets and histogram buckets.
//!
//! Owns names, help texts and label sets. Never counts anything itself (`shard_metrics`
//! does, on each shard's thread) and never serves them (`endpoint`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// A shard's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    /// The shard.
    pub shard: u32,
}

/// Produce requests, records and bytes: by acks mode and result (`ok` or the error code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProduceLabels {
    /// The shard.
    pub shard: u32,
    /// quorum, leader or none.
    pub acks: &'static str,
    /// ok, or the error code of the answer.
    pub result: &'static str,
}

/// Produce latency: by acks mode.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcksLabels {
    /// The shard.
    pub shard: u32,
    /// quorum, leader or none.
    pub acks: &'static str,
}

/// Refused requests: by error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The shard.
    pub shard: u32,
    /// The error code of the answer.
    pub code: &'static str,
}

/// A replica group's series on this node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// The shard running the replica.
    pub shard: u32,
    /// The replica group.
    pub group: u32,
}

/// A replica's role: one series per role, 1 for the current one.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    /// The shard running the replica.
    pub shard: u32,
    /// The replica group.
    pub group: u32,
    /// leader, follower, learner, candidate, pre-candidate or failed.
    pub role: &'static str,
}

/// A follower as its leader sees it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    /// The shard running the leader.
    pub shard: u32,
    /// The replica group.
    pub group: u32,
    /// The follower's node.
    pub follower: u32,
}

/// Every role a replica's status names (`GroupStatusView::role`).
pub const ROLES: [&str; 6] = [
    "leader",
    "follower",
    "learner",
    "candidate",
    "pre-candidate",
    "failed",
];

/// Produce latency buckets: 50 µs doubling to 26 s, then 60 s (the floor of a quorum
/// write on loopback is ~250 µs; a request times out at its own deadline, 30 s by default).
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 20).chain([60.0]))
}

/// Flush latency buckets: 25 µs doubling to 0.8 s (an O_DSYNC write takes ~100-300 µs
/// here; a stalled device shows in the top buckets).
fn flush_latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(25e-6, 2.0, 16))
}

/// Bytes per flush: 4 KiB (one block) doubling to 16 MiB.
fn flush_bytes_buckets() -> Histogram {
    Histogram::new(exponential_buckets(4096.0, 2.0, 13))
}

type Counters<L> = Family<L, Counter>;
type Gauges<L> = Family<L, Gauge>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// A node's metrics: every family, shared by its shards (each counts its own series)
/// and read by the endpoint.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
    pub(crate) produce_requests: Counters<ProduceLabels>,
    pub(crate) produce_records: Counters<ProduceLabels>,
    pub(crate) produce_bytes: Counters<ProduceLabels>,
    pub(crate) produce_latency: Histograms<AcksLabels>,
    pub(crate) fetch_requests: Counters<ShardLabels>,
    pub(crate) fetch_bytes: Counters<ShardLabels>,
    pub(crate) fetch_long_polls: Counters<ShardLabels>,
    pub(crate) rejected_requests: Counters<ErrorLabels>,
    pub(crate) connections: Gauges<ShardLabels>,
    pub(crate) requests_in_flight: Gauges<ShardLabels>,
    pub(crate) role: Gauges<RoleLabels>,
    pub(crate) term: Gauges<GroupLabels>,
    pub(crate) commit_index: Gauges<GroupLabels>,
    pub(crate) applied_index: Gauges<GroupLabels>,
    pub(crate) durable_index: Gauges<GroupLabels>,
    pub(crate) last_index: Gauges<GroupLabels>,
    pub(crate) follower_lag_entries: Gauges<FollowerLabels>,
    pub(crate) follower_lag_bytes: Gauges<FollowerLabels>,
    pub(crate) elections_started: Counters<GroupLabels>,
    pub(crate) elections_won: Counters<GroupLabels>,
    pub(crate) leadership_transfers: Counters<GroupLabels>,
    pub(crate) flushes: Counters<GroupLabels>,
    pub(crate) flush_latency: Histograms<GroupLabels>,
    pub(crate) flush_bytes: Histograms<GroupLabels>,
    pub(crate) log_bytes: Gauges<GroupLabels>,
    pub(crate) log_segments: Gauges<GroupLabels>,
    pub(crate) retention_cuts: Counters<GroupLabels>,
    pub(crate) snapshots_sent: Counters<GroupLabels>,
    pub(crate) snapshots_installed: Counters<GroupLabels>,
}

impl NodeMetrics {
    /// The metrics of node `node_id` (every series carries its `node` label).
    pub fn new(node_id: u32) -> Arc<NodeMetrics> {
        let mut registry = Registry::with_prefix_and_labels(
            "keel",
            [("node".into(), node_id.to_string().into())].into_iter(),
        );
        let metrics = NodeMetrics {
            produce_requests: Family::default(),
            produce_records: Family::default(),
            produce_bytes: Family::default(),
            produce_latency: Family::new_with_constructor(latency_buckets),
            fetch_requests: Family::default(),
            fetch_bytes: Family::default(),
            fetch_long_polls: Family::default(),
            rejected_requests: Family::default(),
            connections: Family::default(),
            requests_in_flight: Family::default(),
            role: Family::default(),
            term: Family::default(),
            commit_index: Family::default(),
            applied_index: Family::default(),
            durable_index: Family::default(),
            last_index: Family::default(),
            follower_lag_entries: Family::default(),
            follower_lag_bytes: Family::default(),
            elections_started: Family::default(),
            elections_won: Family::default(),
            leadership_transfers: Family::default(),
            flushes: Family::default(),
            flush_latency: Family::new_with_constructor(flush_latency_buckets),
            flush_bytes: Family::new_with_constructor(flush_bytes_buckets),
            log_bytes: Family::default(),
            log_segments: Family::default(),
            retention_cuts: Family::default(),
            snapshots_sent: Family::default(),
            snapshots_installed: Family::default(),
            registry: Registry::default(),
        };
        metrics.register_clients(&mut registry);
        metrics.register_raft(&mut registry);
        metrics.register_log(&mut registry);
        Arc::new(NodeMetrics {
            registry,
            ..metrics
        })
    }

    /// The registry to encode for a scrape.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn register_clients(&self, r: &mut Registry) {
        let seconds = Unit::Seconds;
        let bytes = Unit::Bytes;
        r.register(
            "produce_requests",
            "Produce requests answered, by acks mode and result (ok or the error code)",
            self.produce_requests.clone(),
        );
        r.register(
            "produce_records",
            "Records in the produce requests answered, by acks mode and result",
            self.produce_records.clone(),
        );
        r.register_with_unit(
            "produce",
            "Record batch bytes in the produce requests answered, by acks mode and result",
            bytes.clone(),
            self.produce_bytes.clone(),
        );
        r.register_with_unit(
            "produce_latency",
            "Time from a produce request's arrival to its answer, by acks mode",
            seconds,
            self.produce_latency.clone(),
        );
        r.register(
            "fetch_requests",
            "Fetch requests answered",
            self.fetch_requests.clone(),
        );
        r.register_with_unit(
            "fetch",
            "Bytes of fetch answers (their frames: batches and headers)",
            bytes,
            self.fetch_bytes.clone(),
        );
        r.register(
            "fetch_long_poll_waits",
            "Fetches that waited for data to arrive (long polls)",
            self.fetch_long_polls.clone(),
        );
        r.register(
            "rejected_requests",
            "Requests (or produce partitions) answered with an error, by error code",
            self.rejected_requests.clone(),
        );
        r.register(
            "client_connections",
            "Client connections open",
            self.connections.clone(),
        );
        r.register(
            "requests_in_flight",
            "Client requests received and not yet answered",
            self.requests_in_flight.clone(),
        );
    }

    fn register_raft(&self, r: &mut Registry) {
        r.register(
            "raft_role",
            "The replica's role: 1 for the current one (leader, follower, learner, \
             candidate, pre-candidate, failed), 0 for the others",
            self.role.clone(),
        );
        r.register("raft_term", "The replica's current term", self.term.clone());
        r.register(
            "raft_commit_index",
            "Highest log index known committed",
            self.commit_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "Highest log index applied to the partitions' state",
            self.applied_index.clone(),
        );
        r.register(
            "raft_durable_index",
            "Highest log index durable on this node's disk",
            self.durable_index.clone(),
        );
        r.register(
            "raft_last_index",
            "Highest log index in this node's log",
            self.last_index.clone(),
        );
        r.register(
            "raft_follower_lag_entries",
            "Entries a follower lacks, as its leader sees it (leaders only)",
            self.follower_lag_entries.clone(),
        );
        r.register_with_unit(
            "raft_follower_lag",
            "Log bytes a follower lacks, as its leader sees it (leaders only; to within \
             4 KiB)",
            Unit::Bytes,
            self.follower_lag_bytes.clone(),
        );
        r.register(
            "raft_elections_started",
            "Elections this replica stood in: campaigns after its election timeout and a \
             won pre-vote (a leadership transfer to it is not one)",
            self.elections_started.clone(),
        );
        r.register(
            "raft_elections_won",
            "Elections this replica stood in and won (it became leader)",
            self.elections_won.clone(),
        );
        r.register(
            "raft_leadership_transfers",
            "Leadership transfers this replica started as leader",
            self.leadership_transfers.clone(),
        );
        r.register(
            "snapshots_sent",
            "Snapshots this replica sent to followers behind its log",
            self.snapshots_sent.clone(),
        );
        r.register(
            "snapshots_installed",
            "Snapshots this replica installed from its leader",
            self.snapshots_installed.clone(),
        );
    }

    fn register_log(&self, r: &mut Registry) {
        r.register(
            "log_flushes",
            "Flushes of the CommitLog that wrote entries or the hard state (each ends with \
             them durable)",
            self.flushes.clone(),
        );
        r.register_with_unit(
            "log_flush_duration",
            "Time a flush took, from its start to its data being durable",
            Unit::Seconds,
            self.flush_latency.clone(),
        );
        r.register_with_unit(
            "log_flush_size",
            "Bytes written per flush (whole 4 KiB blocks: a partly filled block is written \
             again by the next flush)",
            Unit::Bytes,
            self.flush_bytes.clone(),
        );
        r.register_with_unit(
            "log_size",
            "Bytes of entries in the CommitLog's segments",
            Unit::Bytes,
            self.log_bytes.clone(),
        );
        r.register(
            "log_segments",
            "Segment files of the CommitLog",
            self.log_segments.clone(),
        );
        r.register(
            "log_retention_cuts",
            "Removals of the log's prefix asked by retention or a snapshot (whole oldest \
             segments go)",
            self.retention_cuts.clone(),
        );
    }
}
