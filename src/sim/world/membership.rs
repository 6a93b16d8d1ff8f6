//! Membership-change seeds (`Profile::moves`): replicas move between nodes while the
//! faults go on. Spare nodes wait outside the group; the mover (the controller's part,
//! whose memory survives any crash, as the controller's log does) moves one replica at a
//! time: the spare joins as a learner, is promoted when current while the replica it
//! replaces is demoted (a joint configuration), the joint configuration is left and the
//! old replica removed; the mover then stops that node for good (a replica id is never
//! used twice in a group).
//! A learner that does not catch up in time is removed again (the move rolls back).
//! A third of the moves are vote moves, as the controller group's are (every node holds
//! a controller replica): the demoted voter stays a learner for good, and a later vote
//! move may promote such a learner back instead of a spare (then a roll-back leaves it a
//! learner).
//!
//! Every step is decided from the configuration the group has applied (the newest one
//! any replica holds), so a step whose answer was lost (its leader crashed) is seen done
//! or proposed again: a move interrupted anywhere resumes. Once faults stop, the move
//! under way finishes and no new one starts.
//!
//! Checks, as configurations are applied (S11): every replica that applies a change at
//! an index has the same configuration there; voters change only by joint consensus
//! (a simple change keeps the voters; a joint one's outgoing voters are the previous
//! voters; leaving keeps the incoming ones); a group never has fewer voters than it
//! started with. The end checks (P1 and the rest) run on the final members, so every
//! acknowledged batch must be on the replicas that joined.

use std::collections::BTreeMap;

use crate::broker::state::Applied;
use crate::replication::events::{Input, RequestId, ShardError};
use crate::replication::membership::{Membership, MembershipChange};
use crate::replication::prng::Prng;
use crate::replication::LogStore;
use crate::sim::profile::Profile;
use crate::sim::workload::Purpose;
use crate::sim::world::{Event, World};

/// PRNG domain of the mover.
const MOVER_DOMAIN: u64 = 52;

/// Nodes outside the group at the start of a seed that moves replicas.
const SPARE_NODES: u64 = 2;

/// Time between the mover's steps, ns.
const MOVER_STEP_NS: u64 = 50_000_000;

/// A move starts at a step with this chance (1 in n) while faults run.
const MOVE_START_ONE_IN: u64 = 6;

/// A move is a vote move (the demoted voter stays a learner) with this chance (1 in n).
const VOTE_MOVE_ONE_IN: u64 = 3;

/// A learner not caught up this long after the move started is removed again, ns.
const CATCH_UP_BUDGET_NS: u64 = 3_000_000_000;

/// The catch-up budget of one move in `SHORT_BUDGET_ONE_IN`, ns: short enough that a
/// learner with a log to copy is often rolled back, so roll-backs meet the faults too.
const SHORT_CATCH_UP_BUDGET_NS: u64 = 150_000_000;

/// A move gets the short catch-up budget with this chance (1 in n).
const SHORT_BUDGET_ONE_IN: u64 = 4;

/// How long the mover waits for an answer before it decides again, ns.
const ANSWER_WAIT_NS: u64 = 1_000_000_000;

/// Which generator picks a node.
pub(crate) enum Pick {
    /// The producers'.
    Workload,
    /// The consumer group client's.
    GroupClient,
    /// The topic churner's.
    Churn,
}

/// Spare nodes of a profile.
pub(super) fn spare_nodes(profile: &Profile) -> u64 {
    if profile.moves {
        SPARE_NODES
    } else {
        0
    }
}

/// One replica on its way from `from` to `to`.
#[derive(Clone, Debug)]
pub struct MoveUnderWay {
    /// The node giving its replica up.
    pub from: u64,
    /// The node taking it.
    pub to: u64,
    /// When the move started, ns.
    pub started_at: u64,
    /// How long its learner may take to catch up, ns.
    pub catch_up_budget: u64,
    /// The learner is being removed again.
    pub rolling_back: bool,
    /// A vote move: `from` stays a learner once demoted.
    pub vote: bool,
    /// `to` was a learner kept by an earlier vote move (a roll-back leaves it one).
    pub to_kept: bool,
}

