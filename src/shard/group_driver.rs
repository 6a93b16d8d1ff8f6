//! The thin glommio driver of one shard's replica: feeds it inputs (ticks, peer
//! messages, client proposals, flush and disk completions) and carries out its effects
//! (sends, flushes, disk work, answers, notifications). It decides nothing.
//!
//! ```text
//! tick task ─┐  peer frames ─┐  client tasks ─┐      ┌─▶ PeerLinks (send)
//!            ▼               ▼                ▼      ├─▶ flush task ─▶ FlushDone ─┐
//!            └──────────▶ feed(input) ──▶ Replica ──┼─▶ disk task ──▶ DiskDone ──┤
//!                            ▲                       └─▶ answers, wake-ups, mesh   │
//!                            └─────────────────────────────────────────────────────┘
//! ```
//!
//! Everything runs on the shard's executor; the driver's own tasks (ticks, flushes, disk
//! work, reads) in the replica's task queue, even when a client's request set them off.
//! `feed` borrows the replica, calls `handle`, drops the borrow and only then carries out
//! the effects; nothing awaits while the replica is borrowed, and effects never call back
//! into it synchronously.

use std::cell::{Cell, Ref, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::TaskQueueHandle;
use raft::eraftpb::Message;

use crate::broker::state::{Applied, ShardState, Topics};
use crate::config::NodeConfig;
use crate::constants::{
    MAX_COMMITTED_BYTES_PER_READY, MAX_FETCH_WAITERS, MAX_GATHERED_PROPOSALS,
    MAX_GATHERED_PROPOSAL_BYTES, MAX_INFLIGHT_APPENDS, MAX_UNCOMMITTED_BYTES,
    MAX_WAITING_PROPOSALS, METRICS_PUBLISH_TICKS, NO_SPACE_RETRY_INTERVAL, RAFT_MAX_MESSAGE_BYTES,
};
use crate::controller::{GroupId, Placement, CONTROLLER_GROUP};
use crate::log::raft_storage::from_conf_state;
use crate::log::{CommitLog, LogError};
use crate::metrics::{GroupMetrics, GroupSnapshot};
use crate::replication::membership::{Membership, MembershipChange};
use crate::replication::{
    Defects, DiskWork, Effect, Input, OpId, Proposal, Replica, ReplicaConfig, ReplicaError,
    RequestId, RetentionPolicy, ShardError, StorageFailure,
};
use crate::shard::commit_log_store::storage_failure;
use crate::shard::election_watch::ElectionWatch;
use crate::shard::group_sessions::GroupSessions;
use crate::shard::partition_bounds::BoundsQuery;
use crate::shard::snapshots::SnapshotFiles;
use crate::transport::peer_links::LinkTarget;
use crate::transport::PeerLinks;

/// How long a stopping leader waits for a follower to take over.
pub const LEADERSHIP_TRANSFER_WAIT: Duration = Duration::from_secs(2);

/// Called with the topic list whenever the applied topics change.
/// Told the controller's topics and their epoch (the controller's applied index then).
pub type TopicsHook = Box<dyn Fn(Topics, u64)>;

/// Called with (group, leader node) whenever this shard's group changes leader.
pub type LeaderHook = Box<dyn Fn(GroupId, u32)>;

/// How a shard sends a question to another shard of its node.
pub type ShardAsker = Box<dyn Fn(u32, BoundsQuery)>;

/// A replica's configuration as a membership answer carries it.
pub struct MembershipView {
    /// The configuration this replica applied.
    pub membership: Membership,
    /// Learners the leader counts as caught up (empty unless leading).
    pub caught_up: Vec<u64>,
    /// Each learner's matched index, in the order of `membership.learners` (empty unless
    /// leading).
    pub learner_matched: Vec<u64>,
    /// The leader's last log index (0 unless leading).
    pub last_index: u64,
    /// No change proposed before can take effect any more (`Replica::changes_settled`).
    pub settled: bool,
}

/// A replica group's state, for `keel cluster status`.
#[derive(Clone, Debug)]
pub struct GroupStatusView {
    /// leader, follower, learner, candidate, pre-candidate or failed.
    pub role: &'static str,
    /// Leader node (0: unknown).
    pub leader: u32,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// Durable log index.
    pub durable: u64,
    /// (node, matched, lag) of each follower, when leading.
    pub followers: Vec<(u32, u64, u64)>,
}

type Answer = Result<Applied, ShardError>;

/// A proposal's answer, to wait for.
pub struct Pending(LocalReceiver<Answer>);

impl Pending {
    /// Waits for the answer (for acks=none: accepted or refused, at once).
    pub async fn wait(self) -> Answer {
        self.0.recv().await.unwrap_or(Err(ShardError::ShuttingDown))
    }
}

/// Proposals gathered for one replica input (bounded by `MAX_GATHERED_PROPOSALS` and
/// `MAX_GATHERED_PROPOSAL_BYTES`).
#[derive(Default)]
struct Gathered {
    proposals: Vec<Proposal>,
    bytes: usize,
}

/// One shard: its replica, its log and what waits on them.
pub struct ShardCore {
    /// This shard's index.
    pub shard_id: u32,
    /// The replica group this shard runs.
    pub group: GroupId,
    /// Where every group runs and what it holds (updated as the controller places
    /// groups: `set_placement`).
    placement: RefCell<Placement>,
    /// The node's configuration.
    pub config: NodeConfig,
    /// The group's CommitLog (the replica holds a clone as its store).
    pub log: CommitLog,
    pub(super) replica: RefCell<Replica<CommitLog>>,
    /// Requests waiting for the replica's answer.
    pub(super) requests: RefCell<BTreeMap<RequestId, LocalSender<Answer>>>,
    /// Proposals of this executor pass not yet handed to the replica.
    gathered: RefCell<Gathered>,
    /// Consumer group members' sessions (while this shard coordinates as leader).
    pub(super) sessions: RefCell<GroupSessions>,
    next_request: Cell<u64>,
    /// The next group id this driver may give out (`reserve_group_id`).
    reserved_group_id: Cell<u32>,
    data_waiters: RefCell<Vec<LocalSender<()>>>,
    pub(super) failure: RefCell<Option<String>>,
    /// The failure was a full disk: the replica starts again once space is free.
    pub(super) no_space: Cell<bool>,
    /// The space reserve is released: the replica is told space is short (`no_space.rs`).
    pub(super) space_low: Cell<bool>,
    /// The replica's life: completions of I/O started by an earlier life are dropped.
    pub(super) generation: Cell<u64>,
    pub(super) recovering: Cell<bool>,
    pub(super) stopping: Cell<bool>,
    /// The group moved off this node: this replica stopped for good (`retire`).
    retired: Cell<bool>,
    topics_changed: RefCell<Option<TopicsHook>>,
    /// The controller's applied index when its topics, as this shard knows them, were
    /// told: metadata answers carry it, so a client can tell a stale answer.
    metadata_epoch: Cell<u64>,
    /// Links to the same shard of the other nodes.
    peers: PeerLinks,
    /// Leader of each group as last heard (absent or 0: unknown), for metadata answers.
    leaders: RefCell<BTreeMap<GroupId, u32>>,
    leader_changed: RefCell<Option<LeaderHook>>,
    shard_asker: RefCell<Option<ShardAsker>>,
    hand_over_done: RefCell<Option<LocalSender<Option<u64>>>>,
    /// Snapshots of the applied state, next to the log.
    pub(super) snapshots: SnapshotFiles,
    /// Why the replica stood for election or stopped leading, for the log.
    election_watch: ElectionWatch,
    /// The group's series in the node's metrics.
    metrics: GroupMetrics,
    /// The task queue the replica's own tasks run in (the one it was started in): work
    /// a client's request sets off (a flush, disk work) runs there, not in the clients'.
    queue: TaskQueueHandle,
}

/// The settings of this node's replica of `group`.
pub(super) fn replica_config(
    group: GroupId,
    placement: &Placement,
    config: &NodeConfig,
) -> ReplicaConfig {
    let voters = placement.replicas(group).to_vec();
    let node = u64::from(config.node_id);
    let balancing = config.leader_balance_delay.is_some();
    let tick_ms = config.tick_ms.max(1);
    let max_unflushed_bytes = config.log.max_unflushed_bytes;
    ReplicaConfig {
        replica_id: node,
        group_id: group.0,
        controller_group: group == CONTROLLER_GROUP,
        campaign_at_start: balancing && placement.preferred_leader(group) == Some(node),
        voters,
        learners: placement.learners(group).to_vec(),
        preferred_leader: placement.preferred_leader(group),
        election_ticks: config.election_ticks,
        heartbeat_ticks: config.heartbeat_ticks,
        max_message_bytes: RAFT_MAX_MESSAGE_BYTES,
        // A follower holds the leader's whole window unflushed.
        max_inflight_messages: (max_unflushed_bytes / RAFT_MAX_MESSAGE_BYTES)
            .clamp(1, MAX_INFLIGHT_APPENDS) as usize,
        max_unflushed_bytes,
        max_uncommitted_bytes: MAX_UNCOMMITTED_BYTES,
        max_waiting_proposals: MAX_WAITING_PROPOSALS,
        max_committed_bytes_per_ready: MAX_COMMITTED_BYTES_PER_READY,
        leader_balance_delay_ticks: config
            .leader_balance_delay
            .map(|d| (d.as_millis() as u64 / tick_ms).max(1)),
        retention: RetentionPolicy {
            bytes: config.retention_bytes,
            age_ms: config.retention_age.map(|d| d.as_millis() as u64),
        },
        snapshot_resend_ticks: 10 * config.election_ticks as u64,
        commit_persist_ticks: (100 / tick_ms).max(1),
        seed: production_seed(config.node_id, group.0),
        defects: Defects::default(),
    }
}

/// `group`'s members as (node, the shard running it there).
/// The replicas of `group` a link can reach: each (node, shard, peer address) whose
/// address is known.
fn replicas_of(placement: &Placement, group: GroupId) -> Vec<LinkTarget> {
    placement
        .members(group)
        .into_iter()
        .filter_map(|node| {
            let shard = placement.shard_on(node, group)?;
            Some((node, shard, placement.peer_link_address(node, shard)?))
        })
        .collect()
}

/// Production draws its seed from the clock: runs need not repeat, only the simulator's.
fn production_seed(node_id: u32, group: u32) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(node_id) << 48) ^ (u64::from(group) << 32)
}

