//! The liveness phase's test: once faults stop, the group must elect one leader, answer
//! every client, and bring every replica to the same applied state, within a budget.
//! Replicas are those of the group's members at the end (`World::is_member`): a node a
//! move removed is left out.

use crate::sim::checkers::{check_final, Violation};
use crate::sim::world::World;

/// Whether the run has converged (then the final checks ran too).
pub fn check(world: &World) -> Result<bool, Violation> {
    if !converged(world) {
        return Ok(false);
    }
    let replicas: Vec<_> = world
        .nodes
        .values()
        .filter(|n| world.is_member(n.id))
        .filter_map(|n| n.replica.as_ref().map(|r| (n.id, r)))
        .filter(|(_, r)| r.failure().is_none())
        .collect();
    check_final(&replicas, &world.workload.history, world.workload.topic_id)?;
    if world.controller.is_none() {
        check_told_topics(world)?;
    }
    for (node, replica) in &replicas {
        world
            .group_client
            .check_replica(*node, replica, world.workload.topic_id)?;
    }
    Ok(true)
}

/// In a controller world: each running node's other shards were told the topics (and
/// users and rules) its controller replica applied.
fn check_told_topics(world: &World) -> Result<(), Violation> {
    for node in world.nodes.values().filter(|n| world.is_member(n.id)) {
        let Some(replica) = node.replica.as_ref() else {
            continue;
        };
        let applied = &replica.state().topics;
        let told = node.told_topics.clone().unwrap_or_default();
        if told != *applied {
            let summary = |t: &crate::broker::state::Topics| {
                let first: Vec<String> = t
                    .list()
                    .take(3)
                    .map(|t| t.name.chars().take(24).collect())
                    .collect();
                format!(
                    "{} topics (first {first:?}), next id {}, {} users, {} rules",
                    t.list().count(),
                    t.next_id(),
                    t.access().users().count(),
                    t.access().rules().len()
                )
            };
            return Err(Violation {
                property: "P8",
                detail: format!(
                    "node {}'s shards were told {}; its controller applied {}",
                    node.id,
                    summary(&told),
                    summary(applied)
                ),
            });
        }
    }
    Ok(())
}

fn converged(world: &World) -> bool {
    let producers_done = world
        .workload
        .producers
        .iter()
        .all(|p| p.in_flight.is_none() && p.closing_batches == 0);
    if !producers_done
        || world.workload.topic_id.is_none()
        || !world.controller_settled()
        || !world.mover_settled()
    {
        return false;
    }
    let mut leader = None;
    let healthy = |n: &&crate::sim::world::Node| {
        world.is_member(n.id) && n.replica.as_ref().is_none_or(|r| r.failure().is_none())
    };
    for node in world.nodes.values().filter(healthy) {
        let Some(replica) = node.replica.as_ref().filter(|_| node.up && !node.paused) else {
            return false;
        };
        if replica.is_leader() {
            if leader.is_some() {
                return false;
            }
            leader = Some(replica);
        }
    }
    let Some(leader) = leader else { return false };
    let commit = leader.commit_index();
    commit == leader.last_index()
        && world.nodes.values().filter(healthy).all(|n| {
            n.replica.as_ref().is_some_and(|r| {
                r.leader_id() == leader.leader_id()
                    && r.applied_index() == commit
                    && r.commit_index() == commit
            })
        })
}

/// What the run still waits for, for the failure message.
pub fn pending(world: &World) -> String {
    let mut parts = Vec::new();
    for p in &world.workload.producers {
        if let Some(f) = &p.in_flight {
            parts.push(format!("producer {} batch {} unanswered", p.id, f.batch));
        }
    }
    for node in world.nodes.values() {
        match &node.replica {
            Some(r) => parts.push(format!(
                "node {}: {} term {} leader {} commit {} applied {} last {} parked {} up {} paused {}{}",
                node.id,
                r.role(),
                r.term(),
                r.leader_id(),
                r.commit_index(),
                r.applied_index(),
                r.last_index(),
                r.is_parked(),
                node.up,
                node.paused,
                r.progress_summary()
            )),
            None => parts.push(format!("node {}: down", node.id)),
        }
    }
    if world.profile.moves {
        parts.push(format!(
            "move under way {:?}, group configuration {:?}",
            world.mover.current,
            world.group_membership()
        ));
    }
    if let Some(controller) = world.controller.as_ref() {
        let ids = |t: &crate::broker::state::Topics| t.list().map(|t| t.id).collect::<Vec<_>>();
        parts.push(format!(
            "controller topics {:?} next id {}",
            ids(&controller.topics),
            controller.topics.next_id()
        ));
        for node in world.nodes.values() {
            if let Some(r) = &node.replica {
                let state = r.state();
                parts.push(format!(
                    "node {}: log topics {:?} next id {}, copy {:?}, stored {:?}",
                    node.id,
                    ids(&state.topics),
                    state.topics.next_id(),
                    state
                        .controller_copy
                        .as_ref()
                        .map(|c| (ids(c), c.next_id())),
                    state.stored_topic_ids()
                ));
            }
        }
    }
    parts.join("; ")
}
