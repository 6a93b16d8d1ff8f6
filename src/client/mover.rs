//! Moves one replica of a replica group from one node to another, by joint consensus,
//! while the group goes on serving:
//!
//! ```text
//! AddLearner to ─▶ record Start (to starts, catches up from the leader: snapshot + log)
//!   ─▶ EnterJoint +to −from ─▶ LeaveJoint ─▶ RemoveLearner from ─▶ record Finish
//!   (from stops and deletes its files)
//! a learner not caught up within the budget: RemoveLearner to ─▶ record Abandon
//! ```
//!
//! Every step is decided from the configuration the group's leader applied, and every
//! step the controller records is idempotent, so a move interrupted anywhere (its
//! leader, the controller's leader or this process killed) resumes when asked again: a
//! change whose answer was lost is seen done, or asked again. The group never has fewer
//! voters than it started with: the new replica votes before the old one stops.
//!
//! Owns the order of the steps; never changes a configuration itself (the group's leader
//! checks and applies each change, `replication::membership`).

use std::time::{Duration, Instant};

use crate::client::move_calls::{GroupMembership, MembershipCall, MoveRecord};
use crate::client::{ClientError, ClusterClient};
use crate::controller::CONTROLLER_GROUP;

/// How often the mover looks at the group again while its learner catches up.
const MOVER_POLL: Duration = Duration::from_millis(200);

/// One replica to move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaMovePlan {
    /// The replica group.
    pub group: u32,
    /// The node giving its replica up.
    pub from: u64,
    /// The node taking it.
    pub to: u64,
    /// Its shard there (`None`: the controller picks the least loaded).
    pub to_shard: Option<u32>,
}

/// How a move ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveOutcome {
    /// The group runs on `to` instead of `from`.
    Done,
    /// The learner did not catch up within the budget: it was removed again.
    RolledBack,
}

/// Why a move stopped before it ended.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The cluster refused a step (the move makes no sense: a node not in the group...).
    #[error("group {group}: {error}")]
    Refused {
        /// The group.
        group: u32,
        /// The refusal.
        error: ClientError,
    },
    /// The move did not end within the time allowed (it goes on when asked again).
    #[error("group {group}: the move did not end within {seconds} s; ask again to resume it")]
    TimedOut {
        /// The group.
        group: u32,
        /// The time allowed.
        seconds: u64,
    },
}

/// Where a move stands, as the mover reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveProgress {
    /// The step just asked for or waited on.
    pub step: &'static str,
    /// The group's configuration as last seen.
    pub membership: GroupMembership,
}

/// How long a move may take.
#[derive(Clone, Copy, Debug)]
pub struct MoveBudget {
    /// The learner's lag behind the leader (in entries) must set a new low at least once
    /// within this while it catches up (a large group takes as long as its size at the
    /// leader's `learner_rate`), else the move rolls back. Against a broker whose answers
    /// do not carry the learner's progress, this bounds the whole catch-up.
    pub catch_up: Duration,
    /// The whole move must end within this (`None`: unbounded; waits for a leader or a
    /// quorum then last as long as they do).
    pub total: Option<Duration>,
}

/// Watches a learner's catch-up: when its lag behind the leader's last index last
/// reached a new low. A learner copying steadily sets one at each look; one that stopped,
/// or that the group's writes outrun (written faster than `learner_rate`), does not.
struct CatchUpWatch {
    lowest_lag: Option<u64>,
    since: Instant,
}

impl CatchUpWatch {
    fn new() -> Self {
        Self {
            lowest_lag: None,
            since: Instant::now(),
        }
    }

    /// Takes a look at the configuration: answers whether learner `to`'s lag set no new
    /// low for longer than `stall`. An answer without the learner's progress (from a
    /// replica that does not lead, or an older broker) leaves the watch as it was.
    fn stalled(&mut self, membership: &GroupMembership, to: u64, stall: Duration) -> bool {
        let lag = membership
            .learner_matched(to)
            .filter(|_| membership.last_index > 0)
            .map(|matched| membership.last_index.saturating_sub(matched));
        self.stalled_at(lag, stall, Instant::now())
    }

