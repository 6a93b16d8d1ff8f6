//! The replica groups one shard runs (any number, as placed) and which of them a
//! client's request concerns.
//!
//! A request about a partition, a consumer group or a topic change goes to the driver of
//! the group that holds it when this shard runs that group; anything else (metadata,
//! status, a group this shard does not run) goes to the shard's first group, whose
//! handlers answer what any group can answer and point the client elsewhere
//! (`WrongShard`, `NotLeader`) otherwise.
//!
//! Owns the map from group to driver; never decides placement (it asks `Placement`) and
//! never touches a replica itself.

use crate::broker::access::AccessControl;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::broker::replica_moves::{NodeService, ReplicaMove};
use crate::broker::state::{TopicInfo, Topics};
use crate::config::NodeConfig;
use crate::controller::{GroupId, Placement, CONTROLLER_GROUP};
use crate::log::{CommitLog, ConfStateRecord};
use crate::metrics::ShardMetrics;
use crate::protocol::wire::{Request, RequestBody};
use crate::shard::data_layout;
use crate::shard::group_driver::ShardCore;
use crate::shard::partition_bounds::{self, BoundsQuery};
use crate::shard::snapshots::SnapshotFiles;

/// Wires a newly started group into its shard (hooks to the other shards).
pub type WireGroup = Box<dyn Fn(&Rc<ShardCore>)>;

/// The groups of one shard.
pub struct HostedGroups {
    /// This shard's index.
    pub shard_id: u32,
    config: NodeConfig,
    cores: RefCell<BTreeMap<GroupId, Rc<ShardCore>>>,
    /// The ids of `cores`, shared with the peer listener (which admits hellos for them).
    ids: Rc<RefCell<Vec<u32>>>,
    /// Groups being started (placed here, not running yet).
    starting: RefCell<Vec<GroupId>>,
    wire: RefCell<Option<WireGroup>>,
    /// The controller's topics as last told (fed to each group started later), and
    /// their epoch.
    topics: RefCell<Option<Topics>>,
    epoch: Cell<u64>,
    /// Every node of the cluster, shared with the peer listener (which admits hellos
    /// from them): the bootstrap's and those that joined since.
    nodes: Rc<RefCell<Vec<u64>>>,
    /// The last group to leave this shard when none is left: it still answers what
    /// concerns no group of this shard (`first`), stopped.
    retired_last: RefCell<Option<Rc<ShardCore>>>,
    /// The shard's series in the node's metrics.
    metrics: ShardMetrics,
}

impl HostedGroups {
    /// Starts the groups `placement` puts on shard `shard_id`; at least one (a shard
    /// placed no group does not serve).
    pub async fn start(
        shard_id: u32,
        config: &NodeConfig,
        placement: &Placement,
        metrics: ShardMetrics,
    ) -> Result<HostedGroups, String> {
        let mut cores = BTreeMap::new();
        for group in groups_to_open(shard_id, config, placement) {
            // A node that joined starts its controller replica as the learner it was
            // added as (its log's first configuration).
            let join = config.joined.clone().filter(|_| group == CONTROLLER_GROUP);
            let core =
                start_group_joining((shard_id, group), (config, &metrics), placement, join).await?;
            cores.insert(group, core);
        }
        let mut retired_last = None;
        let placed = placement.groups_on(u64::from(config.node_id), shard_id);
        if let (true, Some(&stand_in)) = (cores.is_empty(), placed.first()) {
            // Every group placed here left this node: a stopped stand-in answers what
            // concerns no group of this shard (it never takes part in its group).
            let core = start_group((shard_id, stand_in), (config, &metrics), placement).await?;
            core.retire();
            retired_last = Some(core);
        }
        // Else a shard of a node that joined, placed nothing yet: it serves clients once
        // a group is moved here (`is_serving`).
        let ids = cores.keys().map(|group: &GroupId| group.0).collect();
        Ok(HostedGroups {
            shard_id,
            config: config.clone(),
            cores: RefCell::new(cores),
            ids: Rc::new(RefCell::new(ids)),
            starting: RefCell::new(Vec::new()),
            wire: RefCell::new(None),
            topics: RefCell::new(None),
            epoch: Cell::new(0),
            nodes: Rc::new(RefCell::new(placement.node_ids())),
            retired_last: RefCell::new(retired_last),
            metrics,
        })
    }