/// Milliseconds of the wall clock.
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ShardCore {
    /// Opens this node's replica of `group` (run by shard `shard_id`) over its log and
    /// starts its tick task.
    pub fn start(
        (shard_id, group): (u32, GroupId),
        (config, placement): (NodeConfig, Placement),
        (log, snapshots, state): (CommitLog, SnapshotFiles, ShardState),
        metrics: GroupMetrics,
    ) -> Result<Rc<ShardCore>, ReplicaError> {
        if placement.shard_on(u64::from(config.node_id), group) != Some(shard_id) {
            return Err(ReplicaError::Config(format!(
                "group {} is not placed on shard {shard_id} of this node",
                group.0
            )));
        }
        let replica = Replica::new(
            log.clone(),
            state,
            replica_config(group, &placement, &config),
        )?;
        let peers = PeerLinks::start(&config, group.0, &replicas_of(&placement, group));
        peers.pace(
            &replica.membership().learners,
            config.learner_bytes_per_second,
        );
        let core = Rc::new(ShardCore {
            shard_id,
            group,
            placement: RefCell::new(placement),
            config,
            log,
            replica: RefCell::new(replica),
            requests: RefCell::new(BTreeMap::new()),
            gathered: RefCell::new(Gathered::default()),
            sessions: RefCell::new(GroupSessions::default()),
            next_request: Cell::new(1),
            reserved_group_id: Cell::new(0),
            data_waiters: RefCell::new(Vec::new()),
            failure: RefCell::new(None),
            no_space: Cell::new(false),
            space_low: Cell::new(false),
            generation: Cell::new(0),
            recovering: Cell::new(false),
            stopping: Cell::new(false),
            retired: Cell::new(false),
            topics_changed: RefCell::new(None),
            metadata_epoch: Cell::new(0),
            peers,
            leaders: RefCell::new(BTreeMap::new()),
            leader_changed: RefCell::new(None),
            shard_asker: RefCell::new(None),
            hand_over_done: RefCell::new(None),
            snapshots,
            election_watch: ElectionWatch::new("follower"),
            metrics,
            queue: glommio::executor().current_task_queue(),
        });
        // The first pass runs once the caller has set its hooks (the shard's start goes
        // on to its first await before this task runs).
        let starting = core.clone();
        core.spawn(async move {
            let mut effects = Vec::new();
            starting.replica.borrow_mut().start(&mut effects);
            starting.carry_out(effects);
            starting.check_space_reserve();
        });
        core.spawn(tick_loop(core.clone()));
        Ok(core)
    }

    /// Where every group runs (never hold it across an await).
    pub fn placement(&self) -> Ref<'_, Placement> {
        self.placement.borrow()
    }

    /// Takes a newer placement (groups the controller placed since, replicas moved,
    /// preferred leaders recorded): the peer links follow this group's members, and the
    /// replica its preferred leader.
    pub fn set_placement(self: &Rc<Self>, placement: Placement) {
        let preferred = |p: &Placement| {
            p.contains(self.group)
                .then(|| p.preferred_leader(self.group))
                .flatten()
        };
        let (before, after) = (preferred(&self.placement.borrow()), preferred(&placement));
        let replicas = placement
            .contains(self.group)
            .then(|| replicas_of(&placement, self.group));
        *self.placement.borrow_mut() = placement;
        if self.retired.get() {
            return;
        }
        if let Some(replicas) = replicas {
            let configured: Vec<u64> = {
                let replica = self.replica.borrow();
                let membership = replica.membership();
                membership
                    .voters
                    .iter()
                    .chain(&membership.outgoing)
                    .chain(&membership.learners)
                    .copied()
                    .collect()
            };
            self.peers.follow(&replicas, &configured);
        }
        if before != after {
            self.feed(Input::PreferredLeader { node: after });
        }
    }

    /// Stops this replica for good: its group moved off this node. It takes no more
    /// requests, its ticks and peer links end, and whoever waits is answered
    /// `ShuttingDown` (their senders dropped).
    pub fn retire(&self) {
        self.metrics.remove();
        self.retired.set(true);
        self.stopping.set(true);
        self.peers.close();
        self.requests.borrow_mut().clear();
        self.wake_data_waiters();
        tracing::info!(
            shard = self.shard_id,
            group = self.group.0,
            "this replica left its group: stopped"
        );
    }

    /// Starts `task` in the replica's task queue, whichever task asks.
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + 'static) {
        match glommio::spawn_local_into(task, self.queue) {
            Ok(task) => task.detach(),
            // The queue is the one this shard was started in, and it is never removed.
            Err(error) => panic!("the replica's task queue is gone: {error}"),
        };
    }

    /// Hands one input to the replica and carries out what it asks.
    pub fn feed(self: &Rc<Self>, input: Input) {
        match &input {
            Input::Tick { .. } => self.election_watch.tick(),
            Input::Peer { from, .. } => self.election_watch.heard(*from),
            _ => {}
        }
        let mut effects = Vec::new();
        {
            let mut replica = self.replica.borrow_mut();
            replica.handle(input, &mut effects);
            let (leader, term) = (replica.leader_id(), replica.term());
            let _ = self
                .election_watch
                .role_now(self.shard_id, leader, term, replica.role());
            self.metrics.observe_role(replica.role());
        }
        self.carry_out(effects);
    }

    pub(super) fn carry_out(self: &Rc<Self>, effects: Vec<Effect>) {
        let mut follow_ups = Vec::new();
        for effect in effects {
            self.carry_out_one(effect, &mut follow_ups);
        }
        for input in follow_ups {
            self.feed(input);
        }
    }

    fn carry_out_one(self: &Rc<Self>, effect: Effect, follow_ups: &mut Vec<Input>) {
        match effect {
            Effect::Send { to, messages } => {
                if let Some(dropped) = self.peers.send(to, messages) {
                    follow_ups.push(Input::SendFailed {
                        peer: to,
                        dropped_snapshot: dropped.snapshot,
                    });
                }
            }
            Effect::Flush { flush } => {
                let (core, life) = (self.clone(), self.generation.get());
                self.spawn(async move {
                    let started = std::time::Instant::now();
                    let flushed = core.log.flush_counted().await;
                    if let Some(flushed) = flushed.as_ref().ok().filter(|f| f.wrote) {
                        core.metrics.flushed(flushed.bytes, started.elapsed());
                    }
                    let outcome = flushed
                        .map(|flushed| flushed.durable)
                        .map_err(|e| storage_failure(&e));
                    core.feed_if_alive(life, Input::FlushDone { flush, outcome });
                });
            }
            Effect::Disk { op, work } => self.start_disk_work(op, work),
            Effect::ReadEntries {
                op,
                low,
                high,
                max_bytes,
            } => {
                let (core, life) = (self.clone(), self.generation.get());
                self.spawn(async move {
                    let outcome = core
                        .log
                        .read(low, high, max_bytes)
                        .await
                        .map_err(|e| storage_failure(&e));
                    core.feed_if_alive(life, Input::ReadDone { op, outcome });
                });
            }
            Effect::Answer { request, outcome } => {
                if let Some(sender) = self.requests.borrow_mut().remove(&request) {
                    let _ = sender.try_send(outcome);
                }
            }
            Effect::DataArrived => self.wake_data_waiters(),
            Effect::TopicsChanged { topics } => {
                // Read before the hook runs: it may feed this replica again.
                let epoch = self.state().applied_index;
                if let Some(hook) = self.topics_changed.borrow().as_ref() {
                    hook(topics, epoch);
                }
            }
            Effect::LeaderChanged { leader, term } => self.note_leader(leader, term),
            Effect::HandOverDone { handed_to } => {
                if let Some(sender) = self.hand_over_done.borrow_mut().take() {
                    let _ = sender.try_send(handed_to);
                }
            }
            Effect::MembershipChanged { membership, .. } => {
                tracing::info!(
                    shard = self.shard_id,
                    ?membership,
                    "the group's configuration changed"
                );
                self.peers
                    .pace(&membership.learners, self.config.learner_bytes_per_second);
            }
            Effect::Failed { failure } => {
                tracing::error!(shard = self.shard_id, %failure, "storage failed: this shard stopped taking part in its group; reads go on");
                self.no_space.set(failure == StorageFailure::NoSpace);
                if failure == StorageFailure::NoSpace {
                    self.release_space_reserve();
                }
                *self.failure.borrow_mut() = Some(failure.to_string());
            }
        }
    }

    fn start_disk_work(self: &Rc<Self>, op: OpId, work: DiskWork) {
        let (core, life) = (self.clone(), self.generation.get());
        self.spawn(async move {
            let outcome = core.do_disk_work(work).await;
            core.feed_if_alive(life, Input::DiskDone { op, outcome });
        });
    }

    /// Feeds a completion unless the replica that started the I/O was replaced since.
    fn feed_if_alive(self: &Rc<Self>, life: u64, input: Input) {
        if self.generation.get() == life {
            self.feed(input);
        }
    }

    async fn do_disk_work(&self, work: DiskWork) -> Result<(), StorageFailure> {
        let counted = match &work {
            DiskWork::RemovePrefix { .. } => Some(GroupMetrics::retention_cut as fn(&_)),
            DiskWork::InstallSnapshot { .. } => Some(GroupMetrics::snapshot_installed as fn(&_)),
            _ => None,
        };
        let outcome = carry_out_disk_work(&self.log, &self.snapshots, work).await;
        if let (Ok(()), Some(count)) = (&outcome, counted) {
            count(&self.metrics);
        }
        outcome
    }

    /// Writes the group's state into the node's metrics.
    fn publish_metrics(&self) {
        let status = self.status();
        // A follower a new leader has not heard from yet shows matched 0 (it is probing):
        // not published until it answers, rather than as missing the whole log.
        let followers: Vec<(u32, u64, u64)> = status
            .followers
            .iter()
            .filter(|&&(_, matched, _)| matched > 0)
            .map(|&(node, matched, lag)| (node, lag, self.log.bytes_after(matched)))
            .collect();
        let counts = self.replica.borrow().counts();
        self.metrics.publish(&GroupSnapshot {
            role: status.role,
            term: status.term,
            commit: status.commit,
            applied: status.applied,
            durable: status.durable,
            last: status.last_index,
            followers: &followers,
            log_bytes: self.log.size_bytes(),
            log_segments: self.log.segment_count() as u64,
            counts,
        });
    }

    fn note_leader(&self, leader: u64, term: u64) {
        let leader = u32::try_from(leader).unwrap_or(0);
        if self.leader_of(self.group) == leader {
            return;
        }
        self.set_leader(self.group, leader);
        tracing::info!(
            shard = self.shard_id,
            group = self.group.0,
            leader,
            term,
            "group leader"
        );
        if let Some(hook) = self.leader_changed.borrow().as_ref() {
            hook(self.group, leader);
        }
    }

    /// Sets what to do when this shard's applied topics change (the controller shard
    /// tells the others); the topics already applied are told at once.
    pub fn on_topics_changed(&self, hook: TopicsHook) {
        let (topics, epoch) = {
            let state = self.state();
            (state.topics.clone(), state.applied_index)
        };
        hook(topics, epoch);
        *self.topics_changed.borrow_mut() = Some(hook);
    }

    /// Sets how questions go to the other shards of this node (the mesh).
    pub fn on_ask_shard(&self, asker: ShardAsker) {
        *self.shard_asker.borrow_mut() = Some(asker);
    }

    /// Sends a question to shard `shard` of this node (unanswered without a mesh).
    pub fn ask_shard(&self, shard: u32, query: BoundsQuery) {
        if let Some(asker) = self.shard_asker.borrow().as_ref() {
            asker(shard, query);
        }
    }

    /// Sets what to do when this shard's group changes leader (tell the other shards);
    /// a leader already known is told at once.
    pub fn on_leader_changed(&self, hook: LeaderHook) {
        let known = self.leader_of(self.group);
        if known != 0 {
            hook(self.group, known);
        }
        *self.leader_changed.borrow_mut() = Some(hook);
    }

    /// Records the leader of a group (this shard's, or another shard's as told).
    pub fn set_leader(&self, group: GroupId, leader: u32) {
        // Bounded by the groups placed: a leader is only ever told for one of them.
        if self.placement().contains(group) {
            self.leaders.borrow_mut().insert(group, leader);
        }
    }

    /// Every group's leader as last heard.
    pub fn known_leaders(&self) -> Vec<(GroupId, u32)> {
        self.leaders
            .borrow()
            .iter()
            .map(|(&g, &l)| (g, l))
            .collect()
    }

    /// The metadata epoch this shard knows (see `metadata_epoch`).
    pub fn metadata_epoch(&self) -> u64 {
        self.metadata_epoch.get()
    }

    /// Takes a newer metadata epoch (never an older one).
    pub fn set_metadata_epoch(&self, epoch: u64) {
        self.metadata_epoch
            .set(self.metadata_epoch.get().max(epoch));
    }

    /// The leader of `group` as last heard (0: unknown).
    pub fn leader_of(&self, group: GroupId) -> u32 {
        self.leaders.borrow().get(&group).copied().unwrap_or(0)
    }

    /// The client address of `group`'s replica on node `node`, if that node holds one
    /// and is known.
    pub fn replica_address(&self, node: u32, group: GroupId) -> Option<String> {
        let placement = self.placement();
        let shard = placement.shard_on(u64::from(node), group)?;
        placement.client_address(u64::from(node), shard)
    }

    /// Address of this group's leader (this shard on the leader node), if known.
    pub fn leader_address(&self) -> Option<String> {
        let leader = self.replica.borrow().leader_id();
        u32::try_from(leader)
            .ok()
            .filter(|&l| l != 0)
            .and_then(|l| self.replica_address(l, self.group))
    }

    /// The applied state (never hold it across an await).
    pub fn state(&self) -> Ref<'_, ShardState> {
        Ref::map(self.replica.borrow(), |replica| replica.state())
    }

    /// The group's state as this replica sees it.
    pub fn status(&self) -> GroupStatusView {
        let replica = self.replica.borrow();
        let last_index = replica.last_index();
        let node = u64::from(self.config.node_id);
        let learner = replica.membership().learners.contains(&node);
        GroupStatusView {
            // A learner follows without a vote; status says which it is.
            role: match replica.role() {
                "follower" if learner => "learner",
                role => role,
            },
            leader: u32::try_from(replica.leader_id()).unwrap_or(0),
            term: replica.term(),
            commit: replica.commit_index(),
            applied: replica.applied_index(),
            last_index,
            durable: self.log.durable_index(),
            followers: replica
                .follower_progress()
                .into_iter()
                .map(|(id, matched)| {
                    let node = u32::try_from(id).unwrap_or(0);
                    (node, matched, last_index.saturating_sub(matched))
                })
                .collect(),
        }
    }

    /// Steps Raft messages that arrived on `from_node`'s peer connection.
    pub fn step_peer_messages(self: &Rc<Self>, from_node: u64, messages: Vec<Message>) {
        self.feed(Input::Peer {
            from: from_node,
            messages,
        });
    }

    /// A peer's connection to this shard ended: it may be dead (a killed leader is
    /// replaced without waiting out the election timeout).
    pub fn peer_lost(self: &Rc<Self>, from_node: u64) {
        if !self.stopping.get() {
            self.feed(Input::PeerUnreachable { peer: from_node });
        }
    }

    /// The controller's topics, for a shard that is not the controller.
    pub fn controller_topics(self: &Rc<Self>, topics: Topics) {
        self.feed(Input::ControllerTopics { topics });
    }

    /// Whether this shard may answer reads: it leads and has applied everything committed
    /// before its term, so the high watermark it serves never goes back.
    pub fn serves_reads(&self) -> bool {
        self.replica.borrow().serves_reads()
    }

    /// The nodes of `nodes` this replica hears from: itself, and when leading, the
    /// followers heard from within the last election timeout.
    pub fn live_nodes(&self, nodes: &[u64]) -> Vec<u64> {
        let replica = self.replica.borrow();
        let this = u64::from(self.config.node_id);
        nodes
            .iter()
            .copied()
            .filter(|&node| node == this || replica.follower_is_active(node))
            .collect()
    }

    /// Whether this shard leads its group.
    pub fn is_leader(&self) -> bool {
        self.replica.borrow().is_leader()
    }

    /// Proposes an entry; the answer comes once it is applied (`wait`), or at once.
    pub fn submit(self: &Rc<Self>, data: Vec<u8>, wait: bool) -> Result<Pending, ShardError> {
        if self.stopping.get() {
            return Err(ShardError::ShuttingDown);
        }
        if let Some(failure) = self.failure.borrow().as_ref() {
            // Alone, the group cannot take writes: say why. With peers, another replica
            // leads by now: the client goes there.
            if self.placement().replicas(self.group).len() == 1 {
                return Err(ShardError::Storage(failure.clone()));
            }
            return Err(ShardError::NotLeader);
        }
        let request = RequestId(self.next_request.get());
        self.next_request.set(request.0 + 1);
        let (sender, receiver) = local_channel::new_bounded(1);
        self.requests.borrow_mut().insert(request, sender);
        self.gather(Proposal {
            request,
            data,
            wait,
        });
        Ok(Pending(receiver))
    }

    /// Adds a proposal to those of this executor pass; the first one schedules their
    /// hand-over to the replica (a task of the replica's queue, which runs once the
    /// requests read so far are all in), a full gathering hands them over at once.
    fn gather(self: &Rc<Self>, proposal: Proposal) {
        let mut gathered = self.gathered.borrow_mut();
        let first = gathered.proposals.is_empty();
        gathered.bytes += proposal.data.len();
        gathered.proposals.push(proposal);
        let full = gathered.proposals.len() >= MAX_GATHERED_PROPOSALS
            || gathered.bytes >= MAX_GATHERED_PROPOSAL_BYTES;
        drop(gathered);
        if full {
            self.propose_gathered();
        } else if first {
            let core = self.clone();
            self.spawn(async move { core.propose_gathered() });
        }
    }

    /// Hands the gathered proposals to the replica, in the order they came.
    fn propose_gathered(self: &Rc<Self>) {
        let proposals = std::mem::take(&mut *self.gathered.borrow_mut()).proposals;
        if !proposals.is_empty() {
            self.feed(Input::Propose { proposals });
        }
    }

    /// Proposes a membership change (leader only); answered once it is applied.
    pub fn change_membership(
        self: &Rc<Self>,
        change: MembershipChange,
    ) -> Result<Pending, ShardError> {
        if self.stopping.get() {
            return Err(ShardError::ShuttingDown);
        }
        let request = RequestId(self.next_request.get());
        self.next_request.set(request.0 + 1);
        let (sender, receiver) = local_channel::new_bounded(1);
        self.requests.borrow_mut().insert(request, sender);
        self.feed(Input::ChangeMembership { request, change });
        Ok(Pending(receiver))
    }

    /// The configuration this replica applied and, leading, how far its learners are.
    pub fn membership_view(&self) -> MembershipView {
        let replica = self.replica.borrow();
        let membership = replica.membership().clone();
        let caught_up = membership
            .learners
            .iter()
            .copied()
            .filter(|&node| replica.is_caught_up(node))
            .collect();
        let matched: std::collections::HashMap<u64, u64> =
            replica.follower_progress().into_iter().collect();
        let (learner_matched, last_index) = if replica.is_leader() {
            let learners = &membership.learners;
            let each = learners
                .iter()
                .map(|n| matched.get(n).copied().unwrap_or(0));
            (each.collect(), replica.last_index())
        } else {
            (Vec::new(), 0)
        };
        MembershipView {
            membership,
            caught_up,
            learner_matched,
            last_index,
            settled: replica.changes_settled(),
        }
    }

    /// Proposes an entry and waits for what applying it did.
    pub async fn propose(self: &Rc<Self>, data: Vec<u8>) -> Answer {
        self.submit(data, true)?.wait().await
    }

    /// A receiver that fires when the next batch is applied (fetch long-polls). Bounded:
    /// at `MAX_FETCH_WAITERS` every waiter is woken (live ones register again), which
    /// frees those whose fetch already ended.
    pub fn data_arrival(&self) -> LocalReceiver<()> {
        if self.data_waiters.borrow().len() >= MAX_FETCH_WAITERS {
            self.wake_data_waiters();
        }
        let (sender, receiver) = local_channel::new_bounded(1);
        self.data_waiters.borrow_mut().push(sender);
        receiver
    }

    /// Long-polls waiting for data (for tests and status).
    pub fn data_waiter_count(&self) -> usize {
        self.data_waiters.borrow().len()
    }

    fn wake_data_waiters(&self) {
        for waiter in self.data_waiters.borrow_mut().drain(..) {
            let _ = waiter.try_send(());
        }
    }

    /// Reserves the id of a group being placed (ids never reused, even when two
    /// placements race before either is applied).
    pub fn reserve_group_id(&self) -> u32 {
        let id = self.placement().next_group_id(self.reserved_group_id.get());
        self.reserved_group_id.set(id + 1);
        id
    }

    /// Reserves the id of a topic being created.
    pub fn reserve_topic_id(&self) -> u32 {
        self.replica.borrow_mut().reserve_topic_id()
    }

    /// Hands this group's leadership to an up-to-date follower, if leading, and waits
    /// (bounded) until it has taken over: a planned stop then causes no election timeout.
    /// The replica takes no more writes afterwards.
    pub async fn hand_over_leadership(self: &Rc<Self>) {
        let (sender, receiver) = local_channel::new_bounded(1);
        *self.hand_over_done.borrow_mut() = Some(sender);
        self.feed(Input::HandOver);
        let waited = glommio::timer::timeout(LEADERSHIP_TRANSFER_WAIT, async {
            Ok(receiver.recv().await.flatten())
        })
        .await;
        tracing::info!(shard = self.shard_id, handed_to = ?waited.ok().flatten(), "leadership hand-over before shutdown");
    }

    /// Stops taking writes, waits for in-flight flushes, persists the commit index.
    pub async fn shut_down(self: &Rc<Self>) -> Result<(), LogError> {
        self.hand_over_leadership().await;
        self.stopping.set(true);
        if self.failure.borrow().is_some() {
            return Ok(());
        }
        self.log.flush().await?;
        self.log.persist_commit_index().await
    }
}