/// The mover of a seed that moves replicas.
pub struct Mover {
    rng: Prng,
    token: u64,
    /// The move under way.
    pub current: Option<MoveUnderWay>,
    /// The change proposed and not answered: (request, when).
    pending: Option<(RequestId, u64)>,
    /// Moves finished.
    pub done: u64,
    /// Moves rolled back.
    pub rolled_back: u64,
    /// Vote moves done.
    pub vote_moves: u64,
    /// Voters a vote move demoted: learners of the group for good (unless promoted back).
    pub kept: Vec<u64>,
    /// Per node, the configuration it applied last (S11).
    seen: BTreeMap<u64, Membership>,
    /// The configuration applied at each index (S11).
    by_index: BTreeMap<u64, Membership>,
}

impl Mover {
    /// The mover of `seed` (it acts only in seeds that move replicas).
    pub fn new(seed: u64) -> Mover {
        Mover {
            rng: Prng::derive(seed, MOVER_DOMAIN, 0),
            token: 0,
            current: None,
            pending: None,
            done: 0,
            rolled_back: 0,
            kept: Vec::new(),
            vote_moves: 0,
            seen: BTreeMap::new(),
            by_index: BTreeMap::new(),
        }
    }

    /// A node (re)started with the configuration it stored: its changes go on from it.
    pub fn started(&mut self, node: u64, membership: Membership) {
        self.seen.insert(node, membership);
    }
}