    fn stalled_at(&mut self, lag: Option<u64>, stall: Duration, now: Instant) -> bool {
        if let Some(lag) = lag {
            if self.lowest_lag.is_none_or(|lowest| lag < lowest) {
                self.lowest_lag = Some(lag);
                self.since = now;
            }
        }
        now.duration_since(self.since) > stall
    }
}

/// Moves `plan`'s replica, telling `progress` each step. Resumes a move of the same
/// replica left half-way.
pub fn move_replica(
    client: &mut ClusterClient,
    plan: &ReplicaMovePlan,
    budget: MoveBudget,
    progress: &mut dyn FnMut(&MoveProgress),
) -> Result<MoveOutcome, MoveError> {
    let started = Instant::now();
    let mut rolling_back = false;
    // A start the controller refused (the learner then leaves again).
    let mut refusal: Option<ClientError> = None;
    let refused = |error: ClientError| MoveError::Refused {
        group: plan.group,
        error,
    };
    let mut watch = CatchUpWatch::new();
    loop {
        if let Some(total) = budget.total.filter(|total| started.elapsed() > *total) {
            return Err(MoveError::TimedOut {
                group: plan.group,
                seconds: total.as_secs(),
            });
        }
        let looked = client
            .membership(plan.group, &MembershipCall::Query)
            .and_then(|membership| Ok((membership, client.placement_changes()?)));
        let (membership, changes) = match looked {
            Ok(looked) => looked,
            Err(error) => {
                retry_or_refuse(plan.group, error)?;
                continue;
            }
        };
        // Only this plan's move may change the group: another one under way is finished
        // (or rolled back) first, by whoever started it.
        let under_way = changes.moves.iter().find(|m| m.0 == plan.group);
        if let Some(&(_, from, to, _)) = under_way.filter(|m| (m.1, m.2) != (plan.from, plan.to)) {
            return Err(refused(ClientError::Unexpected(format!(
                "group {} has another move under way (node {from} -> node {to}): finish it first",
                plan.group
            ))));
        }
        let recorded = under_way.is_some();
        let late = watch.stalled(&membership, plan.to, budget.catch_up);
        let step = match (plan.group == CONTROLLER_GROUP.0, rolling_back) {
            (true, true) => controller_roll_back_step(plan, &membership, recorded),
            (true, false) => controller_step(plan, &membership, late, recorded),
            (false, true) => roll_back_step(plan, &membership, recorded),
            (false, false) => move_step(plan, &membership, late, recorded),
        };
        progress(&MoveProgress {
            step: step.name(),
            membership: membership.clone(),
        });
        let outcome = match step {
            Step::Change(call) => client.membership(plan.group, &call).map(|_| ()),
            Step::RecordStart => {
                let record = MoveRecord::Start {
                    from: plan.from,
                    to: plan.to,
                    to_shard: plan.to_shard,
                    join: membership,
                };
                // Recorded now, or before by this plan (seen at the next look).
                if let Err(error) = client.record_move(plan.group, &record) {
                    tracing::warn!(group = plan.group, %error, "the move's start was refused: its learner leaves again");
                    refusal = Some(error);
                    rolling_back = true;
                }
                Ok(())
            }
            Step::Wait => {
                std::thread::sleep(MOVER_POLL);
                Ok(())
            }
            Step::RollBack => {
                rolling_back = true;
                Ok(())
            }
            Step::Finish => {
                let record = MoveRecord::Finish {
                    from: plan.from,
                    to: plan.to,
                };
                client.record_move(plan.group, &record).map_err(refused)?;
                return Ok(MoveOutcome::Done);
            }
            Step::Done => return Ok(MoveOutcome::Done),
            Step::Abandoned => {
                let record = MoveRecord::Abandon {
                    from: plan.from,
                    to: plan.to,
                };
                client.record_move(plan.group, &record).map_err(refused)?;
                return match refusal {
                    Some(error) => Err(refused(error)),
                    None => Ok(MoveOutcome::RolledBack),
                };
            }
            Step::Refuse(why) => return Err(refused(ClientError::Unexpected(why))),
            Step::Overtaken(why) => {
                let record = MoveRecord::Abandon {
                    from: plan.from,
                    to: plan.to,
                };
                client.record_move(plan.group, &record).map_err(refused)?;
                return Err(refused(ClientError::Unexpected(why)));
            }
        };
        if let Err(error) = outcome {
            retry_or_refuse(plan.group, error)?;
        }
    }
}