    /// Sets how a group started later is wired into the shard; wires the running ones.
    pub fn on_start(&self, wire: WireGroup) {
        for core in self.all() {
            wire(&core);
        }
        *self.wire.borrow_mut() = Some(wire);
    }

    /// The driver of `group`, if this shard runs it.
    pub fn core(&self, group: GroupId) -> Option<Rc<ShardCore>> {
        self.cores.borrow().get(&group).cloned()
    }

    /// Whether the shard runs a group (or keeps a stand-in): only then does it serve
    /// clients.
    pub fn is_serving(&self) -> bool {
        !self.cores.borrow().is_empty() || self.retired_last.borrow().is_some()
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The shard's series in the node's metrics.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// Calls `f` with the users and access rules as the controller's topics last told
    /// (none before they did: only superusers and this node's own users get in).
    pub fn with_access<R>(&self, f: impl FnOnce(&AccessControl) -> R) -> R {
        match self.topics.borrow().as_ref() {
            Some(topics) => f(topics.access()),
            None => f(&AccessControl::default()),
        }
    }

    /// Whether the controller's topics (users and rules among them) have been told to
    /// this shard since it started.
    pub fn heard_controller(&self) -> bool {
        self.topics.borrow().is_some()
    }

    /// This node's id.
    pub fn node_id(&self) -> u32 {
        self.config.node_id
    }

    /// The nodes of the cluster as the peer listener admits them.
    pub fn nodes(&self) -> Rc<RefCell<Vec<u64>>> {
        self.nodes.clone()
    }

    /// The shard's first group: it answers what concerns no group of this shard (called
    /// only once `is_serving`).
    pub fn first(&self) -> Rc<ShardCore> {
        self.cores
            .borrow()
            .values()
            .next()
            .cloned()
            .or_else(|| self.retired_last.borrow().clone())
            .expect("a shard runs at least one group (checked when built), or keeps the last")
    }

    /// Every group's driver, in group order.
    pub fn all(&self) -> Vec<Rc<ShardCore>> {
        self.cores.borrow().values().cloned().collect()
    }

    /// The groups this shard runs, in order, as the peer listener sees them.
    pub fn ids(&self) -> Rc<RefCell<Vec<u32>>> {
        self.ids.clone()
    }

    /// The driver of `group` if this shard runs it, else the first (which answers
    /// `WrongShard` for it).
    pub fn for_group(&self, group: GroupId) -> Rc<ShardCore> {
        self.core(group).unwrap_or_else(|| self.first())
    }

    /// The driver holding `partition` of `topic`, or the first.
    pub fn for_partition(&self, topic: &TopicInfo, partition: u32) -> Rc<ShardCore> {
        let group = self
            .first()
            .placement()
            .group_of_partition(topic, partition);
        self.for_group(group)
    }

    /// The driver a request concerns: its partition's, its consumer group
    /// coordinator's, the controller's for topic changes; else the first.
    pub fn for_request(&self, request: &Request<'_>) -> Rc<ShardCore> {
        let first = self.first();
        let group = {
            let placement = first.placement();
            let by_partition = |topic: Option<&str>, partition: u32| {
                let state = first.state();
                let topic = state.request_topics().get(topic?)?;
                Some(placement.group_of_partition(topic, partition))
            };
            match request.body_type() {
                RequestBody::FetchRequest => request
                    .body_as_fetch_request()
                    .and_then(|fetch| by_partition(fetch.topic(), fetch.partition())),
                RequestBody::PartitionOffsetsRequest => request
                    .body_as_partition_offsets_request()
                    .and_then(|asked| by_partition(asked.topic(), asked.partition())),
                RequestBody::CreateTopicRequest
                | RequestBody::DeleteTopicRequest
                | RequestBody::MoveReplicaRequest
                | RequestBody::PlanMovesRequest
                | RequestBody::SetNodeStateRequest
                | RequestBody::JoinClusterRequest
                | RequestBody::ChangeUserRequest
                | RequestBody::ListUsersRequest
                | RequestBody::ChangeAclRequest
                | RequestBody::ListAclsRequest => Some(CONTROLLER_GROUP),
                RequestBody::ChangeMembershipRequest => request
                    .body_as_change_membership_request()
                    .map(|asked| GroupId(asked.group())),
                _ => coordinator_name(request).map(|name| placement.coordinator_of(name)),
            }
        };
        group.map_or(first, |group| self.for_group(group))
    }

    /// The controller's topics: every group takes the placement they make (groups
    /// placed by topic creations), every group but the controller's own takes the
    /// topics, and a group newly placed on this shard starts.
    pub fn controller_topics(self: &Rc<Self>, topics: &Topics, epoch: u64) {
        if epoch < self.epoch.get() {
            // Older than what this shard holds: a replay's pass after the controller's
            // replica restarted in place (a full disk). Its placement would retire groups
            // moved here since, and delete their files.
            return;
        }
        let placement = self.placement_with(topics);
        *self.topics.borrow_mut() = Some(topics.clone());
        self.epoch.set(self.epoch.get().max(epoch));
        *self.nodes.borrow_mut() = placement.node_ids();
        for core in self.all() {
            core.set_placement(placement.clone());
            core.set_metadata_epoch(epoch);
            if core.group != CONTROLLER_GROUP {
                core.controller_topics(topics.clone());
            }
        }
        if let Some(last) = self.retired_last.borrow().as_ref() {
            // Stopped, it still routes what concerns no group of this shard.
            last.set_placement(placement.clone());
            last.set_metadata_epoch(epoch);
        }
        let node = u64::from(self.config.node_id);
        for group in placement.groups_on(node, self.shard_id) {
            let known = self.cores.borrow().contains_key(&group);
            if known || self.starting.borrow().contains(&group) {
                continue;
            }
            if data_layout::has_left(&self.config.data_dir, group) {
                continue;
            }
            self.starting.borrow_mut().push(group);
            let join = topics
                .moves()
                .under_way(group.0)
                .filter(|moving| moving.to == (node, self.shard_id))
                .map(join_record);
            // A group a move changed is created here only by a move to here: placed by
            // topics not yet as new as this node's files (a snapshot older than the
            // move's end), it would come back as an empty replica of an old configuration.
            let moved = topics.moves().replaced().any(|(g, _)| g == group.0);
            let files_here = data_layout::log_dir(&self.config.data_dir, group).exists();
            if moved && join.is_none() && !files_here {
                continue;
            }
            let (hosted, placement) = (self.clone(), placement.clone());
            glommio::spawn_local(async move { hosted.start_placed(group, placement, join).await })
                .detach();
        }
        self.retire_moved_away(&placement);
    }

    /// Stops the groups whose replica on this shard moved away, and deletes their files.
    fn retire_moved_away(&self, placement: &Placement) {
        let node = u64::from(self.config.node_id);
        let gone: Vec<GroupId> = self
            .cores
            .borrow()
            .keys()
            .copied()
            .filter(|&g| {
                placement.contains(g) && placement.shard_on(node, g) != Some(self.shard_id)
            })
            .collect();
        for group in gone {
            let Some(core) = self.cores.borrow_mut().remove(&group) else {
                continue;
            };
            self.ids.borrow_mut().retain(|&g| g != group.0);
            core.retire();
            if self.cores.borrow().is_empty() {
                // The shard still answers what concerns no group of it (`first`).
                *self.retired_last.borrow_mut() = Some(core);
            }
            if let Err(error) = data_layout::mark_left(&self.config.data_dir, group) {
                // Its files stay: a restart opens the group again, and the controller's
                // topics retire it again.
                tracing::error!(group = group.0, %error, "could not mark a group that left; its files stay");
                continue;
            }
            let data_dir = self.config.data_dir.clone();
            // Off the shard's thread: a large log's files take a while to unlink.
            std::thread::spawn(move || {
                if let Err(error) = data_layout::remove_group_files(&data_dir, group) {
                    tracing::warn!(group = group.0, %error, "files of a group that left could not be deleted");
                }
            });
            tracing::info!(
                shard = self.shard_id,
                group = group.0,
                "a group moved off this shard: its files are deleted"
            );
        }
    }

    /// Starts a group placed here since the shard started (a moved replica's learner
    /// starts from `join`, the configuration of the change that added it).
    async fn start_placed(
        self: Rc<Self>,
        group: GroupId,
        placement: Placement,
        join: Option<ConfStateRecord>,
    ) {
        let started = start_group_joining(
            (self.shard_id, group),
            (&self.config, &self.metrics),
            &placement,
            join,
        )
        .await;
        self.starting.borrow_mut().retain(|&g| g != group);
        let core = match started {
            Ok(core) => core,
            Err(error) => {
                tracing::error!(shard = self.shard_id, group = group.0, %error, "a group placed on this shard could not start");
                return;
            }
        };
        if let Some(wire) = self.wire.borrow().as_ref() {
            wire(&core);
        }
        if let Some(topics) = self.topics.borrow().clone() {
            core.set_placement(self.placement_with(&topics));
            core.set_metadata_epoch(self.epoch.get());
            core.controller_topics(topics);
        }
        let known_leaders = self.all().first().map(|first| first.known_leaders());
        for (known, leader) in known_leaders.unwrap_or_default() {
            core.set_leader(known, leader);
        }
        self.cores.borrow_mut().insert(group, core.clone());
        self.ids.borrow_mut().push(group.0);
        self.ids.borrow_mut().sort_unstable();
        tracing::info!(
            shard = self.shard_id,
            group = group.0,
            "a group placed on this shard started"
        );
        // Placed elsewhere meanwhile (a move rolled back while it opened): it stops.
        let now = self
            .topics
            .borrow()
            .as_ref()
            .map(|t| self.placement_with(t));
        if let Some(now) = now {
            self.retire_moved_away(&now);
        }
    }

    /// The placement the controller's topics make: the bootstrap one and the groups
    /// topic creations placed.
    fn placement_with(&self, topics: &Topics) -> Placement {
        Placement::of_config(&self.config)
            .with_joined(topics.moves().joined())
            .with_placed(topics.placed_groups())
            .with_moves(topics.moves())
    }

    /// The replica moves under way, as the controller's topics last told say.
    pub fn moves_under_way(&self) -> Vec<ReplicaMove> {
        self.topics
            .borrow()
            .as_ref()
            .map(|topics| topics.moves().all_under_way().cloned().collect())
            .unwrap_or_default()
    }

    /// Every group with the nodes holding a replica of it (voters and learners), as the
    /// controller's topics last told say; none before they did (the bootstrap placement
    /// may name nodes that gave their replicas away long ago).
    pub fn placed_members(&self) -> Vec<(u32, Vec<u64>)> {
        // Shard 0 of each node answers for the node: the list is the cluster's size.
        if self.shard_id != 0 {
            return Vec::new();
        }
        let Some(placement) = self
            .topics
            .borrow()
            .as_ref()
            .map(|t| self.placement_with(t))
        else {
            return Vec::new();
        };
        placement
            .group_ids()
            .into_iter()
            .map(|group| (group.0, placement.members(group)))
            .collect()
    }

    /// The nodes draining or removed, as the controller's topics last told say.
    pub fn inactive_nodes(&self) -> Vec<(u64, NodeService)> {
        self.topics
            .borrow()
            .as_ref()
            .map(|topics| topics.moves().inactive_nodes().collect())
            .unwrap_or_default()
    }

    /// Records a group's leader in every group's view (for metadata and redirects).
    pub fn set_leader(&self, group: GroupId, leader: u32) {
        for core in self.all() {
            core.set_leader(group, leader);
        }
    }

    /// Answers a question about a partition's bounds from the group holding it (a
    /// group this shard does not run leaves it unanswered: the asker does without).
    pub fn answer_bounds(&self, query: BoundsQuery) {
        if let Some(core) = self.core(query.group) {
            glommio::spawn_local(partition_bounds::answer(core, query)).detach();
        }
    }
}

/// The groups a shard opens at start: the bootstrap placement's on a node's first start;
/// later, only those whose files are here (a group moved off this node since must not
/// come back as an empty replica of its old configuration; groups placed or moved here
/// since start once the controller's topics name them). A shard left with none opens
/// its bootstrap groups (retired again once the controller's topics say so).
fn groups_to_open(shard_id: u32, config: &NodeConfig, placement: &Placement) -> Vec<GroupId> {
    let placed: Vec<GroupId> = placement
        .groups_on(u64::from(config.node_id), shard_id)
        .into_iter()
        .filter(|&group| !data_layout::has_left(&config.data_dir, group))
        .collect();
    if !data_layout::holds_any_group(&config.data_dir) {
        return placed;
    }
    let on_disk: Vec<GroupId> = placed
        .iter()
        .copied()
        .filter(|&group| data_layout::log_dir(&config.data_dir, group).exists())
        .collect();
    if on_disk.is_empty() {
        placed
    } else {
        on_disk
    }
}

/// Opens the log, snapshots and state of `group` (run by shard `shard_id`) and starts
/// its replica.
async fn start_group(
    at: (u32, GroupId),
    config: (&NodeConfig, &ShardMetrics),
    placement: &Placement,
) -> Result<Rc<ShardCore>, String> {
    start_group_joining(at, config, placement, None).await
}

/// `start_group`; a log without a configuration takes `join` first, durably (a replica
/// created by a move starts as the learner the group added).
async fn start_group_joining(
    (shard_id, group): (u32, GroupId),
    (config, metrics): (&NodeConfig, &ShardMetrics),
    placement: &Placement,
    join: Option<ConfStateRecord>,
) -> Result<Rc<ShardCore>, String> {
    let in_group = |message: String| format!("group {}: {message}", group.0);
    let log = CommitLog::open(
        &data_layout::log_dir(&config.data_dir, group),
        config.log.clone(),
    )
    .await
    .map_err(|e| in_group(e.to_string()))?;
    if let Some(join) = join.filter(|_| log.conf_state().voters.is_empty()) {
        log.set_conf_state(join)
            .map_err(|e| in_group(e.to_string()))?;
        log.flush().await.map_err(|e| in_group(e.to_string()))?;
    }
    let snapshots = SnapshotFiles::open(&data_layout::snapshot_dir(&config.data_dir, group))
        .map_err(|e| in_group(e.to_string()))?;
    let state = crate::shard::restore_state(&log, &snapshots).map_err(in_group)?;
    ShardCore::start(
        (shard_id, group),
        (config.clone(), placement.clone()),
        (log, snapshots, state),
        metrics.group(group.0),
    )
    .map_err(|e| in_group(e.to_string()))
}

/// The configuration a moved replica starts with: the group's once its learner was added.
fn join_record(moving: &ReplicaMove) -> ConfStateRecord {
    ConfStateRecord {
        voters: moving.join_voters.clone(),
        learners: moving.join_learners.clone(),
        index: moving.join_index,
        ..Default::default()
    }
}

/// The consumer group a group request names.
pub(super) fn coordinator_name<'a>(request: &Request<'a>) -> Option<&'a str> {
    match request.body_type() {
        RequestBody::FindCoordinatorRequest => request.body_as_find_coordinator_request()?.group(),
        RequestBody::JoinGroupRequest => request.body_as_join_group_request()?.group(),
        RequestBody::HeartbeatRequest => request.body_as_heartbeat_request()?.group(),
        RequestBody::LeaveGroupRequest => request.body_as_leave_group_request()?.group(),
        RequestBody::OffsetCommitRequest => request.body_as_offset_commit_request()?.group(),
        RequestBody::OffsetFetchRequest => request.body_as_offset_fetch_request()?.group(),
        RequestBody::DescribeGroupRequest => request.body_as_describe_group_request()?.group(),
        RequestBody::DeleteGroupRequest => request.body_as_delete_group_request()?.group(),
        _ => None,
    }
}