impl World {
    /// The nodes faults and clients pick among: started once and not retired (nodes
    /// 1..=n in seeds that move nothing).
    pub(crate) fn nodes_in_play(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.in_play)
            .map(|n| n.id)
            .collect()
    }

    /// A node in play, drawn from `pick`'s generator.
    pub(crate) fn pick_node(&mut self, pick: Pick) -> u64 {
        let ids = self.nodes_in_play();
        let rng = match pick {
            Pick::Workload => &mut self.workload.rng,
            Pick::GroupClient => &mut self.group_client.rng,
            Pick::Churn => &mut self.churn.rng,
        };
        ids.get(rng.range(0, ids.len() as u64) as usize)
            .copied()
            .unwrap_or(1)
    }

    /// The configuration the group has applied: the newest any replica holds.
    pub fn group_membership(&self) -> Option<Membership> {
        self.nodes
            .values()
            .filter_map(|n| n.replica.as_ref().map(|r| r.membership()))
            .max_by_key(|m| m.index)
            .cloned()
    }

    /// Whether `node` belongs to the group now (every node, in seeds that move nothing).
    pub fn is_member(&self, node: u64) -> bool {
        if !self.profile.moves {
            return true;
        }
        self.group_membership().is_some_and(|m| m.contains(node))
    }

    /// Whether no move is under way (the liveness phase waits for the last one).
    pub fn mover_settled(&self) -> bool {
        self.mover.current.is_none()
    }

    /// Wakes the mover at `at` (replacing any earlier wake-up).
    pub(super) fn wake_mover(&mut self, at: u64) {
        self.mover.token += 1;
        let token = self.mover.token;
        self.schedule(at, Event::Mover { token });
    }

    pub(super) fn mover_wakes(&mut self, token: u64) {
        if token != self.mover.token {
            return;
        }
        self.wake_mover(self.now + MOVER_STEP_NS);
        if self
            .mover
            .pending
            .is_some_and(|(_, at)| self.now < at + ANSWER_WAIT_NS)
        {
            return;
        }
        self.mover.pending = None;
        let Some(membership) = self.group_membership() else {
            return;
        };
        if self.mover.current.is_none() {
            self.adopt_stale_joint(&membership);
        }
        if self.mover.current.is_none() {
            self.maybe_start_move(&membership);
        }
        let Some(moving) = self.mover.current.clone() else {
            return;
        };
        let step = if moving.rolling_back {
            self.roll_back_step(&moving, &membership)
        } else {
            self.move_step(&moving, &membership)
        };
        if let Some(change) = step {
            self.propose_change(change);
        }
    }

    /// A joint configuration with no move under way: a vote move to a kept learner rolled
    /// back while its promotion, proposed before and unanswered, was still in a log; a
    /// later leader committed it. The mover finishes it as the vote move it was.
    fn adopt_stale_joint(&mut self, membership: &Membership) {
        if !membership.is_joint() {
            return;
        }
        let to = membership
            .voters
            .iter()
            .copied()
            .find(|v| !membership.outgoing.contains(v));
        let from = membership
            .outgoing
            .iter()
            .copied()
            .find(|v| !membership.voters.contains(v));
        let (Some(to), Some(from)) = (to, from) else {
            return;
        };
        self.trace.note(
            self.now,
            0,
            format!("a promotion of {to} committed after its move rolled back: the vote of {from} moves"),
        );
        self.mover.current = Some(MoveUnderWay {
            from,
            to,
            started_at: self.now,
            catch_up_budget: CATCH_UP_BUDGET_NS,
            rolling_back: false,
            vote: true,
            to_kept: true,
        });
    }

    /// Starts a move (faults running, the group settled in a simple configuration, its
    /// only learners those vote moves kept): a voter's replica to a spare node, or a
    /// vote to a spare or a kept learner.
    fn maybe_start_move(&mut self, membership: &Membership) {
        let only_kept = membership
            .learners
            .iter()
            .all(|l| self.mover.kept.contains(l));
        if !self.faults_on || membership.is_joint() || !only_kept {
            return;
        }
        if !self.mover.rng.chance(1, MOVE_START_ONE_IN) {
            return;
        }
        let vote = self.mover.rng.chance(1, VOTE_MOVE_ONE_IN);
        let kept: Vec<u64> = membership.learners.clone();
        let spares: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| !n.in_play && n.incarnation == 0 && !membership.contains(n.id))
            .map(|n| n.id)
            .collect();
        let to_kept =
            vote && !kept.is_empty() && (spares.is_empty() || self.mover.rng.chance(1, 2));
        let pool = if to_kept { &kept } else { &spares };
        if pool.is_empty() {
            return;
        }
        let to = pool[self.mover.rng.range(0, pool.len() as u64) as usize];
        let voters = &membership.voters;
        let from = voters[self.mover.rng.range(0, voters.len() as u64) as usize];
        let catch_up_budget = if self.mover.rng.chance(1, SHORT_BUDGET_ONE_IN) {
            SHORT_CATCH_UP_BUDGET_NS
        } else {
            CATCH_UP_BUDGET_NS
        };
        let what = if vote { "vote" } else { "replica" };
        self.trace.note(
            self.now,
            0,
            format!("move of {from}'s {what} to {to} starts ({catch_up_budget} ns to catch up)"),
        );
        self.mover.current = Some(MoveUnderWay {
            from,
            to,
            started_at: self.now,
            catch_up_budget,
            rolling_back: false,
            vote,
            to_kept,
        });
    }

    /// The next change of a move, from the configuration applied.
    fn move_step(
        &mut self,
        moving: &MoveUnderWay,
        membership: &Membership,
    ) -> Option<MembershipChange> {
        let (from, to) = (moving.from, moving.to);
        if membership.is_joint() {
            return Some(MembershipChange::LeaveJoint);
        }
        if !membership.contains(to) {
            return Some(MembershipChange::AddLearner { node: to });
        }
        if membership.learners.contains(&to) {
            self.join_if_needed(to, membership);
            if self.leader_sees_current(to) {
                let (promote, demote) = (vec![to], vec![from]);
                return Some(MembershipChange::EnterJoint { promote, demote });
            }
            if self.now > moving.started_at + moving.catch_up_budget {
                self.trace
                    .note(self.now, 0, format!("move to {to} rolls back"));
                if let Some(current) = self.mover.current.as_mut() {
                    current.rolling_back = true;
                }
            }
            return None;
        }
        if membership.voters.contains(&to) && membership.voters.contains(&from) {
            // `to` votes beside `from` outside a joint configuration: an earlier vote
            // move's promotion of `to` (a kept learner), proposed before that move rolled
            // back and committed by a later leader, demoted another voter. The vote this
            // move was to give `to` is given; nothing is left to change.
            self.trace.note(
                self.now,
                0,
                format!("move of {from}'s vote to {to} overtaken: {to} votes already"),
            );
            self.mover.current = None;
            self.mover.rolled_back += 1;
            self.mover.kept = membership.learners.clone();
            return None;
        }
        if membership.learners.contains(&from) && moving.vote {
            self.trace
                .note(self.now, 0, format!("vote of {from} moved to {to}"));
            self.mover.current = None;
            self.mover.done += 1;
            self.mover.vote_moves += 1;
            self.mover.kept.retain(|&k| k != to);
            self.mover.kept.push(from);
            return None;
        }
        if membership.learners.contains(&from) {
            return Some(MembershipChange::RemoveLearner { node: from });
        }
        if !membership.contains(from) {
            self.trace.note(
                self.now,
                0,
                format!("move of {from}'s replica to {to} done"),
            );
            self.mover.current = None;
            self.mover.done += 1;
            self.retire(from);
        }
        None
    }

    /// The next change of a move rolling back (its learner leaves again). A promotion
    /// proposed before the roll-back was decided (its answer lost) may commit after it:
    /// then the move goes on instead.
    fn roll_back_step(
        &mut self,
        moving: &MoveUnderWay,
        membership: &Membership,
    ) -> Option<MembershipChange> {
        let to = moving.to;
        if membership.voters.contains(&to) || membership.outgoing.contains(&to) {
            self.trace
                .note(self.now, 0, format!("move to {to} promoted: it goes on"));
            if let Some(current) = self.mover.current.as_mut() {
                current.rolling_back = false;
            }
            return self.move_step(
                &MoveUnderWay {
                    rolling_back: false,
                    ..moving.clone()
                },
                membership,
            );
        }
        if membership.learners.contains(&to) && !moving.to_kept {
            return Some(MembershipChange::RemoveLearner { node: to });
        }
        self.trace
            .note(self.now, 0, format!("move to {to} rolled back"));
        self.mover.current = None;
        self.mover.rolled_back += 1;
        if !moving.to_kept {
            self.retire(to);
        }
        None
    }

    /// Starts the learner's replica, with the configuration of the change that added it
    /// written to its empty disk first.
    fn join_if_needed(&mut self, to: u64, membership: &Membership) {
        let Some(node) = self.nodes.get(&to) else {
            return;
        };
        if node.in_play {
            return;
        }
        let record = membership.to_record();
        let mut store = node.store.clone();
        store
            .set_conf_state(record)
            .expect("an empty log takes a configuration");
        store.log.borrow_mut().begin_flush();
        if let Err(failure) = store.log.borrow_mut().complete_flush(None) {
            return self.fail("P7", format!("node {to} cannot join: {failure}"));
        }
        self.trace
            .note(self.now, to, "joins as a learner".to_string());
        self.start_node(to);
    }

    /// Whether the group's leader counts `node` as current.
    fn leader_sees_current(&self, node: u64) -> bool {
        self.nodes.values().any(|n| {
            n.up && n
                .replica
                .as_ref()
                .is_some_and(|r| r.is_leader() && r.is_caught_up(node))
        })
    }

    /// Proposes `change` at the leader of the newest term.
    fn propose_change(&mut self, change: MembershipChange) {
        let leader = self
            .nodes
            .values()
            .filter(|n| n.up && !n.paused)
            .filter_map(|n| {
                n.replica
                    .as_ref()
                    .filter(|r| r.is_leader())
                    .map(|r| (r.term(), n.id))
            })
            .max();
        let Some((_, leader)) = leader else {
            return;
        };
        let request = self.workload.request(Purpose::Membership);
        self.mover.pending = Some((request, self.now));
        self.trace
            .note(self.now, leader, format!("membership change {change:?}"));
        self.feed(leader, Input::ChangeMembership { request, change });
    }

    /// A change's answer: the next step is decided at the next wake-up, from what the
    /// group applied (a refusal is only logged).
    pub(super) fn membership_answer(
        &mut self,
        request: RequestId,
        outcome: Result<Applied, ShardError>,
    ) {
        if self.mover.pending.is_some_and(|(r, _)| r == request) {
            self.mover.pending = None;
        }
        if let Err(error) = outcome {
            self.trace
                .note(self.now, 0, format!("membership change refused: {error}"));
        }
    }

    /// A node whose replica left the group (the move is done: the controller says so,
    /// never the replica) stops for good. It never joins the group again (replica ids are
    /// not reused: `replication::membership`); its disk stays as it was, so S3 still sees
    /// what it held when a leader of an old configuration counts its acknowledgements.
    fn retire(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        node.up = false;
        node.paused = false;
        node.in_play = false;
        node.incarnation += 1;
        node.replica = None;
        node.held.clear();
        node.gathered.clear();
        node.fail_next_flush = None;
        node.space_low_until = None;
        self.mover.seen.remove(&id);
        self.trace.note(self.now, id, "retired".to_string());
        self.connections_closed_by(id);
    }

    /// S11, as a replica applies a configuration.
    pub(super) fn membership_changed(
        &mut self,
        id: u64,
        membership: Membership,
        from_snapshot: bool,
    ) {
        self.trace
            .note(self.now, id, format!("configuration {membership:?}"));
        if let Some(other) = self.mover.by_index.get(&membership.index) {
            if !same_members(other, &membership) {
                let detail = format!(
                    "node {id} applied {membership:?} at index {}; another replica applied \
                     {other:?} there",
                    membership.index
                );
                return self.fail("S11", detail);
            }
        } else {
            self.mover
                .by_index
                .insert(membership.index, membership.clone());
        }
        let previous = self.mover.seen.insert(id, membership.clone());
        if let Some(problem) = previous
            .filter(|_| !from_snapshot)
            .and_then(|before| bad_transition(&before, &membership))
        {
            return self.fail("S11", format!("node {id}: {problem}"));
        }
        let replication_factor = self.profile.nodes as usize;
        if !membership.is_joint() && membership.voters.len() < replication_factor {
            let detail = format!(
                "node {id} applied {membership:?}: fewer than the {replication_factor} voters \
                 the group started with"
            );
            self.fail("S11", detail);
        }
    }
}

fn same_members(a: &Membership, b: &Membership) -> bool {
    (&a.voters, &a.outgoing, &a.learners) == (&b.voters, &b.outgoing, &b.learners)
}

/// What is wrong with going from `before` to `after` by one committed change, if
/// anything: voters change only by entering and leaving a joint configuration.
fn bad_transition(before: &Membership, after: &Membership) -> Option<String> {
    if after.index <= before.index {
        return Some(format!(
            "configuration index went from {} to {}",
            before.index, after.index
        ));
    }
    let ok = match (before.is_joint(), after.is_joint()) {
        (false, false) => before.voters == after.voters,
        (false, true) => after.outgoing == before.voters,
        (true, false) => after.voters == before.voters,
        (true, true) => false,
    };
    (!ok).then(|| format!("{before:?} became {after:?} in one change, outside joint consensus"))
}
