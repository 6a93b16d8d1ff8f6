//! Answers consumer group requests: finding a group's coordinator, join, heartbeat,
//! leave, offset commit and fetch, list, describe, delete.
//!
//! A group is coordinated by the leader of one replica group (`Placement::coordinator_of` of its
//! name): other shards answer `WrongShard` with the coordinating shard's address, a
//! follower `NotLeader` with its leader's. Changes (join, leave, commit, delete) are
//! entries of that group's log, answered once applied; reads and heartbeats come from
//! the leader's applied state once it serves reads. Every field is checked before
//! anything is proposed. Never blocks a Ready pass; never holds the state across an await.

use std::collections::BTreeMap;
use std::rc::Rc;

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use crate::broker::group_entry::GroupEntry;
use crate::broker::groups::{
    AssignStrategy, Group, GroupApplied, GroupMode, GroupRefusal, Join, TopicPartition,
};
use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::Applied;
use crate::constants::{
    MAX_CLIENT_NAME_BYTES, MAX_GROUP_NAME_BYTES, MAX_GROUP_SUBSCRIPTIONS,
    MAX_OFFSET_METADATA_BYTES, MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS,
};
use crate::protocol::wire::{self, ErrorCode, Request, RequestBody, ResponseBody};
use crate::shard::answer_frame::AnswerFrame;
use crate::shard::group_driver::ShardCore;
use crate::shard::hosted_groups::HostedGroups;
use crate::shard::partition_bounds;
use crate::shard::requests::{finish_response, propose_admin, WireError};

/// Whether a request body is one of the consumer group requests.
pub(super) fn is_group_request(body: RequestBody) -> bool {
    matches!(
        body,
        RequestBody::FindCoordinatorRequest
            | RequestBody::JoinGroupRequest
            | RequestBody::HeartbeatRequest
            | RequestBody::LeaveGroupRequest
            | RequestBody::OffsetCommitRequest
            | RequestBody::OffsetFetchRequest
            | RequestBody::DescribeGroupRequest
            | RequestBody::DeleteGroupRequest
    )
}

/// Answers one consumer group request; `visible` says which topics the caller may see
/// (a group's offsets and assignments of other topics are left out of what it is told).
pub(super) async fn handle(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    request: &Request<'_>,
    visible: &dyn Fn(&str) -> bool,
) -> Result<AnswerFrame, WireError> {
    let id = correlation_id;
    match request.body_type() {
        RequestBody::FindCoordinatorRequest => {
            find_coordinator(core, id, body(request.body_as_find_coordinator_request())?)
        }
        RequestBody::JoinGroupRequest => {
            join(core, id, body(request.body_as_join_group_request())?).await
        }
        RequestBody::HeartbeatRequest => {
            heartbeat(core, id, body(request.body_as_heartbeat_request())?)
        }
        RequestBody::LeaveGroupRequest => {
            leave(core, id, body(request.body_as_leave_group_request())?).await
        }
        RequestBody::OffsetCommitRequest => {
            commit(core, id, body(request.body_as_offset_commit_request())?).await
        }
        RequestBody::OffsetFetchRequest => {
            let asked = body(request.body_as_offset_fetch_request())?;
            fetch_offsets(core, id, asked, visible)
        }
        RequestBody::DescribeGroupRequest => describe(
            core,
            id,
            body(request.body_as_describe_group_request())?,
            visible,
        ),
        RequestBody::DeleteGroupRequest => {
            delete(core, id, body(request.body_as_delete_group_request())?).await
        }
        _ => Err(WireError::new(ErrorCode::InvalidRequest, "unknown request")),
    }
}

fn body<T>(body: Option<T>) -> Result<T, WireError> {
    body.ok_or_else(|| WireError::new(ErrorCode::MalformedFrame, "request body missing"))
}

/// A name, id or metadata text within its bound (`what` names it in the error).
fn bounded<'a>(text: Option<&'a str>, what: &str, max: usize) -> Result<&'a str, WireError> {
    let text = text.unwrap_or("");
    if text.len() > max {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!("{what} is {} bytes, more than {max}", text.len()),
        ));
    }
    Ok(text)
}

