//! The requests a replica move is made of (`controller::mover` asks them): a group's
//! leader changes its membership (or describes it), and the controller's leader records
//! where the move stands.
//!
//! Owns checking these requests and answering them; never decides which move to make
//! nor which step comes next (the mover does, from the configuration the group applied).
//! The controller group itself is not moved (its replicas are on every node).

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;

use crate::broker::log_entry::BrokerEntry;
use crate::broker::replica_moves::{MoveEntry, NodeService, ReplicaMove};
use crate::broker::state::Applied;
use crate::constants::ADMIN_TIMEOUT;
use crate::controller::{GroupId, PlannedChange, CONTROLLER_GROUP};
use crate::protocol::wire::{self, ErrorCode, MembershipAction, MoveAction, ResponseBody};
use crate::replication::membership::MembershipChange;
use crate::shard::answer_frame::AnswerFrame;
use crate::shard::group_driver::ShardCore;
use crate::shard::requests::{controller_only, finish_response, propose_admin, WireError};

/// Most members a request may name (a group has at most 5 voters and a learner).
const MAX_NAMED_MEMBERS: usize = 16;

/// Most moves one plan lists (a rebalance of a large cluster is planned again as it
/// goes).
const MAX_PLANNED_MOVES: usize = 256;

/// How long `keel node remove` waits for a running node to have the entry that removes
/// it before its controller replica leaves the group (a stopped node is not waited for).
const REMOVED_NODE_NOTICE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A move's target shard left to the controller.
pub const ANY_SHARD: u32 = u32::MAX;

/// Records a move's step in the controller's log.
pub(super) async fn handle_move_replica(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    asked: wire::MoveReplicaRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    controller_only(core).await?;
    let group = asked.group();
    check_movable(core, group)?;
    let nodes = |list: Option<flatbuffers::Vector<'_, u64>>| -> Result<Vec<u64>, WireError> {
        let list: Vec<u64> = list.iter().flatten().collect();
        if list.len() > MAX_NAMED_MEMBERS {
            return Err(invalid(format!("at most {MAX_NAMED_MEMBERS} members")));
        }
        Ok(list)
    };
    let entry = match asked.action() {
        MoveAction::Start => {
            let to_node = asked.to_node();
            let to_shard = match asked.to_shard() {
                // The controller's replica runs on shard 0 of every node.
                _ if group == CONTROLLER_GROUP.0 => 0,
                ANY_SHARD => least_loaded_shard(core, to_node),
                shard => shard,
            };
            let moving = ReplicaMove {
                group,
                from: asked.from_node(),
                to: (to_node, to_shard),
                join_voters: nodes(asked.voters())?,
                join_learners: nodes(asked.learners())?,
                join_index: asked.config_index(),
            };
            check_start(core, &moving)?;
            MoveEntry::Start(moving)
        }
        MoveAction::Finish => match replicas_after_move(core, group) {
            Some(replicas) => MoveEntry::Finish {
                group,
                from: asked.from_node(),
                to: asked.to_node(),
                replicas,
            },
            // Recorded already (an end asked again): nothing to do.
            None => return Ok(move_answer(correlation_id, group, 0, false)),
        },
        MoveAction::Abandon => MoveEntry::Abandon {
            group,
            from: asked.from_node(),
            to: asked.to_node(),
        },
        MoveAction::Leader => {
            let node = asked.to_node();
            if !core.placement().replicas(GroupId(group)).contains(&node) {
                return Err(invalid(format!(
                    "node {node} is not a voter of group {group}: it cannot lead it"
                )));
            }
            MoveEntry::Leader { group, node }
        }
        _ => return Err(invalid("unknown move action")),
    };
    let to_shard = match &entry {
        MoveEntry::Start(moving) => moving.to.1,
        _ => 0,
    };
    let applied = matches!(
        propose_admin(core, BrokerEntry::Move(entry).encode()).await?,
        Applied::TopicsChanged
    );
    Ok(move_answer(correlation_id, group, to_shard, applied))
}

fn move_answer(correlation_id: u64, group: u32, to_shard: u32, applied: bool) -> AnswerFrame {
    let mut builder = FlatBufferBuilder::with_capacity(64);
    let body = wire::MoveReplicaResponse::create(
        &mut builder,
        &wire::MoveReplicaResponseArgs {
            group,
            to_shard,
            applied,
        },
    );
    finish_response(
        builder,
        correlation_id,
        ResponseBody::MoveReplicaResponse,
        Some(body.as_union_value()),
        None,
    )
}

