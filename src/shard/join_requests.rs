//! A node joining a running cluster: the controller's leader records it (its addresses,
//! rack) in the controller's log and adds it to the controller group as a learner, then
//! tells it what it needs to start: the bootstrap nodes, the shards and replication
//! factor every node runs, and the controller's configuration it starts its replica
//! with. Asking again is harmless: a node recorded and added already changes nothing
//! (its addresses excepted).
//!
//! Owns checking a join and answering it; never places a replica on the new node (a
//! rebalance or a drain moves replicas there) and never starts anything on it.

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;

use crate::broker::log_entry::BrokerEntry;
use crate::broker::replica_moves::{MoveEntry, NodeService, MAX_NODE_LABEL_BYTES};
use crate::client::join_calls::{join_proof_text, unix_millis};
use crate::config::{check_rack, format_peers, PeerAddress};
use crate::constants::{JOIN_PROOF_MAX_AGE, MAX_CONF_MEMBERS};
use crate::controller::CONTROLLER_GROUP;
use crate::protocol::wire::{self, ErrorCode, ResponseBody};
use crate::replication::membership::MembershipChange;
use crate::shard::answer_frame::AnswerFrame;
use crate::shard::group_driver::ShardCore;
use crate::shard::move_requests::apply_membership_change;
use crate::shard::requests::{controller_only, finish_response, propose_admin, WireError};

/// Records the node and adds it to the controller group as a learner.
pub(super) async fn handle_join_cluster(
    core: &Rc<ShardCore>,
    correlation_id: u64,
    asked: wire::JoinClusterRequest<'_>,
) -> Result<AnswerFrame, WireError> {
    controller_only(core).await?;
    check_join_proof(core, &asked)?;
    let node = joining_node(core, &asked)?;
    let id = u64::from(node.node_id);
    let membership = core.membership_view().membership;
    if membership.is_joint() {
        // Its replica would start from a configuration that is not the group's.
        return Err(WireError::new(
            ErrorCode::RequestTimedOut,
            "the controller group is changing its voters: ask again shortly",
        ));
    }
    if !membership.contains(id) && membership.member_count() >= MAX_CONF_MEMBERS {
        return Err(invalid(format!(
            "the controller group holds at most {MAX_CONF_MEMBERS} nodes (remove one first: \
             keel node remove): no room for node {id}"
        )));
    }
    let known = core.placement().address_of(id) == Some(&node);
    if !known {
        propose_admin(
            core,
            BrokerEntry::Move(MoveEntry::Join(node.clone())).encode(),
        )
        .await?;
        if core.placement().address_of(id) != Some(&node) {
            return Err(invalid(format!(
                "node {id} was not recorded (removed meanwhile, or the node table is full)"
            )));
        }
    }
    if !core.membership_view().membership.contains(id) {
        apply_membership_change(core, MembershipChange::AddLearner { node: id }).await?;
    }
    Ok(join_answer(core, correlation_id))
}

/// Refuses a join that does not prove the cluster's peer secret over its own fields
/// (made within `JOIN_PROOF_MAX_AGE` of this node's clock), before anything about the
/// cluster is looked at or answered.
fn check_join_proof(
    core: &ShardCore,
    asked: &wire::JoinClusterRequest<'_>,
) -> Result<(), WireError> {
    let refuse = |why: String| Err(WireError::new(ErrorCode::NotAuthorized, why));
    let Some(secret) = core.config.peer_secret.as_ref() else {
        return refuse(
            "this cluster has no peer secret (peer_secret_file), and a join proves it: give \
             every node the same --peer-secret-file to add nodes (mutual TLS alone does not \
             admit them)"
                .into(),
        );
    };
    let Some(proof) = asked.proof().filter(|p| !p.is_empty()) else {
        return refuse(
            "a join must prove the cluster's peer secret: give the joining node (or keel \
             node add) the nodes' --peer-secret-file"
                .into(),
        );
    };
    let now = unix_millis();
    let age = now.abs_diff(asked.proof_time_ms());
    if u128::from(age) > JOIN_PROOF_MAX_AGE.as_millis() {
        return refuse(format!(
            "the join's proof was made {age} ms from this node's clock (at most {} s): \
             are the hosts' clocks set?",
            JOIN_PROOF_MAX_AGE.as_secs()
        ));
    }
    let proven = PeerAddress {
        node_id: asked.node(),
        host: asked.host().unwrap_or("").to_string(),
        base_port: asked.base_port(),
        peer_port: asked.peer_port(),
        rack: asked.rack().filter(|r| !r.is_empty()).map(str::to_string),
    };
    let text = join_proof_text(&proven, asked.shards());
    if !secret.check_join_proof(asked.node(), &text, asked.proof_time_ms(), proof.bytes()) {
        return refuse(format!(
            "the join's proof for node {} does not hold: not the cluster's peer secret",
            asked.node()
        ));
    }
    Ok(())
}

