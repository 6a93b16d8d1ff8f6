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

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::broker::state::{TopicInfo, Topics};
use crate::controller::{GroupId, CONTROLLER_GROUP};
use crate::protocol::wire::{Request, RequestBody};
use crate::shard::group_driver::ShardCore;
use crate::shard::partition_bounds::{self, BoundsQuery};

/// The groups of one shard.
pub struct HostedGroups {
    /// This shard's index.
    pub shard_id: u32,
    cores: BTreeMap<GroupId, Rc<ShardCore>>,
}

impl HostedGroups {
    /// The groups shard `shard_id` runs; at least one (a shard placed no group does
    /// not serve).
    pub fn new(shard_id: u32, cores: Vec<Rc<ShardCore>>) -> HostedGroups {
        assert!(!cores.is_empty(), "shard {shard_id} runs no replica group");
        let cores: BTreeMap<GroupId, Rc<ShardCore>> =
            cores.into_iter().map(|core| (core.group, core)).collect();
        for (group, core) in &cores {
            assert_eq!(
                core.shard_id, shard_id,
                "group {} runs on shard {}, not {shard_id}",
                group.0, core.shard_id
            );
        }
        HostedGroups { shard_id, cores }
    }

    /// The driver of `group`, if this shard runs it.
    pub fn core(&self, group: GroupId) -> Option<&Rc<ShardCore>> {
        self.cores.get(&group)
    }

    /// The shard's first group: it answers what concerns no group of this shard.
    pub fn first(&self) -> &Rc<ShardCore> {
        self.cores
            .values()
            .next()
            .expect("a shard runs at least one group (checked when built)")
    }

    /// Every group's driver, in group order.
    pub fn all(&self) -> impl Iterator<Item = &Rc<ShardCore>> {
        self.cores.values()
    }

    /// The groups this shard runs, in order.
    pub fn ids(&self) -> Vec<u32> {
        self.cores.keys().map(|group| group.0).collect()
    }

    /// The driver of `group` if this shard runs it, else the first (which answers
    /// `WrongShard` for it).
    pub fn for_group(&self, group: GroupId) -> &Rc<ShardCore> {
        self.core(group).unwrap_or_else(|| self.first())
    }

    /// The driver holding `partition` of `topic`, or the first.
    pub fn for_partition(&self, topic: &TopicInfo, partition: u32) -> &Rc<ShardCore> {
        let first = self.first();
        self.for_group(first.placement.group_of_partition(topic, partition))
    }

    /// The driver a request concerns: its partition's, its consumer group
    /// coordinator's, the controller's for topic changes; else the first.
    pub fn for_request(&self, request: &Request<'_>) -> &Rc<ShardCore> {
        let first = self.first();
        let placement = &first.placement;
        let by_partition = |topic: Option<&str>, partition: u32| {
            let topic = first.state().request_topics().get(topic?).cloned()?;
            Some(placement.group_of_partition(&topic, partition))
        };
        let group = match request.body_type() {
            RequestBody::FetchRequest => request
                .body_as_fetch_request()
                .and_then(|fetch| by_partition(fetch.topic(), fetch.partition())),
            RequestBody::PartitionOffsetsRequest => request
                .body_as_partition_offsets_request()
                .and_then(|asked| by_partition(asked.topic(), asked.partition())),
            RequestBody::CreateTopicRequest | RequestBody::DeleteTopicRequest => {
                Some(CONTROLLER_GROUP)
            }
            _ => coordinator_name(request).map(|name| placement.coordinator_of(name)),
        };
        group.map_or(first, |group| self.for_group(group))
    }
}

impl HostedGroups {
    /// The controller's topics, for every group here but the controller's own.
    pub fn controller_topics(&self, topics: &Topics) {
        for core in self.all().filter(|core| core.group != CONTROLLER_GROUP) {
            core.controller_topics(topics.clone());
        }
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
            glommio::spawn_local(partition_bounds::answer(core.clone(), query)).detach();
        }
    }
}

/// The consumer group a group request names.
fn coordinator_name<'a>(request: &Request<'a>) -> Option<&'a str> {
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
