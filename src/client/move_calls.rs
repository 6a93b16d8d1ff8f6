//! The calls a replica move is made of: a group's membership, asked of (or changed at)
//! its leader, and the move's steps recorded by the controller's leader.
//!
//! Owns the requests' encoding and their answers' decoding; never decides which step
//! comes next (`client::mover` does).

pub use crate::broker::replica_moves::NodeService;
use crate::client::cluster::check_response;
use crate::client::mover::ReplicaMovePlan;
use crate::client::{ClientError, ClusterClient};
use crate::protocol::codec::{decode_response, encode_request};
use crate::protocol::wire::{self, MembershipAction, MoveAction};

/// A group's configuration as its leader applied it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupMembership {
    /// The group.
    pub group: u32,
    /// Its voters (the incoming ones in a joint configuration).
    pub voters: Vec<u64>,
    /// The outgoing voters of a joint configuration (else empty).
    pub outgoing: Vec<u64>,
    /// Its learners.
    pub learners: Vec<u64>,
    /// The index the configuration is as of.
    pub index: u64,
    /// Learners the leader counts as caught up.
    pub caught_up: Vec<u64>,
    /// Each learner's matched index as the leader sees it, in the order of `learners`
    /// (empty from a replica that does not lead).
    pub learner_matched: Vec<u64>,
    /// The leader's last log index (0 from a replica that does not lead, or a broker
    /// too old to say).
    pub last_index: u64,
    /// No change proposed before can take effect any more (the leader applied an entry
    /// of its own term and has none pending).
    pub settled: bool,
}

impl GroupMembership {
    /// Whether a joint configuration is in force.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// How far learner `node`'s log matches the leader's, when the answer says.
    pub fn learner_matched(&self, node: u64) -> Option<u64> {
        let at = self.learners.iter().position(|&n| n == node)?;
        self.learner_matched.get(at).copied()
    }

    /// Whether a roll-back that proposes nothing is final: no change proposed before
    /// can take effect any more. A broker too old to say (no last index) is taken at
    /// its word, as before.
    pub fn changes_settled(&self) -> bool {
        self.settled || self.last_index == 0
    }

    /// Whether `node` holds a replica (voter of either side, or learner).
    pub fn contains(&self, node: u64) -> bool {
        self.voters.contains(&node)
            || self.outgoing.contains(&node)
            || self.learners.contains(&node)
    }
}

/// What changes the placement, as the controller recorded it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacementChanges {
    /// Moves under way: (group, from, to, to's shard).
    pub moves: Vec<(u32, u64, u64, u32)>,
    /// Nodes draining.
    pub draining: Vec<u64>,
    /// Nodes removed.
    pub removed: Vec<u64>,
}

/// A membership change to ask of a group's leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipCall {
    /// Describe it only.
    Query,
    /// Add `node` as a learner.
    AddLearner(u64),
    /// Promote learners and demote voters together (a joint configuration).
    EnterJoint {
        /// Learners that become voters.
        promote: Vec<u64>,
        /// Voters that become learners.
        demote: Vec<u64>,
    },
    /// Leave the joint configuration.
    LeaveJoint,
    /// Remove `node`, a learner.
    RemoveLearner(u64),
}

/// A change a rebalance or drain plan asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlannedChange {
    /// Move a replica.
    Replica(ReplicaMovePlan),
    /// Make `to` the group's preferred leader instead of `from`.
    Leader {
        /// The group.
        group: u32,
        /// Its preferred leader now.
        from: u64,
        /// Its preferred leader then.
        to: u64,
    },
}

/// A move's step for the controller to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveRecord {
    /// The learner was added: it starts on `to` (shard `to_shard`, or the controller's
    /// choice when `None`) with `join`, the configuration that added it.
    Start {
        /// The node giving its replica up.
        from: u64,
        /// The node taking it.
        to: u64,
        /// Its shard there (`None`: the least loaded).
        to_shard: Option<u32>,
        /// The configuration once the learner was added.
        join: GroupMembership,
    },
    /// The old replica left the group.
    Finish {
        /// The node that gave its replica up.
        from: u64,
        /// The node that took it.
        to: u64,
    },
    /// The learner was removed again.
    Abandon {
        /// The node that was giving its replica up.
        from: u64,
        /// The node whose learner left.
        to: u64,
    },
    /// `to` is the group's preferred leader from now on.
    Leader {
        /// The node.
        to: u64,
    },
}