fn group_name(name: Option<&str>) -> Result<&str, WireError> {
    let name = bounded(name, "the group name", MAX_GROUP_NAME_BYTES)?;
    if name.is_empty() {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            "group name missing",
        ));
    }
    Ok(name)
}

/// This shard coordinates `group` and may answer for it: it leads and has applied what
/// its predecessors committed.
fn coordinating(core: &ShardCore, group: &str) -> Result<(), WireError> {
    let coordinator = core.placement().coordinator_of(group);
    if coordinator != core.group {
        return Err(WireError::wrong_shard(core, coordinator));
    }
    if !core.serves_reads() {
        return Err(WireError::not_leader(core));
    }
    Ok(())
}

/// What a refused group change says on the wire.
fn refusal_error(refusal: &GroupRefusal) -> WireError {
    let code = match refusal {
        GroupRefusal::UnknownGroup(_) => ErrorCode::UnknownGroup,
        GroupRefusal::UnknownMember { .. } => ErrorCode::UnknownMember,
        GroupRefusal::StaleGeneration { .. } => ErrorCode::StaleGeneration,
        GroupRefusal::NotAssigned { .. } => ErrorCode::NotAssigned,
        GroupRefusal::NotEmpty { .. } => ErrorCode::GroupNotEmpty,
        GroupRefusal::Full(_) => ErrorCode::InvalidRequest,
    };
    WireError::new(code, refusal.to_string())
}

/// Proposes a group change and waits for what applying it did.
async fn propose_group(
    core: &Rc<ShardCore>,
    entry: GroupEntry<'_>,
) -> Result<GroupApplied, WireError> {
    let data = BrokerEntry::Group(entry).encode();
    match propose_admin(core, data).await? {
        Applied::Group(GroupApplied::Refused(refusal)) => Err(refusal_error(&refusal)),
        Applied::Group(applied) => Ok(applied),
        other => Err(WireError::new(
            ErrorCode::InternalError,
            format!("group entry applied as {other:?}"),
        )),
    }
}

fn find_coordinator(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    request: wire::FindCoordinatorRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    let group = group_name(request.group())?;
    let coordinator = core.placement().coordinator_of(group);
    let node = core.leader_of(coordinator);
    let address = (node != 0)
        .then(|| core.replica_address(node, coordinator))
        .flatten();
    let mut builder = FlatBufferBuilder::with_capacity(128);
    let args = wire::FindCoordinatorResponseArgs {
        group: Some(builder.create_string(group)),
        node: if address.is_some() { node } else { 0 },
        address: address.map(|a| builder.create_string(&a)),
    };
    let response = wire::FindCoordinatorResponse::create(&mut builder, &args);
    Ok(finish(
        builder,
        correlation_id,
        ResponseBody::FindCoordinatorResponse,
        response,
    ))
}

fn finish<T>(
    builder: FlatBufferBuilder<'_>,
    correlation_id: u64,
    kind: ResponseBody,
    body: WIPOffset<T>,
) -> AnswerFrame {
    finish_response(
        builder,
        correlation_id,
        kind,
        Some(body.as_union_value()),
        None,
    )
}

/// Topic names by id, as requests see them.
fn topic_names(core: &ShardCore) -> BTreeMap<u32, String> {
    core.state()
        .request_topics()
        .list()
        .map(|t| (t.id, t.name.clone()))
        .collect()
}

/// Partitions grouped by topic, with names (topics deleted since are left out).
fn build_assignment<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    names: &BTreeMap<u32, String>,
    assignment: &[TopicPartition],
) -> WIPOffset<Vector<'b, ForwardsUOffset<wire::TopicPartitions<'b>>>> {
    let mut by_topic: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (topic, partition) in assignment {
        by_topic.entry(*topic).or_default().push(*partition);
    }
    let built: Vec<_> = by_topic
        .iter()
        .filter_map(|(topic, partitions)| {
            let name = names.get(topic)?;
            let args = wire::TopicPartitionsArgs {
                topic: Some(builder.create_string(name)),
                partitions: Some(builder.create_vector(partitions)),
            };
            Some(wire::TopicPartitions::create(builder, &args))
        })
        .collect();
    builder.create_vector(&built)
}