/// Carries out one disk work effect on a shard's log and snapshot files: what the driver
/// does for `Effect::Disk` (the simulator's counterpart is `SimLog::carry_out`; the
/// differential test `log::tests::sim_store_agrees` runs both).
pub(crate) async fn carry_out_disk_work(
    log: &CommitLog,
    snapshots: &SnapshotFiles,
    work: DiskWork,
) -> Result<(), StorageFailure> {
    let log_failure = |e: LogError| storage_failure(&e);
    let file_failure = |e: crate::shard::snapshots::SnapshotFileError| StorageFailure::Io {
        detail: e.to_string(),
    };
    match work {
        DiskWork::TruncateSuffix { from_index } => {
            log.truncate_suffix(from_index).await.map_err(log_failure)
        }
        DiskWork::InstallSnapshot { snapshot } => {
            let metadata = snapshot.get_metadata().clone();
            let (snapshot, written) = snapshots.write_off_thread(snapshot).await;
            written.map_err(file_failure)?;
            // The configuration first: `reset_to` writes the meta as set, so the new
            // compaction point and the snapshot's configuration are durable together. Set
            // after, it waited for the next flush, and a crash in between restarted the log
            // after the snapshot with the configuration from before it (`sim_store_agrees`
            // seed 0x4).
            log.set_conf_state(from_conf_state(metadata.get_conf_state(), metadata.index))
                .map_err(log_failure)?;
            log.reset_to(metadata.index, metadata.term)
                .await
                .map_err(log_failure)?;
            log.set_snapshot(snapshot);
            snapshots
                .remove_below_off_thread(metadata.index)
                .await
                .map_err(file_failure)
        }
        DiskWork::WriteSnapshotFile { snapshot } => snapshots
            .write_off_thread(snapshot)
            .await
            .1
            .map_err(file_failure),
        DiskWork::RemovePrefix { up_to_index } => {
            log.remove_prefix(up_to_index).await.map_err(log_failure)?;
            snapshots
                .remove_below_off_thread(up_to_index)
                .await
                .map_err(file_failure)
        }
        DiskWork::PersistCommitIndex => log.persist_commit_index().await.map_err(log_failure),
    }
}

