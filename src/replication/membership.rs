//! Membership changes of a replica group, by joint consensus (raft-rs `ConfChangeV2`).
//!
//! A replica moves in four changes, each one committed entry:
//!
//! ```text
//! {1,2,3}            AddLearner 4          ─▶ voters {1,2,3}, learner 4 (gets the log)
//! (4 caught up)      EnterJoint +4 −3      ─▶ joint: incoming {1,2,4} and outgoing {1,2,3}
//!                    LeaveJoint            ─▶ voters {1,2,4}, learner 3
//!                    RemoveLearner 3       ─▶ voters {1,2,4}
//! ```
//!
//! Owns: checking a change before raft-rs takes it (the leader's applied configuration,
//! no other change pending, the leader stays a voter: a leader the change would remove
//! hands its leadership to a current incoming voter first and answers `NotLeader`), and
//! applying committed changes exactly once. A configuration carries the index it is as
//! of (`ConfStateRecord::index`): a replayed change at or below it is already reflected
//! (a restart replays committed entries from the compaction point; a learner created at
//! the change that added it receives the earlier ones too). Never decides which moves
//! to make: the controller does.
//!
//! A learner is promoted only once it holds the log up to the change that added it.
//!
//! A replica id (the node id today) is never used again in a group once its replica was
//! removed: a leader of an old configuration, cut off meanwhile, still counts that id's
//! votes and acknowledgements, and a new replica under the same id, its log empty, would
//! answer for the old one (the simulator found a stale voter elected by such a vote, and
//! a committed index replaced: S2). Ids that carry a generation will let a node return to
//! a group; until then, a node never holds a replica of a group twice.

use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry, EntryType,
};
use raft::Changer;

use crate::broker::state::Applied;
use crate::constants::MAX_CONF_MEMBERS;
use crate::log::raft_storage::from_conf_state;
use crate::log::ConfStateRecord;
use crate::replication::events::{Effect, RequestId, ShardError};
use crate::replication::log_store::LogStore;
use crate::replication::replica::{Replica, Waiter, CURRENT_FOLLOWER_LAG};

/// One step of a membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// `node` joins as a learner: it receives the log and does not vote.
    AddLearner {
        /// The node.
        node: u64,
    },
    /// A joint configuration: learners in `promote` become voters, voters in `demote`
    /// become learners; decisions need a majority of both the old and the new voters.
    EnterJoint {
        /// Learners that become voters.
        promote: Vec<u64>,
        /// Voters that become learners.
        demote: Vec<u64>,
    },
    /// Leave the joint configuration: the new voters alone decide.
    LeaveJoint,
    /// `node`, a learner, leaves the group.
    RemoveLearner {
        /// The node.
        node: u64,
    },
}

impl MembershipChange {
    /// raft-rs's form: an explicit joint change is left by its own entry.
    pub fn to_conf_change(&self) -> ConfChangeV2 {
        let single = |change_type, node_id| ConfChangeSingle {
            change_type,
            node_id,
            ..Default::default()
        };
        let mut change = ConfChangeV2::default();
        match self {
            MembershipChange::AddLearner { node } => {
                change.changes = vec![single(ConfChangeType::AddLearnerNode, *node)].into();
            }
            MembershipChange::EnterJoint { promote, demote } => {
                change.set_transition(ConfChangeTransition::Explicit);
                let promoted = promote.iter().map(|&n| single(ConfChangeType::AddNode, n));
                let demoted = demote
                    .iter()
                    .map(|&n| single(ConfChangeType::AddLearnerNode, n));
                change.changes = promoted.chain(demoted).collect::<Vec<_>>().into();
            }
            MembershipChange::LeaveJoint => {}
            MembershipChange::RemoveLearner { node } => {
                change.changes = vec![single(ConfChangeType::RemoveNode, *node)].into();
            }
        }
        change
    }
}

/// A group's configuration as a replica has applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Voters (the incoming ones during a joint configuration), sorted.
    pub voters: Vec<u64>,
    /// Voters of the outgoing configuration (empty outside a joint one), sorted.
    pub outgoing: Vec<u64>,
    /// Learners, sorted (and those that become learners when the joint one is left).
    pub learners: Vec<u64>,
    /// The index the configuration is as of.
    pub index: u64,
}

impl Membership {
    /// From the stored form.
    pub fn of_record(record: &ConfStateRecord) -> Membership {
        let sorted = |list: &[u64]| {
            let mut list = list.to_vec();
            list.sort_unstable();
            list.dedup();
            list
        };
        let mut learners = record.learners.clone();
        learners.extend(&record.learners_next);
        Membership {
            voters: sorted(&record.voters),
            outgoing: sorted(&record.voters_outgoing),
            learners: sorted(&learners),
            index: record.index,
        }
    }