/// Plans the moves that drain the nodes asked and even out the rest (changes nothing).
pub(super) async fn handle_plan_moves(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    asked: wire::PlanMovesRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    controller_only(core).await?;
    let mut draining: Vec<u64> = asked.drain().iter().flatten().collect();
    let nodes = core.placement().node_ids();
    draining.extend(
        core.state()
            .topics
            .moves()
            .inactive_nodes()
            .map(|(node, _)| node),
    );
    draining.sort_unstable();
    draining.dedup();
    if let Some(unknown) = draining.iter().find(|n| !nodes.contains(n)) {
        return Err(invalid(format!("node {unknown} is not in the cluster")));
    }
    if draining.len() >= nodes.len() {
        return Err(invalid("draining every node leaves nowhere to move to"));
    }
    let limit = match asked.max_moves() {
        0 => MAX_PLANNED_MOVES,
        asked => (asked as usize).min(MAX_PLANNED_MOVES),
    };
    let planned = {
        let state = core.state();
        let moves = state.topics.moves();
        let busy: Vec<u32> = moves.all_under_way().map(|m| m.group).collect();
        let left = |group: u32| {
            moves
                .retired
                .get(&group)
                .map(|nodes| nodes.iter().copied().collect())
                .unwrap_or_default()
        };
        core.placement()
            .plan_replica_moves((&nodes, &draining), left, &busy, limit)
    };
    // Replica moves first; leadership moves once none is left (they assume the replicas
    // where the replica moves put them).
    let replica_moves = planned
        .iter()
        .any(|change| matches!(change, PlannedChange::Replica { .. }));
    let mut builder = FlatBufferBuilder::with_capacity(64 + 40 * planned.len());
    let moves: Vec<_> = planned
        .iter()
        .filter_map(|change| {
            let args = match *change {
                PlannedChange::Replica { group, from, to } => wire::PlannedMoveArgs {
                    group,
                    from_node: from.node,
                    to_node: to.node,
                    to_shard: to.shard,
                    leader: false,
                },
                PlannedChange::Leader { .. } if replica_moves => return None,
                PlannedChange::Leader { group, from, to } => wire::PlannedMoveArgs {
                    group,
                    from_node: from,
                    to_node: to,
                    to_shard: 0,
                    leader: true,
                },
            };
            Some(wire::PlannedMove::create(&mut builder, &args))
        })
        .collect();
    let moves = builder.create_vector(&moves);
    let body = wire::PlanMovesResponse::create(
        &mut builder,
        &wire::PlanMovesResponseArgs { moves: Some(moves) },
    );
    Ok(finish_response(
        builder,
        correlation_id,
        ResponseBody::PlanMovesResponse,
        Some(body.as_union_value()),
        None,
    ))
}