/// Feeds a tick every `tick_ms` (and peers found unreachable) until the shard stops.
async fn tick_loop(core: Rc<ShardCore>) {
    let interval = Duration::from_millis(core.config.tick_ms.max(1));
    let retry_every =
        (NO_SPACE_RETRY_INTERVAL.as_millis() as u64 / core.config.tick_ms.max(1)).max(1);
    let mut ticks: u64 = 0;
    while !core.stopping.get() {
        glommio::timer::sleep(interval).await;
        ticks += 1;
        if core.no_space.get() && ticks.is_multiple_of(retry_every) {
            let recovering = core.clone();
            core.spawn(async move { recovering.recover_from_no_space().await });
        } else if core.space_low.get() && ticks.is_multiple_of(retry_every) {
            core.check_space_reserve();
        }
        for peer in core.peers.take_unreachable() {
            core.feed(Input::PeerUnreachable { peer });
        }
        for peer in core.peers.take_lost_snapshots() {
            core.feed(Input::SendFailed {
                peer,
                dropped_snapshot: true,
            });
        }
        core.feed(Input::Tick {
            now_ms: wall_clock_ms(),
        });
        if ticks.is_multiple_of(METRICS_PUBLISH_TICKS) {
            core.publish_metrics();
        }
    }
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{ConfState, Entry, Snapshot};

    use crate::broker::snapshot::encode_state;
    use crate::broker::state::ShardState;
    use crate::config::NodeConfig;
    use crate::constants::MAX_FETCH_WAITERS;
    use crate::log::raft_storage::from_conf_state;
    use crate::log::{CommitLog, LogConfig};
    use crate::replication::DiskWork;
    use crate::shard::group_driver::{carry_out_disk_work, ShardCore};
    use crate::shard::snapshots::SnapshotFiles;

    /// Regression (`sim_store_agrees` seed 0x4): a crash right after a snapshot install
    /// keeps the snapshot's configuration with the compaction point (it was set only in
    /// memory after the reset, so the log restarted with the configuration before it).
    #[test]
    fn a_crash_after_a_snapshot_install_keeps_its_configuration() {
        crate::runtime::run_on_executor("driver-test", 512 * 1024, || async {
            let dir = tempfile::tempdir().unwrap();
            let log_dir = dir.path().join("shard-0");
            let log = CommitLog::open(&log_dir, LogConfig::default())
                .await
                .unwrap();
            let snapshots = SnapshotFiles::open(&dir.path().join("snapshots")).unwrap();
            let old = ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            };
            log.set_conf_state(from_conf_state(&old, 0)).unwrap();
            let entry = Entry {
                index: 1,
                term: 1,
                data: vec![7u8; 10].into(),
                ..Default::default()
            };
            log.append(&[entry]).unwrap();
            log.flush().await.unwrap();
            let mut snapshot = Snapshot {
                data: encode_state(&ShardState::default(), false).into(),
                ..Default::default()
            };
            snapshot.mut_metadata().index = 20;
            snapshot.mut_metadata().term = 2;
            let new = ConfState {
                voters: vec![1, 2, 4],
                ..Default::default()
            };
            snapshot.mut_metadata().set_conf_state(new.clone());
            let work = DiskWork::InstallSnapshot { snapshot };
            carry_out_disk_work(&log, &snapshots, work).await.unwrap();
            drop(log);
            let log = CommitLog::open(&log_dir, LogConfig::default())
                .await
                .unwrap();
            assert_eq!(log.compaction_point(), (20, 2));
            assert_eq!(log.conf_state(), from_conf_state(&new, 20));
        })
        .unwrap();
    }

    /// Item 9: long polls that end without data (their receivers dropped) never pile up
    /// on a shard that takes no writes.
    #[test]
    fn ended_long_polls_do_not_pile_up_on_a_quiet_shard() {
        crate::runtime::run_on_executor("driver-test", 512 * 1024, || async {
            let dir = tempfile::tempdir().unwrap();
            let log = CommitLog::open(&dir.path().join("shard-0"), LogConfig::default())
                .await
                .unwrap();
            let snapshots = SnapshotFiles::open(&dir.path().join("snapshots")).unwrap();
            let config = NodeConfig {
                data_dir: dir.path().to_path_buf(),
                shards: 1,
                ..NodeConfig::default()
            };
            let placement = crate::controller::Placement::of_config(&config);
            let core = ShardCore::start(
                (0, crate::controller::GroupId(0)),
                (config, placement),
                (log, snapshots, ShardState::default()),
                crate::metrics::ShardMetrics::detached(0).group(0),
            )
            .unwrap();
            for _ in 0..3 * MAX_FETCH_WAITERS {
                drop(core.data_arrival());
            }
            assert!(
                core.data_waiter_count() <= MAX_FETCH_WAITERS,
                "{} long-poll waiters kept",
                core.data_waiter_count()
            );
        })
        .unwrap();
    }
}