impl ClusterClient {
    /// Asks `group`'s leader for its configuration, or to change it first (answered once
    /// the change is applied). Found by following the nodes' redirects.
    pub fn membership(
        &mut self,
        group: u32,
        call: &MembershipCall,
    ) -> Result<GroupMembership, ClientError> {
        let (action, node, promote, demote) = match call {
            MembershipCall::Query => (MembershipAction::Query, 0, &[][..], &[][..]),
            MembershipCall::AddLearner(node) => {
                (MembershipAction::AddLearner, *node, &[][..], &[][..])
            }
            MembershipCall::EnterJoint { promote, demote } => (
                MembershipAction::EnterJoint,
                0,
                promote.as_slice(),
                demote.as_slice(),
            ),
            MembershipCall::LeaveJoint => (MembershipAction::LeaveJoint, 0, &[][..], &[][..]),
            MembershipCall::RemoveLearner(node) => {
                (MembershipAction::RemoveLearner, *node, &[][..], &[][..])
            }
        };
        let answer = self.call_cluster(None, |id| {
            let mut builder = flatbuffers::FlatBufferBuilder::new();
            let promote = builder.create_vector(promote);
            let demote = builder.create_vector(demote);
            let body = wire::ChangeMembershipRequest::create(
                &mut builder,
                &wire::ChangeMembershipRequestArgs {
                    group,
                    action,
                    node,
                    promote: Some(promote),
                    demote: Some(demote),
                },
            );
            encode_request(
                &mut builder,
                id,
                wire::RequestBody::ChangeMembershipRequest,
                body.as_union_value(),
            )
        })?;
        let response = decode_response(&answer)?;
        check_response(&response)?;
        let body = response
            .body_as_change_membership_response()
            .ok_or_else(|| ClientError::Unexpected("not a membership answer".into()))?;
        let list = |v: Option<flatbuffers::Vector<'_, u64>>| v.iter().flatten().collect();
        Ok(GroupMembership {
            group: body.group(),
            voters: list(body.voters()),
            outgoing: list(body.outgoing()),
            learners: list(body.learners()),
            index: body.index(),
            caught_up: list(body.caught_up()),
            learner_matched: list(body.learner_matched()),
            last_index: body.last_index(),
            settled: body.settled(),
        })
    }

    /// Asks the controller's leader to record a step of moving a replica of `group`.
    /// Answers whether it took effect and (a start) the new replica's shard.
    pub fn record_move(
        &mut self,
        group: u32,
        record: &MoveRecord,
    ) -> Result<(bool, u32), ClientError> {
        self.with_retries(|client| client.record_move_once(group, record))
    }

    /// Asks the controller's leader which replica moves would take every replica off
    /// `drain` and even out the rest (at most `max_moves`; 0: the broker's bound); once
    /// no replica is left to move, which leaderships would even out the leaders.
    pub fn plan_moves(
        &mut self,
        drain: &[u64],
        max_moves: u32,
    ) -> Result<Vec<PlannedChange>, ClientError> {
        self.with_retries(|client| {
            let controller = client.controller()?;
            let answer = client.call_cluster(Some(controller), |id| {
                let mut builder = flatbuffers::FlatBufferBuilder::new();
                let drain = builder.create_vector(drain);
                let body = wire::PlanMovesRequest::create(
                    &mut builder,
                    &wire::PlanMovesRequestArgs {
                        drain: Some(drain),
                        max_moves,
                    },
                );
                encode_request(
                    &mut builder,
                    id,
                    wire::RequestBody::PlanMovesRequest,
                    body.as_union_value(),
                )
            })?;
            let response = decode_response(&answer)?;
            check_response(&response)?;
            let body = response
                .body_as_plan_moves_response()
                .ok_or_else(|| ClientError::Unexpected("not a plan answer".into()))?;
            Ok(body
                .moves()
                .iter()
                .flatten()
                .map(|planned| match planned.leader() {
                    true => PlannedChange::Leader {
                        group: planned.group(),
                        from: planned.from_node(),
                        to: planned.to_node(),
                    },
                    false => PlannedChange::Replica(ReplicaMovePlan {
                        group: planned.group(),
                        from: planned.from_node(),
                        to: planned.to_node(),
                        to_shard: Some(planned.to_shard()),
                    }),
                })
                .collect())
        })
    }