    /// The stored form: what a replica that joins starts with (its learners are plain
    /// learners: a replica joins outside a joint configuration).
    pub fn to_record(&self) -> ConfStateRecord {
        ConfStateRecord {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            voters_outgoing: self.outgoing.clone(),
            index: self.index,
            ..Default::default()
        }
    }

    /// Whether a joint configuration is in force.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// How many nodes hold a replica (voters of either side, and learners).
    pub fn member_count(&self) -> usize {
        let mut members: Vec<u64> = self
            .voters
            .iter()
            .chain(&self.outgoing)
            .chain(&self.learners)
            .copied()
            .collect();
        members.sort_unstable();
        members.dedup();
        members.len()
    }

    /// Whether `node` takes part (voter of either side, or learner).
    pub fn contains(&self, node: u64) -> bool {
        self.voters.contains(&node)
            || self.outgoing.contains(&node)
            || self.learners.contains(&node)
    }
}

impl<S: LogStore> Replica<S> {
    /// Proposes a membership change (leader only); answered once it is applied, with
    /// `Applied::MembershipChanged`.
    pub(crate) fn on_change_membership(
        &mut self,
        request: RequestId,
        change: MembershipChange,
        effects: &mut Vec<Effect>,
    ) {
        let outcome = self.check_membership_change(&change).and_then(|()| {
            let before = self.raw.raft.raft_log.last_index();
            self.raw
                .propose_conf_change(Vec::new(), change.to_conf_change())
                .map_err(|error| ShardError::MembershipRefused(error.to_string()))?;
            let index = self.raw.raft.raft_log.last_index();
            assert_eq!(index, before + 1, "a membership change is one entry");
            Ok(index)
        });
        match outcome {
            Ok(index) => {
                let term = self.raw.raft.term;
                let previous = self.waiters.insert(index, Waiter { term, request });
                assert!(previous.is_none(), "one waiter per index (A7): {index}");
                tracing::info!(
                    group = self.config.group_id,
                    index,
                    ?change,
                    "membership change proposed"
                );
            }
            Err(refusal) => effects.push(Effect::Answer {
                request,
                outcome: Err(refusal),
            }),
        }
    }

    /// Whether `change` may be proposed now; a change that would remove this leader
    /// starts a transfer to a current incoming voter and is refused `NotLeader`.
    fn check_membership_change(&mut self, change: &MembershipChange) -> Result<(), ShardError> {
        self.admit_proposals(0, 1)?;
        if self.raw.raft.has_pending_conf() {
            return Err(ShardError::MembershipPending);
        }
        check_against(&self.membership, change).map_err(refused)?;
        if let MembershipChange::EnterJoint { promote, .. } = change {
            if promote.iter().any(|&node| !self.is_caught_up(node)) {
                return Err(refused("a learner to promote has not caught up yet"));
            }
        }
        let conf_change = change.to_conf_change();
        let mut changer = Changer::new(self.raw.raft.prs());
        let result = if conf_change.leave_joint() {
            changer.leave_joint()
        } else if let Some(auto_leave) = conf_change.enter_joint() {
            changer.enter_joint(auto_leave, &conf_change.changes)
        } else {
            changer.simple(&conf_change.changes)
        };
        let (next, _) = result.map_err(|error| refused(&error.to_string()))?;
        let me = self.config.replica_id;
        let incoming = next.to_conf_state().voters;
        if !incoming.contains(&me) {
            // A voter now and after: raft-rs ignores a transfer to a learner (the one being
            // promoted is still one).
            let voters_now = &self.membership.voters;
            let target = incoming
                .into_iter()
                .filter(|&id| id != me && voters_now.contains(&id) && self.follower_is_current(id))
                .max_by_key(|&id| self.raw.raft.prs().get(id).map_or(0, |p| p.matched));
            if let Some(target) = target {
                tracing::info!(
                    group = self.config.group_id,
                    target,
                    "handing leadership over before a change that removes this leader"
                );
                self.transfer_leadership(target);
            }
            return Err(ShardError::NotLeader);
        }
        Ok(())
    }

    /// Applies a committed configuration change (once: one at or below the stored
    /// configuration's index is already reflected).
    pub(crate) fn apply_conf_entry(&mut self, entry: &Entry, effects: &mut Vec<Effect>) -> Applied {
        let index = entry.index;
        self.state
            .apply(index, &[])
            .expect("an empty entry applies");
        if index <= self.membership.index {
            return Applied::MembershipChanged { index };
        }
        let conf_state = match entry.get_entry_type() {
            EntryType::EntryConfChangeV2 => {
                let change: ConfChangeV2 = decode_committed(entry);
                self.raw.apply_conf_change(&change)
            }
            _ => {
                let change: raft::eraftpb::ConfChange = decode_committed(entry);
                self.raw.apply_conf_change(&change)
            }
        }
        .unwrap_or_else(|error| {
            panic!(
                "committed membership change at {index} does not apply to the configuration \
                 it was checked against: {error}"
            )
        });
        if let Err(failure) = self
            .store
            .set_conf_state(from_conf_state(&conf_state, index))
        {
            self.fail(failure, effects);
        }
        self.refresh_membership(false, effects);
        tracing::info!(group = self.config.group_id, index, membership = ?self.membership, "membership changed");
        Applied::MembershipChanged { index }
    }