/// A retriable error (a leader changing, a node down) waits and goes on, and so does a
/// refused change: the group may have made it already (its answer lost), or be busy
/// with another; the next look at the configuration decides. Anything else ends the move
/// (it resumes when asked again).
fn retry_or_refuse(group: u32, error: ClientError) -> Result<(), MoveError> {
    let refused_change = error.to_string().contains("membership change refused");
    if error.is_retriable() || refused_change {
        tracing::debug!(group, %error, "move step not taken; looking again");
        std::thread::sleep(MOVER_POLL);
        return Ok(());
    }
    Err(MoveError::Refused { group, error })
}

/// The next thing a move does.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// Ask the group's leader for this change.
    Change(MembershipCall),
    /// Record the start (the learner then starts on its node).
    RecordStart,
    /// Wait (for the learner to catch up, or for the controller's record to show).
    Wait,
    /// The move already ended (its end recorded before).
    Done,
    /// The group is not where this plan can take it.
    Refuse(String),
    /// The learner took too long: remove it again.
    RollBack,
    /// The old replica is out: record the end.
    Finish,
    /// The learner is out again: record the roll-back.
    Abandoned,
    /// The group got where this plan can no longer take it after its start was
    /// recorded: record the roll-back, then refuse with the reason.
    Overtaken(String),
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::Change(MembershipCall::Query) => "looking",
            Step::Change(MembershipCall::AddLearner(_)) => "adding the new replica as a learner",
            Step::Change(MembershipCall::EnterJoint { .. }) => {
                "promoting the new replica, demoting the old (joint configuration)"
            }
            Step::Change(MembershipCall::LeaveJoint) => "leaving the joint configuration",
            Step::Change(MembershipCall::RemoveLearner(_)) => "removing a learner",
            Step::RecordStart => "recording the start",
            Step::Wait => "the new replica catches up",
            Step::Done => "done before",
            Step::Refuse(_) => "refused",
            Step::RollBack => "the new replica stopped catching up: rolling back",
            Step::Finish => "recording the end",
            Step::Abandoned => "recording the roll-back",
            Step::Overtaken(_) => "overtaken by another change: recording the roll-back",
        }
    }
}

/// The next step of a move going forward, from the configuration applied and whether
/// the controller shows this plan's move under way (`recorded`). Only a recorded move
/// promotes, demotes or removes anyone: a plan that does not match the group changes
/// nothing but adding its learner.
fn move_step(
    plan: &ReplicaMovePlan,
    membership: &GroupMembership,
    late: bool,
    recorded: bool,
) -> Step {
    let (from, to) = (plan.from, plan.to);
    let settled = !membership.is_joint() && membership.learners.is_empty();
    if settled && membership.voters.contains(&to) && !membership.contains(from) {
        return if recorded { Step::Finish } else { Step::Done };
    }
    if !membership.contains(to) {
        if !membership.voters.contains(&from) || !settled {
            return Step::Refuse(format!(
                "node {from} holds no voter of group {}, or the group is changing: {membership:?}",
                plan.group
            ));
        }
        return Step::Change(MembershipCall::AddLearner(to));
    }
    if !recorded {
        if membership.learners.contains(&to) && !membership.is_joint() {
            return Step::RecordStart;
        }
        if settled {
            return Step::Refuse(format!(
                "node {to} already holds a replica of group {}",
                plan.group
            ));
        }
        // Further along than a learner: the record shows once the controller's replica
        // that answered applied it.
        return Step::Wait;
    }
    if membership.is_joint() {
        return Step::Change(MembershipCall::LeaveJoint);
    }
    if membership.learners.contains(&to) {
        if membership.caught_up.contains(&to) && membership.voters.contains(&from) {
            return Step::Change(MembershipCall::EnterJoint {
                promote: vec![to],
                demote: vec![from],
            });
        }
        return if late { Step::RollBack } else { Step::Wait };
    }
    if membership.learners.contains(&from) {
        return Step::Change(MembershipCall::RemoveLearner(from));
    }
    if membership.voters.contains(&from) {
        // `to` votes beside `from`: a joint configuration left half-way does that.
        return Step::Change(MembershipCall::EnterJoint {
            promote: Vec::new(),
            demote: vec![from],
        });
    }
    Step::Finish
}