async fn join(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    request: wire::JoinGroupRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    let group = group_name(request.group())?;
    coordinating(core, group)?;
    let member = bounded(request.member_id(), "the member id", MAX_GROUP_NAME_BYTES)?;
    let client = bounded(request.client(), "the client name", MAX_CLIENT_NAME_BYTES)?;
    let instance = bounded(
        request.instance(),
        "the instance name",
        MAX_GROUP_NAME_BYTES,
    )?;
    let session_timeout_ms = request.session_timeout_ms();
    if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&session_timeout_ms) {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!("session timeout {session_timeout_ms} ms is outside {MIN_SESSION_TIMEOUT_MS}..={MAX_SESSION_TIMEOUT_MS} ms"),
        ));
    }
    let mode = GroupMode::from_code(request.mode().0)
        .ok_or_else(|| WireError::new(ErrorCode::InvalidRequest, "unknown group mode"))?;
    let strategy = AssignStrategy::from_code(request.strategy().0)
        .ok_or_else(|| WireError::new(ErrorCode::InvalidRequest, "unknown assignment strategy"))?;
    let topics = subscribed_topics(core, request.topics())?;
    let entry = GroupEntry::Join(Join {
        group,
        member_id: member,
        client: if client.is_empty() {
            "consumer"
        } else {
            client
        },
        instance,
        mode,
        strategy,
        session_timeout_ms,
        topics,
    });
    let GroupApplied::Joined {
        member_id,
        generation,
        assignment,
    } = propose_group(core, entry).await?
    else {
        return Err(WireError::new(
            ErrorCode::InternalError,
            "join applied as something else",
        ));
    };
    core.sessions
        .borrow_mut()
        .touch(group, &member_id, session_timeout_ms);
    let names = topic_names(core);
    let mut builder = FlatBufferBuilder::with_capacity(256);
    let args = wire::JoinGroupResponseArgs {
        group: Some(builder.create_string(group)),
        member_id: Some(builder.create_string(&member_id)),
        generation,
        assignment: Some(build_assignment(&mut builder, &names, &assignment)),
    };
    let response = wire::JoinGroupResponse::create(&mut builder, &args);
    Ok(finish(
        builder,
        correlation_id,
        ResponseBody::JoinGroupResponse,
        response,
    ))
}

/// The ids of the topics a member subscribes to: at least one, each known.
fn subscribed_topics(
    core: &ShardCore,
    names: Option<Vector<'_, ForwardsUOffset<&str>>>,
) -> Result<Vec<u32>, WireError> {
    let names = names.unwrap_or_default();
    if names.is_empty() || names.len() > MAX_GROUP_SUBSCRIPTIONS {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!(
                "subscribe to 1 to {MAX_GROUP_SUBSCRIPTIONS} topics, not {}",
                names.len()
            ),
        ));
    }
    let state = core.state();
    let topics = state.request_topics();
    names
        .iter()
        .map(|name| {
            topics.get(name).map(|t| t.id).ok_or_else(|| {
                WireError::new(ErrorCode::UnknownTopic, format!("no topic {name:?}"))
            })
        })
        .collect()
}

/// The member's group and its entry in it, or `UnknownMember` (it joins again).
fn member_of<'s>(
    group: Option<&'s Group>,
    name: &str,
    member: &str,
) -> Result<&'s Group, WireError> {
    match group {
        Some(group) if group.members.contains_key(member) => Ok(group),
        _ => Err(refusal_error(&GroupRefusal::UnknownMember {
            group: name.to_string(),
            member: member.to_string(),
        })),
    }
}