/// Records a node's service state: draining (takes no new replica), active again, or
/// removed (only once it holds no data replica nor a controller vote).
pub(super) async fn handle_set_node_state(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    asked: wire::SetNodeStateRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    controller_only(core).await?;
    let node = asked.node();
    if !core.placement().node_ids().contains(&node) {
        return Err(invalid(format!("node {node} is not in the cluster")));
    }
    let state = match asked.state() {
        wire::NodeService::Active => NodeService::Active,
        wire::NodeService::Draining => NodeService::Draining,
        wire::NodeService::Removed => NodeService::Removed,
        _ => return Err(invalid("unknown node state")),
    };
    if state == NodeService::Removed {
        check_removable(core, node)?;
    }
    let applied = matches!(
        propose_admin(
            core,
            BrokerEntry::Move(MoveEntry::Node { node, state }).encode()
        )
        .await?,
        Applied::TopicsChanged
    );
    if !applied && core.state().topics.moves().node_state(node) != state {
        return Err(invalid(format!(
            "node {node} was removed: it never serves again"
        )));
    }
    if state == NodeService::Removed && core.membership_view().membership.learners.contains(&node) {
        // Its controller replica leaves too: a removed node holds nothing and keeps no
        // place in the controller's configuration. Told first, while it still gets the
        // log (a replica removed from its group hears nothing more), when it runs.
        let removed_at = core.state().applied_index;
        let deadline = std::time::Instant::now() + REMOVED_NODE_NOTICE_WAIT;
        while std::time::Instant::now() < deadline {
            let matched = core
                .status()
                .followers
                .iter()
                .find(|&&(id, ..)| u64::from(id) == node)
                .map_or(0, |&(_, matched, _)| matched);
            if matched >= removed_at {
                // The next heartbeats carry the commit index to it.
                let heartbeat = core.config.tick_ms * core.config.heartbeat_ticks as u64;
                glommio::timer::sleep(std::time::Duration::from_millis(3 * heartbeat)).await;
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        }
        apply_membership_change(core, MembershipChange::RemoveLearner { node }).await?;
    }
    let mut builder = FlatBufferBuilder::with_capacity(64);
    let body = wire::SetNodeStateResponse::create(
        &mut builder,
        &wire::SetNodeStateResponseArgs { node, applied },
    );
    Ok(finish_response(
        builder,
        correlation_id,
        ResponseBody::SetNodeStateResponse,
        Some(body.as_union_value()),
        None,
    ))
}

/// A node may be removed once it holds no data replica and no controller vote.
fn check_removable(core: &ShardCore, node: u64) -> Result<(), WireError> {
    let placement = core.placement();
    if placement.replicas(CONTROLLER_GROUP).contains(&node) {
        return Err(invalid(format!(
            "node {node} is a voter of the controller group: drain it first (keel node drain \
             {node} moves its vote to another node)"
        )));
    }
    let held: Vec<u32> = placement
        .group_ids()
        .into_iter()
        .filter(|&g| g != CONTROLLER_GROUP && placement.members(g).contains(&node))
        .map(|g| g.0)
        .collect();
    if !held.is_empty() {
        return Err(invalid(format!(
            "node {node} still holds groups {held:?}: drain it first (keel node drain {node})"
        )));
    }
    Ok(())
}

/// The shard of `node` running the fewest groups (the lowest of those).
fn least_loaded_shard(core: &ShardCore, node: u64) -> u32 {
    let placement = core.placement();
    (0..core.config.shards)
        .min_by_key(|&shard| (placement.groups_on(node, shard).len(), shard))
        .unwrap_or(0)
}

/// The group's replicas once its move under way is done: every member but the node
/// that gave its replica up, each on the shard running it there (none without a move).
/// The controller group's are its voters: the vote moved, every replica stays.
fn replicas_after_move(core: &ShardCore, group: u32) -> Option<Vec<(u64, u32)>> {
    let state = core.state();
    let moving = state.topics.moves().under_way(group)?;
    let placement = core.placement();
    if group == CONTROLLER_GROUP.0 {
        let mut voters: Vec<u64> = placement
            .replicas(CONTROLLER_GROUP)
            .iter()
            .copied()
            .filter(|&node| node != moving.from)
            .chain(std::iter::once(moving.to.0))
            .collect();
        voters.sort_unstable();
        voters.dedup();
        return Some(voters.into_iter().map(|node| (node, 0)).collect());
    }
    Some(
        placement
            .members(GroupId(group))
            .into_iter()
            .filter(|&node| node != moving.from)
            .filter_map(|node| Some((node, placement.shard_on(node, GroupId(group))?)))
            .collect(),
    )
}

/// A group that exists (the controller's moves a vote: `move_step`'s controller path).
fn check_movable(core: &ShardCore, group: u32) -> Result<(), WireError> {
    if !core.placement().contains(GroupId(group)) {
        return Err(invalid(format!("no replica group {group}")));
    }
    Ok(())
}

/// A start that can happen: from a voter, to a node of the cluster not in the group, on
/// one of its shards, with the learner in the configuration it starts with.
fn check_start(core: &ShardCore, moving: &ReplicaMove) -> Result<(), WireError> {
    let group = GroupId(moving.group);
    let placement = core.placement();
    let (to, shard) = moving.to;
    if !placement.replicas(group).contains(&moving.from) {
        return Err(invalid(format!(
            "node {} holds no voter of group {}",
            moving.from, moving.group
        )));
    }
    if !placement.node_ids().contains(&to) {
        return Err(invalid(format!("node {to} is not in the cluster")));
    }
    if shard >= core.config.shards {
        return Err(invalid(format!("nodes run {} shards", core.config.shards)));
    }
    if core.state().topics.moves().has_left(moving.group, to) {
        return Err(invalid(format!(
            "node {to} held group {} before: a replica id is never used twice in a group",
            moving.group
        )));
    }
    if core.state().topics.moves().node_state(to) != NodeService::Active {
        return Err(invalid(format!(
            "node {to} is draining or removed: nothing moves onto it"
        )));
    }
    if !moving.join_learners.contains(&to) || moving.join_voters.is_empty() {
        return Err(invalid("the learner starts with a configuration naming it"));
    }
    Ok(())
}

/// Changes (or describes) a group's membership at its leader.
pub(super) async fn handle_change_membership(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    asked: wire::ChangeMembershipRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    let group = GroupId(asked.group());
    if core.group != group {
        if !core.placement().contains(group) {
            return Err(invalid(format!("no replica group {}", group.0)));
        }
        return Err(WireError::wrong_shard(core, group));
    }
    if !core.is_leader() {
        return Err(WireError::not_leader(core));
    }
    if let Some(change) = change_of(&asked)? {
        apply_membership_change(core, change).await?;
    }
    Ok(membership_answer(core, correlation_id))
}

/// Proposes `change` to this leader's group and waits (at most `ADMIN_TIMEOUT`) until it
/// is applied.
pub(super) async fn apply_membership_change(
    core: &Rc<ShardCore>,
    change: MembershipChange,
) -> Result<(), WireError> {
    let pending = core
        .change_membership(change)
        .map_err(|error| WireError::from_shard(&error))?;
    match glommio::timer::timeout(ADMIN_TIMEOUT, async { Ok(pending.wait().await) }).await {
        Ok(answer) => answer
            .map(|_| ())
            .map_err(|error| WireError::from_shard(&error)),
        Err(_) => Err(WireError::new(
            ErrorCode::RequestTimedOut,
            "the change was not applied in time (it may still be; ask again)",
        )),
    }
}

/// The change asked for (none for a query).
fn change_of(
    asked: &wire::ChangeMembershipRequest<'_>,
) -> Result<Option<MembershipChange>, WireError> {
    let list = |nodes: Option<flatbuffers::Vector<'_, u64>>| -> Result<Vec<u64>, WireError> {
        let mut nodes: Vec<u64> = nodes.iter().flatten().collect();
        if nodes.len() > MAX_NAMED_MEMBERS {
            return Err(invalid(format!("at most {MAX_NAMED_MEMBERS} members")));
        }
        nodes.sort_unstable();
        nodes.dedup();
        Ok(nodes)
    };
    let node = asked.node();
    Ok(match asked.action() {
        MembershipAction::Query => None,
        MembershipAction::AddLearner => Some(MembershipChange::AddLearner { node }),
        MembershipAction::EnterJoint => Some(MembershipChange::EnterJoint {
            promote: list(asked.promote())?,
            demote: list(asked.demote())?,
        }),
        MembershipAction::LeaveJoint => Some(MembershipChange::LeaveJoint),
        MembershipAction::RemoveLearner => Some(MembershipChange::RemoveLearner { node }),
        _ => return Err(invalid("unknown membership action")),
    })
}

/// The configuration the leader applied, with the learners it counts as caught up.
fn membership_answer(core: &ShardCore, correlation_id: u64) -> AnswerFrame {
    let view = core.membership_view();
    let membership = &view.membership;
    let mut builder = FlatBufferBuilder::with_capacity(256);
    let voters = builder.create_vector(&membership.voters);
    let outgoing = builder.create_vector(&membership.outgoing);
    let learners = builder.create_vector(&membership.learners);
    let caught_up = builder.create_vector(&view.caught_up);
    let learner_matched = builder.create_vector(&view.learner_matched);
    let body = wire::ChangeMembershipResponse::create(
        &mut builder,
        &wire::ChangeMembershipResponseArgs {
            group: core.group.0,
            voters: Some(voters),
            outgoing: Some(outgoing),
            learners: Some(learners),
            index: membership.index,
            caught_up: Some(caught_up),
            learner_matched: Some(learner_matched),
            last_index: view.last_index,
            settled: view.settled,
        },
    );
    finish_response(
        builder,
        correlation_id,
        ResponseBody::ChangeMembershipResponse,
        Some(body.as_union_value()),
        None,
    )
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::InvalidRequest, message)
}