/// The next step of moving a vote of the controller group. Every node holds a replica
/// of it (a learner where it does not vote), so the vote moves from one replica to
/// another: `to`, a learner, is promoted while `from` is demoted to a learner, and no
/// replica starts or leaves.
fn controller_step(
    plan: &ReplicaMovePlan,
    membership: &GroupMembership,
    late: bool,
    recorded: bool,
) -> Step {
    let (from, to) = (plan.from, plan.to);
    if membership.is_joint() {
        return if recorded {
            Step::Change(MembershipCall::LeaveJoint)
        } else {
            Step::Wait
        };
    }
    if membership.voters.contains(&to) && !membership.voters.contains(&from) {
        return if recorded { Step::Finish } else { Step::Done };
    }
    if recorded && membership.voters.contains(&to) {
        // `to` votes beside `from`: an earlier vote move's promotion of `to`, proposed
        // before that move rolled back and committed since, demoted another voter. This
        // move has nothing left to do; left recorded, it would block every later one.
        return Step::Overtaken(format!(
            "node {to} already votes in the controller group beside node {from}: an \
             earlier move's promotion of it committed after that move rolled back, and \
             demoted another voter; this move is recorded as rolled back; check \
             `keel cluster status` and plan again"
        ));
    }
    if !membership.learners.contains(&to) || !membership.voters.contains(&from) {
        return Step::Refuse(format!(
            "node {to} is not a learner of the controller group or node {from} not a voter: \
             {membership:?}"
        ));
    }
    if !recorded {
        return Step::RecordStart;
    }
    if membership.caught_up.contains(&to) {
        return Step::Change(MembershipCall::EnterJoint {
            promote: vec![to],
            demote: vec![from],
        });
    }
    if late {
        Step::RollBack
    } else {
        Step::Wait
    }
}

/// The next step of a controller vote's move rolling back: nothing to remove (`to`
/// stays the learner it was), unless it was promoted meanwhile (the move goes on). The
/// roll-back proposes nothing, so it is recorded only once no promotion proposed before
/// (its answer lost in a leader change) can still commit: else the group's voters would
/// change after the controller recorded that they did not.
fn controller_roll_back_step(
    plan: &ReplicaMovePlan,
    membership: &GroupMembership,
    recorded: bool,
) -> Step {
    if membership.voters.contains(&plan.to) || membership.outgoing.contains(&plan.to) {
        return controller_step(plan, membership, false, recorded);
    }
    if !membership.changes_settled() {
        return Step::Wait;
    }
    Step::Abandoned
}