fn heartbeat(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    request: wire::HeartbeatRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    let group = group_name(request.group())?;
    coordinating(core, group)?;
    let member = bounded(request.member_id(), "the member id", MAX_GROUP_NAME_BYTES)?;
    let (generation, assignment, timeout) = {
        let state = core.state();
        let found = member_of(state.consumer_groups().get(group), group, member)?;
        let entry = &found.members[member];
        (
            found.generation,
            entry.assignment.clone(),
            entry.session_timeout_ms,
        )
    };
    core.sessions.borrow_mut().touch(group, member, timeout);
    let names = topic_names(core);
    let mut builder = FlatBufferBuilder::with_capacity(256);
    let args = wire::HeartbeatResponseArgs {
        generation,
        assignment: Some(build_assignment(&mut builder, &names, &assignment)),
    };
    let response = wire::HeartbeatResponse::create(&mut builder, &args);
    Ok(finish(
        builder,
        correlation_id,
        ResponseBody::HeartbeatResponse,
        response,
    ))
}

async fn leave(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    request: wire::LeaveGroupRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    let group = group_name(request.group())?;
    coordinating(core, group)?;
    let member = bounded(request.member_id(), "the member id", MAX_GROUP_NAME_BYTES)?;
    let entry = GroupEntry::Leave {
        group,
        member,
        generation: None,
    };
    let generation = match propose_group(core, entry).await? {
        GroupApplied::Left { generation } => generation,
        _ => {
            return Err(WireError::new(
                ErrorCode::InternalError,
                "leave applied as something else",
            ))
        }
    };
    core.sessions.borrow_mut().forget(group, member);
    let mut builder = FlatBufferBuilder::with_capacity(64);
    let args = wire::LeaveGroupResponseArgs { generation };
    let response = wire::LeaveGroupResponse::create(&mut builder, &args);
    Ok(finish(
        builder,
        correlation_id,
        ResponseBody::LeaveGroupResponse,
        response,
    ))
}

async fn commit(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    request: wire::OffsetCommitRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    let group = group_name(request.group())?;
    coordinating(core, group)?;
    let member = bounded(request.member_id(), "the member id", MAX_GROUP_NAME_BYTES)?;
    let offsets = request.offsets().unwrap_or_default();
    if offsets.is_empty() {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            "no offsets to commit",
        ));
    }
    let checked = offsets
        .iter()
        .map(|offset| checked_offset(core, offset))
        .collect::<Result<Vec<_>, _>>()?;
    check_other_shards_bounds(core, &checked).await?;
    let entry = GroupEntry::Commit {
        group,
        member,
        generation: request.generation(),
        offsets: checked,
    };
    propose_group(core, entry).await?;
    let mut builder = FlatBufferBuilder::with_capacity(64);
    let args = wire::OffsetCommitResponseArgs {
        group: Some(builder.create_string(group)),
    };
    let response = wire::OffsetCommitResponse::create(&mut builder, &args);
    Ok(finish(
        builder,
        correlation_id,
        ResponseBody::OffsetCommitResponse,
        response,
    ))
}

/// One offset to commit: a known topic and partition, an offset the partition holds
/// (from its first kept offset to its end, when this shard holds the partition), bounded
/// metadata.
fn checked_offset<'a>(
    core: &ShardCore,
    offset: wire::PartitionOffset<'a>,
) -> Result<(TopicPartition, u64, &'a str), WireError> {
    let name = offset.topic().unwrap_or("");
    let state = core.state();
    let topic = state
        .request_topics()
        .get(name)
        .ok_or_else(|| WireError::new(ErrorCode::UnknownTopic, format!("no topic {name:?}")))?;
    let partition = offset.partition();
    if partition >= topic.partitions {
        return Err(WireError::new(
            ErrorCode::UnknownPartition,
            format!(
                "topic {name:?} has {} partitions, not {partition}",
                topic.partitions
            ),
        ));
    }
    let next = u64::try_from(offset.offset()).map_err(|_| {
        WireError::new(
            ErrorCode::InvalidRequest,
            "a committed offset is never negative",
        )
    })?;
    if core.placement().group_of_partition(topic, partition) == core.group {
        let (start, end) = state
            .partition(topic.id, partition)
            .map_or((0, 0), |p| (p.start_offset(), p.high_watermark()));
        if next < start || next > end {
            return Err(out_of_range(next, name, partition, (start, end)));
        }
    }
    let metadata = bounded(
        offset.metadata(),
        "the offset metadata",
        MAX_OFFSET_METADATA_BYTES,
    )?;
    Ok(((topic.id, partition), next, metadata))
}