    /// Records node `node`'s service state at the controller; whether it changed.
    pub fn set_node_state(&mut self, node: u64, state: NodeService) -> Result<bool, ClientError> {
        let state = match state {
            NodeService::Active => wire::NodeService::Active,
            NodeService::Draining => wire::NodeService::Draining,
            NodeService::Removed => wire::NodeService::Removed,
        };
        self.with_retries(|client| {
            let controller = client.controller()?;
            let answer = client.call_cluster(Some(controller), |id| {
                let mut builder = flatbuffers::FlatBufferBuilder::new();
                let body = wire::SetNodeStateRequest::create(
                    &mut builder,
                    &wire::SetNodeStateRequestArgs { node, state },
                );
                encode_request(
                    &mut builder,
                    id,
                    wire::RequestBody::SetNodeStateRequest,
                    body.as_union_value(),
                )
            })?;
            let response = decode_response(&answer)?;
            check_response(&response)?;
            let body = response
                .body_as_set_node_state_response()
                .ok_or_else(|| ClientError::Unexpected("not a node state answer".into()))?;
            Ok(body.applied())
        })
    }

    /// The replica moves under way and the nodes not active, as the first node that
    /// answers knows them.
    pub fn placement_changes(&mut self) -> Result<PlacementChanges, ClientError> {
        let answer = self.call_cluster(None, |id| {
            let mut builder = flatbuffers::FlatBufferBuilder::new();
            let body = wire::StatusRequest::create(&mut builder, &wire::StatusRequestArgs {});
            encode_request(
                &mut builder,
                id,
                wire::RequestBody::StatusRequest,
                body.as_union_value(),
            )
        })?;
        let response = decode_response(&answer)?;
        check_response(&response)?;
        let body = response
            .body_as_status_response()
            .ok_or_else(|| ClientError::Unexpected("not a status answer".into()))?;
        let list = |v: Option<flatbuffers::Vector<'_, u64>>| v.iter().flatten().collect();
        Ok(PlacementChanges {
            moves: body
                .moves()
                .iter()
                .flatten()
                .map(|m| (m.group(), m.from_node(), m.to_node(), m.to_shard()))
                .collect(),
            draining: list(body.draining()),
            removed: list(body.removed()),
        })
    }

    /// The replica moves under way, as the first node that answers knows them: (group,
    /// from, to, to's shard).
    pub fn moves_under_way(&mut self) -> Result<Vec<(u32, u64, u64, u32)>, ClientError> {
        Ok(self.placement_changes()?.moves)
    }

    fn record_move_once(
        &mut self,
        group: u32,
        record: &MoveRecord,
    ) -> Result<(bool, u32), ClientError> {
        let controller = self.controller()?;
        let answer = self.call_cluster(Some(controller), |id| {
            let mut builder = flatbuffers::FlatBufferBuilder::new();
            let mut args = wire::MoveReplicaRequestArgs {
                group,
                ..Default::default()
            };
            match record {
                MoveRecord::Start {
                    from,
                    to,
                    to_shard,
                    join,
                } => {
                    args.action = MoveAction::Start;
                    args.from_node = *from;
                    args.to_node = *to;
                    args.to_shard = to_shard.unwrap_or(u32::MAX);
                    args.voters = Some(builder.create_vector(&join.voters));
                    args.learners = Some(builder.create_vector(&join.learners));
                    args.config_index = join.index;
                }
                MoveRecord::Finish { from, to } => {
                    args.action = MoveAction::Finish;
                    (args.from_node, args.to_node) = (*from, *to);
                }
                MoveRecord::Abandon { from, to } => {
                    args.action = MoveAction::Abandon;
                    (args.from_node, args.to_node) = (*from, *to);
                }
                MoveRecord::Leader { to } => {
                    args.action = MoveAction::Leader;
                    args.to_node = *to;
                }
            }
            let body = wire::MoveReplicaRequest::create(&mut builder, &args);
            encode_request(
                &mut builder,
                id,
                wire::RequestBody::MoveReplicaRequest,
                body.as_union_value(),
            )
        })?;
        let response = decode_response(&answer)?;
        check_response(&response)?;
        let body = response
            .body_as_move_replica_response()
            .ok_or_else(|| ClientError::Unexpected("not a move answer".into()))?;
        Ok((body.applied(), body.to_shard()))
    }
}