/// The node asking, checked: not a bootstrap node, holding no data replica (a rejoin
/// after lost data, or an address moved under live replicas), not removed, running the
/// cluster's shard count, with a reachable host, bounded labels and ports that fit.
fn joining_node(
    core: &ShardCore,
    asked: &wire::JoinClusterRequest<'_>,
) -> Result<PeerAddress, WireError> {
    if core.config.peers.is_empty() {
        return Err(invalid(
            "this node runs alone (started without --peers): it takes no other nodes",
        ));
    }
    let id = asked.node();
    let host = asked.host().unwrap_or("");
    if id == 0 || host.is_empty() || host.len() > MAX_NODE_LABEL_BYTES {
        return Err(invalid(format!(
            "a joining node names its id (from 1) and its host (1-{MAX_NODE_LABEL_BYTES} bytes)"
        )));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control())
        || ["0.0.0.0", "::", "[::]"].contains(&host)
    {
        return Err(invalid(format!(
            "{host:?} is not an address other nodes can reach"
        )));
    }
    let rack = asked.rack().filter(|rack| !rack.is_empty());
    if let Some(rack) = rack {
        check_rack(rack).map_err(invalid)?;
    }
    let placement = core.placement();
    if placement.node_ids().contains(&u64::from(id)) && !placement.is_joined(u64::from(id)) {
        return Err(invalid(format!(
            "node {id} is a bootstrap node of this cluster: it starts with --peers"
        )));
    }
    let recorded = placement.address_of(u64::from(id)).cloned();
    let held = data_groups_held(&placement, u64::from(id));
    if !held.is_empty() {
        // A node holding replicas that asks to join again lost its data (a replica
        // created empty could vote away what it had acknowledged) or wants to move its
        // replicas' addresses under them: neither is a join.
        return Err(invalid(format!(
            "node {id} holds replicas of groups {held:?}: a node that lost its data joins \
             under a new id (drain and remove this one: keel node drain {id})"
        )));
    }
    if core.state().topics.moves().node_state(u64::from(id)) == NodeService::Removed {
        return Err(invalid(format!(
            "node {id} was removed from this cluster: it never serves again (use a new id)"
        )));
    }
    if asked.shards() != placement.shards() {
        return Err(invalid(format!(
            "every node of this cluster runs {} shards; node {id} runs {} (start it with --shards {})",
            placement.shards(),
            asked.shards(),
            placement.shards()
        )));
    }
    let ports_fit = |base: u16| u32::from(base) + placement.shards() <= 65_536 && base != 0;
    if !ports_fit(asked.base_port()) || !ports_fit(asked.peer_port()) {
        return Err(invalid(
            "its client and peer ports (one per shard) must fit",
        ));
    }
    let node = PeerAddress {
        node_id: id,
        host: host.to_string(),
        base_port: asked.base_port(),
        peer_port: asked.peer_port(),
        // A join naming no rack keeps the one recorded (`keel node add ...@rack`).
        rack: rack
            .map(str::to_string)
            .or_else(|| recorded.and_then(|r| r.rack)),
    };
    if let Some(other) = overlapping_node(&placement, &node) {
        return Err(invalid(format!(
            "node {id}'s ports on {host} overlap node {other}'s (each shard takes a port)"
        )));
    }
    Ok(node)
}

/// The data groups (every group but the controller's) `node` holds a replica of.
fn data_groups_held(placement: &crate::controller::Placement, node: u64) -> Vec<u32> {
    placement
        .group_ids()
        .into_iter()
        .filter(|&g| g != CONTROLLER_GROUP && placement.members(g).contains(&node))
        .map(|g| g.0)
        .collect()
}

/// Another node on the same host whose client or peer port range overlaps `node`'s.
fn overlapping_node(placement: &crate::controller::Placement, node: &PeerAddress) -> Option<u64> {
    let shards = placement.shards();
    let ranges = |p: &PeerAddress| {
        [u32::from(p.base_port), u32::from(p.peer_port)].map(|start| start..start + shards)
    };
    let mine = ranges(node);
    placement.node_ids().into_iter().find(|&other| {
        let Some(address) = placement.address_of(other) else {
            return false;
        };
        other != u64::from(node.node_id)
            && address.host == node.host
            && ranges(address).iter().any(|theirs| {
                mine.iter()
                    .any(|r| r.start < theirs.end && theirs.start < r.end)
            })
    })
}

/// What the node needs to start: the bootstrap nodes, shards, replication factor and
/// the controller's configuration with it as a learner.
fn join_answer(core: &ShardCore, correlation_id: u64) -> AnswerFrame {
    let membership = core.membership_view().membership;
    let mut builder = FlatBufferBuilder::with_capacity(512);
    let peers = builder.create_string(&format_peers(&core.config.peers));
    let voters = builder.create_vector(&membership.voters);
    let learners = builder.create_vector(&membership.learners);
    let body = wire::JoinClusterResponse::create(
        &mut builder,
        &wire::JoinClusterResponseArgs {
            peers: Some(peers),
            replication_factor: core.config.replication_factor,
            shards: core.config.shards,
            voters: Some(voters),
            learners: Some(learners),
            index: membership.index,
        },
    );
    finish_response(
        builder,
        correlation_id,
        ResponseBody::JoinClusterResponse,
        Some(body.as_union_value()),
        None,
    )
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::InvalidRequest, message)
}