fn out_of_range(next: u64, name: &str, partition: u32, (start, end): (u64, u64)) -> WireError {
    WireError::new(
        ErrorCode::OffsetOutOfRange,
        format!("offset {next} of {name:?} partition {partition} is outside {start}..={end} (its first kept offset to its end)"),
    )
}

/// Offsets of partitions another group of this node holds, checked against that group's
/// bounds (`checked_offset` checks this shard's own). Unchecked if the shard does not
/// answer in time.
async fn check_other_shards_bounds(
    core: &Rc<ShardCore>,
    offsets: &[(TopicPartition, u64, &str)],
) -> Result<(), WireError> {
    for &((topic_id, partition), next, _) in offsets {
        let group = core
            .state()
            .request_topics()
            .list()
            .find(|topic| topic.id == topic_id)
            .map(|topic| core.placement().group_of_partition(topic, partition));
        // A topic deleted meanwhile: nothing to check against.
        let Some(group) = group.filter(|&group| group != core.group) else {
            continue;
        };
        // Asked of the shard running that group on this node; a group this node does
        // not hold goes unchecked, as an unanswered one does.
        let Some(shard) = core
            .placement()
            .shard_on(u64::from(core.config.node_id), group)
        else {
            continue;
        };
        let holder = (shard, group);
        let Some(bounds) = partition_bounds::ask(core, holder, topic_id, partition, next).await
        else {
            tracing::warn!(
                shard,
                topic_id,
                partition,
                "no answer about a partition's bounds: a commit to it is not checked"
            );
            continue;
        };
        if next < bounds.0 || next > bounds.1 {
            let names = topic_names(core);
            let name = names.get(&topic_id).map_or("?", String::as_str);
            return Err(out_of_range(next, name, partition, bounds));
        }
    }
    Ok(())
}

fn fetch_offsets(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    request: wire::OffsetFetchRequest<'_>,
    visible: &dyn Fn(&str) -> bool,
) -> Result<AnswerFrame, WireError> {
    let group = group_name(request.group())?;
    coordinating(core, group)?;
    let instance = bounded(
        request.instance(),
        "the instance name",
        MAX_GROUP_NAME_BYTES,
    )?;
    let wanted: Vec<&str> = request
        .topics()
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    let mut names = topic_names(core);
    names.retain(|_, name| visible(name));
    let state = core.state();
    let mut builder = FlatBufferBuilder::with_capacity(256);
    let mut built = Vec::new();
    if let Some(found) = state.consumer_groups().get(group) {
        let owner = match found.mode {
            GroupMode::Clustering => "",
            GroupMode::Broadcasting => instance,
        };
        for ((who, topic, partition), committed) in &found.offsets {
            let Some(name) = names.get(topic) else {
                continue;
            };
            if who != owner || !(wanted.is_empty() || wanted.contains(&name.as_str())) {
                continue;
            }
            let entry = (
                name.as_str(),
                *partition,
                committed.offset,
                committed.metadata.as_str(),
                who.as_str(),
            );
            built.push(build_offset(&mut builder, entry));
        }
    }
    let args = wire::OffsetFetchResponseArgs {
        group: Some(builder.create_string(group)),
        offsets: Some(builder.create_vector(&built)),
    };
    let response = wire::OffsetFetchResponse::create(&mut builder, &args);
    Ok(finish(
        builder,
        correlation_id,
        ResponseBody::OffsetFetchResponse,
        response,
    ))
}