    /// Takes the store's configuration as the one in force (after a change is applied or
    /// a snapshot installed), and tells the driver.
    pub(crate) fn refresh_membership(&mut self, from_snapshot: bool, effects: &mut Vec<Effect>) {
        let membership = Membership::of_record(&self.store.conf_state());
        if membership == self.membership {
            return;
        }
        self.membership = membership;
        effects.push(Effect::MembershipChanged {
            membership: self.membership.clone(),
            from_snapshot,
        });
    }

    /// The configuration this replica has applied.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Whether the configuration this replica applied leaves it out.
    pub fn is_left_out(&self) -> bool {
        !self.membership.contains(self.config.replica_id)
    }

    /// Whether `node` is in this replica's configuration (a voter of either side, or a
    /// learner). A replica created by a membership change starts with the configuration
    /// of the change that added it, so it knows its leader.
    pub(crate) fn is_member(&self, node: u64) -> bool {
        self.membership.contains(node)
    }

    /// Whether no configuration change proposed before can still take effect (leader
    /// only): this leader applied an entry of its own term (any entry not in its log is
    /// dead) and has no change pending (one in its log, a stale one from an earlier
    /// term included, is applied). A roll-back that proposes nothing is final only then.
    pub fn changes_settled(&self) -> bool {
        self.is_leader()
            && self.raw.raft.apply_to_current_term()
            && !self.raw.raft.has_pending_conf()
    }

    /// Whether `node` holds the log past the configuration in force (the change that
    /// added a learner) and up to `CURRENT_FOLLOWER_LAG` entries of this leader's last
    /// one, and is not waiting for a snapshot (leader only). A learner that caught up while
    /// the group was idle stays in raft-rs's probe state: matched is what counts.
    pub fn is_caught_up(&self, node: u64) -> bool {
        if !self.is_leader() {
            return false;
        }
        let last_index = self.raw.raft.raft_log.last_index();
        self.raw.raft.prs().get(node).is_some_and(|p| {
            p.state != raft::ProgressState::Snapshot
                && p.matched >= self.membership.index
                && p.matched + CURRENT_FOLLOWER_LAG >= last_index
        })
    }
}

/// The change's own sense against the configuration in force: who may be promoted,
/// demoted, added or removed.
fn check_against(now: &Membership, change: &MembershipChange) -> Result<(), &'static str> {
    match change {
        MembershipChange::AddLearner { node } if now.contains(*node) => {
            Err("the node is already in the group")
        }
        MembershipChange::AddLearner { .. } if now.member_count() >= MAX_CONF_MEMBERS => Err(
            "the group has as many members as its stored configuration holds (MAX_CONF_MEMBERS)",
        ),
        MembershipChange::AddLearner { .. } | MembershipChange::LeaveJoint => Ok(()),
        MembershipChange::EnterJoint { promote, demote } => {
            if promote.iter().any(|n| !now.learners.contains(n)) {
                return Err("only learners are promoted");
            }
            if demote.iter().any(|n| !now.voters.contains(n)) {
                return Err("only voters are demoted");
            }
            if promote.is_empty() && demote.is_empty() {
                return Err("a joint change promotes or demotes someone");
            }
            let left = (now.voters.len() + promote.len()).saturating_sub(demote.len());
            if left == 0 {
                return Err("a group keeps at least one voter");
            }
            Ok(())
        }
        MembershipChange::RemoveLearner { node } => {
            if now.is_joint() {
                return Err("leave the joint configuration first");
            }
            if !now.learners.contains(node) {
                return Err("only a learner is removed (demote a voter first)");
            }
            Ok(())
        }
    }
}

fn refused(reason: &str) -> ShardError {
    ShardError::MembershipRefused(reason.to_string())
}

/// A committed change's payload: its crc32c passed, so one that does not decode is a
/// bug, never damage.
fn decode_committed<M: protobuf::Message>(entry: &Entry) -> M {
    let mut message = M::new();
    if let Err(error) = message.merge_from_bytes(&entry.data) {
        panic!(
            "committed membership change at {} does not decode: {error}",
            entry.index
        );
    }
    message
}