/// The next step of a move rolling back. A promotion asked before the roll-back was
/// decided may have been applied since: the move then goes on instead.
fn roll_back_step(plan: &ReplicaMovePlan, membership: &GroupMembership, recorded: bool) -> Step {
    let to = plan.to;
    if membership.voters.contains(&to) || membership.outgoing.contains(&to) {
        return move_step(plan, membership, false, recorded);
    }
    if membership.learners.contains(&to) {
        return Step::Change(MembershipCall::RemoveLearner(to));
    }
    Step::Abandoned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ReplicaMovePlan {
        ReplicaMovePlan {
            group: 1,
            from: 1,
            to: 4,
            to_shard: None,
        }
    }

    fn config(v: &[u64], out: &[u64], learners: &[u64], caught_up: &[u64]) -> GroupMembership {
        GroupMembership {
            group: 1,
            voters: v.to_vec(),
            outgoing: out.to_vec(),
            learners: learners.to_vec(),
            index: 10,
            caught_up: caught_up.to_vec(),
            ..GroupMembership::default()
        }
    }

    /// A learner catching up slowly but steadily is never late; one whose lag stops
    /// shrinking is, once that lasts longer than the budget: stopped, or outrun by the
    /// group's writes.
    #[test]
    fn a_catch_up_is_late_only_when_it_stops_progressing() {
        let stall = Duration::from_secs(60);
        let start = Instant::now();
        let mut watch = CatchUpWatch {
            lowest_lag: None,
            since: start,
        };
        let at = |s: u64| start + Duration::from_secs(s);
        // Ten minutes of steady progress: never late.
        for minute in 0..10 {
            let lag = 100_000 - minute * 1000;
            assert!(!watch.stalled_at(Some(lag), stall, at(minute * 60)));
        }
        // The lag stays at 91,000 (since 540 s): late once 60 s have passed.
        assert!(!watch.stalled_at(Some(91_000), stall, at(590)));
        assert!(watch.stalled_at(Some(91_000), stall, at(601)));
        // It shrinks again: no longer late.
        assert!(!watch.stalled_at(Some(90_999), stall, at(602)));
        // Outrun: the learner copies, but the leader's log grows faster.
        for second in 0..=60 {
            watch.stalled_at(Some(91_000 + second * 10), stall, at(603 + second));
        }
        assert!(watch.stalled_at(Some(92_000), stall, at(663)));
        // Answers without the learner's progress: only the time since the last low.
        let mut blind = CatchUpWatch {
            lowest_lag: None,
            since: start,
        };
        assert!(!blind.stalled_at(None, stall, at(59)));
        assert!(blind.stalled_at(None, stall, at(61)));
    }

    /// Each configuration a recorded move passes through leads to the step after it,
    /// whatever step was asked last (a resumed move starts anywhere on this path).
    #[test]
    fn every_configuration_of_a_move_leads_to_its_next_step() {
        let plan = plan();
        let unrecorded_learner = config(&[1, 2, 3], &[], &[4], &[]);
        assert_eq!(
            move_step(&plan, &unrecorded_learner, false, false),
            Step::RecordStart
        );
        let path = [
            (
                config(&[1, 2, 3], &[], &[], &[]),
                Step::Change(MembershipCall::AddLearner(4)),
            ),
            (config(&[1, 2, 3], &[], &[4], &[]), Step::Wait),
            (
                config(&[1, 2, 3], &[], &[4], &[4]),
                Step::Change(MembershipCall::EnterJoint {
                    promote: vec![4],
                    demote: vec![1],
                }),
            ),
            (
                config(&[2, 3, 4], &[1, 2, 3], &[1], &[]),
                Step::Change(MembershipCall::LeaveJoint),
            ),
            (
                config(&[2, 3, 4], &[], &[1], &[]),
                Step::Change(MembershipCall::RemoveLearner(1)),
            ),
            (config(&[2, 3, 4], &[], &[], &[]), Step::Finish),
        ];
        for (membership, step) in path {
            assert_eq!(
                move_step(&plan, &membership, false, true),
                step,
                "{membership:?}"
            );
        }
        let late = config(&[1, 2, 3], &[], &[4], &[]);
        assert_eq!(move_step(&plan, &late, true, true), Step::RollBack);
    }

    /// A move the controller does not show changes nothing past adding its learner: a
    /// finished one is done, a group further along waits, a wrong plan is refused.
    #[test]
    fn an_unrecorded_move_promotes_demotes_and_removes_no_one() {
        let plan = plan();
        let joint = config(&[2, 3, 4], &[1, 2, 3], &[1], &[]);
        assert_eq!(move_step(&plan, &joint, false, false), Step::Wait);
        let left_half_way = config(&[1, 2, 3, 4], &[], &[], &[]);
        assert!(matches!(
            move_step(&plan, &left_half_way, false, false),
            Step::Refuse(_)
        ));
        let done = config(&[2, 3, 4], &[], &[], &[]);
        assert_eq!(move_step(&plan, &done, false, false), Step::Done);
        let settled = config(&[1, 2, 3], &[], &[], &[]);
        let stranger = ReplicaMovePlan {
            from: 5,
            ..plan.clone()
        };
        assert!(matches!(
            move_step(&stranger, &settled, false, false),
            Step::Refuse(_)
        ));
        let onto_a_voter = ReplicaMovePlan { to: 2, ..plan };
        assert!(matches!(
            move_step(&onto_a_voter, &settled, false, false),
            Step::Refuse(_)
        ));
    }

    #[test]
    fn a_controller_vote_moves_between_replicas_and_none_starts_or_leaves() {
        let plan = ReplicaMovePlan { group: 0, ..plan() };
        let path = [
            (config(&[1, 2, 3], &[], &[4, 5], &[]), Step::Wait),
            (
                config(&[1, 2, 3], &[], &[4, 5], &[4, 5]),
                Step::Change(MembershipCall::EnterJoint {
                    promote: vec![4],
                    demote: vec![1],
                }),
            ),
            (
                config(&[2, 3, 4], &[1, 2, 3], &[1, 5], &[]),
                Step::Change(MembershipCall::LeaveJoint),
            ),
            (config(&[2, 3, 4], &[], &[1, 5], &[]), Step::Finish),
        ];
        for (membership, step) in path {
            assert_eq!(controller_step(&plan, &membership, false, true), step);
        }
        let learner = config(&[1, 2, 3], &[], &[4, 5], &[]);
        assert_eq!(
            controller_step(&plan, &learner, false, false),
            Step::RecordStart
        );
        assert_eq!(controller_step(&plan, &learner, true, true), Step::RollBack);
        assert_eq!(
            controller_roll_back_step(&plan, &learner, true),
            Step::Abandoned,
            "the learner stays"
        );
        let done = config(&[2, 3, 4], &[], &[1, 5], &[]);
        assert_eq!(controller_step(&plan, &done, false, false), Step::Done);
        let not_a_learner = config(&[1, 2, 3], &[], &[5], &[]);
        assert!(matches!(
            controller_step(&plan, &not_a_learner, false, false),
            Step::Refuse(_)
        ));
    }

    /// A controller vote move rolls back only once the leader says no promotion proposed
    /// before can still commit; a broker too old to say is taken at its word.
    #[test]
    fn a_controller_roll_back_waits_until_no_promotion_can_commit_late() {
        let plan = ReplicaMovePlan { group: 0, ..plan() };
        let learner = GroupMembership {
            last_index: 40,
            ..config(&[1, 2, 3], &[], &[4, 5], &[])
        };
        assert_eq!(controller_roll_back_step(&plan, &learner, true), Step::Wait);
        let settled = GroupMembership {
            settled: true,
            ..learner.clone()
        };
        assert_eq!(
            controller_roll_back_step(&plan, &settled, true),
            Step::Abandoned
        );
        let older_broker = config(&[1, 2, 3], &[], &[4, 5], &[]);
        assert_eq!(
            controller_roll_back_step(&plan, &older_broker, true),
            Step::Abandoned
        );
    }

    /// A vote move whose learner a late promotion (of an earlier, rolled-back move, which
    /// demoted another voter) made a voter beside the voter this move demotes: its start
    /// recorded, it records a roll-back and says why, instead of refusing for ever with
    /// its record blocking every later move of the group.
    #[test]
    fn a_controller_vote_move_overtaken_by_a_late_promotion_records_its_end() {
        let plan = ReplicaMovePlan { group: 0, ..plan() };
        // Node 4's promotion from an earlier move demoted node 2.
        let overtaken = config(&[1, 3, 4], &[], &[2, 5], &[]);
        assert!(matches!(
            controller_step(&plan, &overtaken, false, true),
            Step::Overtaken(_)
        ));
        assert!(matches!(
            controller_roll_back_step(&plan, &overtaken, true),
            Step::Overtaken(_)
        ));
        assert!(matches!(
            controller_step(&plan, &overtaken, false, false),
            Step::Refuse(_)
        ));
    }

    #[test]
    fn a_roll_back_removes_the_learner_or_goes_on_once_it_was_promoted() {
        let plan = plan();
        let learner = config(&[1, 2, 3], &[], &[4], &[]);
        assert_eq!(
            roll_back_step(&plan, &learner, true),
            Step::Change(MembershipCall::RemoveLearner(4))
        );
        let before = config(&[1, 2, 3], &[], &[], &[]);
        assert_eq!(roll_back_step(&plan, &before, true), Step::Abandoned);
        let promoted = config(&[2, 3, 4], &[1, 2, 3], &[1], &[]);
        assert_eq!(
            roll_back_step(&plan, &promoted, true),
            Step::Change(MembershipCall::LeaveJoint)
        );
    }
}