/// One committed offset on the wire: topic, partition, offset, metadata, instance.
fn build_offset<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    (topic, partition, offset, metadata, instance): (&str, u32, u64, &str, &str),
) -> WIPOffset<wire::PartitionOffset<'b>> {
    let args = wire::PartitionOffsetArgs {
        topic: Some(builder.create_string(topic)),
        partition,
        offset: i64::try_from(offset).unwrap_or(i64::MAX),
        metadata: Some(builder.create_string(metadata)),
        instance: Some(builder.create_string(instance)),
    };
    wire::PartitionOffset::create(builder, &args)
}

/// The consumer groups coordinated by every replica group this shard leads (none when
/// it leads none: the client asks every shard of every node and joins the answers).
pub(super) fn list_groups(groups: &HostedGroups, correlation_id: u64) -> AnswerFrame {
    let mut builder = FlatBufferBuilder::with_capacity(256);
    let mut built = Vec::new();
    for core in groups.all().into_iter().filter(|core| core.serves_reads()) {
        let state = core.state();
        for (name, group) in state.consumer_groups().list() {
            let args = wire::GroupSummaryArgs {
                name: Some(builder.create_string(name)),
                members: group.members.len() as u32,
                generation: group.generation,
                mode: wire::GroupMode(group.mode.code()),
            };
            built.push(wire::GroupSummary::create(&mut builder, &args));
        }
    }
    let args = wire::ListGroupsResponseArgs {
        groups: Some(builder.create_vector(&built)),
    };
    let response = wire::ListGroupsResponse::create(&mut builder, &args);
    finish(
        builder,
        correlation_id,
        ResponseBody::ListGroupsResponse,
        response,
    )
}

fn describe(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    request: wire::DescribeGroupRequest<'_>,
    visible: &dyn Fn(&str) -> bool,
) -> Result<AnswerFrame, WireError> {
    let group = group_name(request.group())?;
    coordinating(core, group)?;
    let mut names = topic_names(core);
    names.retain(|_, name| visible(name));
    let state = core.state();
    let found = state
        .consumer_groups()
        .get(group)
        .ok_or_else(|| refusal_error(&GroupRefusal::UnknownGroup(group.to_string())))?;
    let mut builder = FlatBufferBuilder::with_capacity(1024);
    let members: Vec<_> = found
        .members
        .iter()
        .map(|(id, member)| {
            let args = wire::GroupMemberArgs {
                member_id: Some(builder.create_string(id)),
                client: Some(builder.create_string(&member.client)),
                instance: Some(builder.create_string(&member.instance)),
                session_timeout_ms: member.session_timeout_ms,
                assignment: Some(build_assignment(&mut builder, &names, &member.assignment)),
            };
            wire::GroupMember::create(&mut builder, &args)
        })
        .collect();
    let offsets: Vec<_> = found
        .offsets
        .iter()
        .filter_map(|((who, topic, partition), committed)| {
            let name = names.get(topic)?;
            let entry = (
                name.as_str(),
                *partition,
                committed.offset,
                committed.metadata.as_str(),
                who.as_str(),
            );
            Some(build_offset(&mut builder, entry))
        })
        .collect();
    let args = wire::DescribeGroupResponseArgs {
        group: Some(builder.create_string(group)),
        generation: found.generation,
        mode: wire::GroupMode(found.mode.code()),
        strategy: wire::AssignStrategy(found.strategy.code()),
        members: Some(builder.create_vector(&members)),
        offsets: Some(builder.create_vector(&offsets)),
    };
    let response = wire::DescribeGroupResponse::create(&mut builder, &args);
    Ok(finish(
        builder,
        correlation_id,
        ResponseBody::DescribeGroupResponse,
        response,
    ))
}

async fn delete(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    request: wire::DeleteGroupRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    let group = group_name(request.group())?;
    coordinating(core, group)?;
    propose_group(core, GroupEntry::Delete { group }).await?;
    let mut builder = FlatBufferBuilder::with_capacity(64);
    let args = wire::DeleteGroupResponseArgs {
        group: Some(builder.create_string(group)),
    };
    let response = wire::DeleteGroupResponse::create(&mut builder, &args);
    Ok(finish(
        builder,
        correlation_id,
        ResponseBody::DeleteGroupResponse,
        response,
    ))
}
