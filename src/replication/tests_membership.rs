//! Membership changes on a small cluster of real replicas over the simulator's store:
//! messages go straight to their addressee, flushes and disk work complete at once, so
//! each test reads as the steps of a move.

use std::collections::{BTreeMap, VecDeque};

use crate::broker::state::{Applied, ShardState};
use crate::replication::events::{Effect, Input, RequestId, ShardError};
use crate::replication::membership::{Membership, MembershipChange};
use crate::replication::prng::Prng;
use crate::replication::replica::{Replica, ReplicaConfig};
use crate::replication::tests_replica::config;
use crate::replication::LogStore;
use crate::sim::sim_store::{SimLog, SimLogStore};

struct Cluster {
    nodes: BTreeMap<u64, (Replica<SimLogStore>, SimLogStore)>,
    queue: VecDeque<(u64, Input)>,
    answers: BTreeMap<RequestId, Result<Applied, ShardError>>,
    removed: Vec<u64>,
    next_request: u64,
}

fn node_config(id: u64, voters: &[u64]) -> ReplicaConfig {
    ReplicaConfig {
        replica_id: id,
        voters: voters.to_vec(),
        learners: Vec::new(),
        preferred_leader: None,
        campaign_at_start: id == 1,
        max_waiting_proposals: 64,
        ..config()
    }
}

impl Cluster {
    /// A group of `voters`, node 1 elected.
    fn new(voters: &[u64]) -> Cluster {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            answers: BTreeMap::new(),
            removed: Vec::new(),
            next_request: 1,
        };
        for &id in voters {
            cluster.start(id, SimLogStore::new(SimLog::default()), voters);
        }
        cluster.settle();
        assert!(cluster.replica(1).is_leader(), "node 1 leads");
        cluster
    }

    fn start(&mut self, id: u64, store: SimLogStore, voters: &[u64]) {
        let mut replica = Replica::new(
            store.clone(),
            ShardState::default(),
            node_config(id, voters),
        )
        .unwrap();
        let mut effects = Vec::new();
        replica.start(&mut effects);
        self.nodes.insert(id, (replica, store));
        self.carry_out(id, effects);
    }

    /// A new node's replica, starting with the configuration of the change that added
    /// it (`index`: that change's).
    fn join(&mut self, id: u64, membership: &Membership) {
        let store = SimLogStore::new(SimLog::default());
        let record = membership.to_record();
        let mut writer = store.clone();
        LogStore::set_conf_state(&mut writer, record).unwrap();
        store.log.borrow_mut().begin_flush();
        store.log.borrow_mut().complete_flush(None).unwrap();
        self.start(id, store, &[]);
    }

    /// Crashes `id` (what was durable survives) and starts it again.
    fn restart(&mut self, id: u64) {
        let (_, store) = self.nodes.remove(&id).unwrap();
        let recovered = store.log.borrow().recover_after_crash(&mut Prng::new(id));
        self.queue.retain(|(to, _)| *to != id);
        self.start(id, SimLogStore::new(recovered), &[1, 2, 3]);
        self.settle();
    }

    fn replica(&self, id: u64) -> &Replica<SimLogStore> {
        &self.nodes[&id].0
    }

    fn carry_out(&mut self, id: u64, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { to, messages } => {
                    let input = Input::Peer { from: id, messages };
                    self.queue.push_back((to, input));
                }
                Effect::Flush { flush } => {
                    let store = &self.nodes[&id].1;
                    store.log.borrow_mut().begin_flush();
                    let outcome = store.log.borrow_mut().complete_flush(None);
                    self.queue
                        .push_back((id, Input::FlushDone { flush, outcome }));
                }
                Effect::Disk { op, work } => {
                    let outcome = self.nodes[&id].1.log.borrow_mut().carry_out(&work);
                    self.queue.push_back((id, Input::DiskDone { op, outcome }));
                }
                Effect::ReadEntries {
                    op,
                    low,
                    high,
                    max_bytes,
                } => {
                    let read = self.nodes[&id]
                        .1
                        .log
                        .borrow()
                        .read(low, high, Some(max_bytes));
                    let outcome = Ok(read);
                    self.queue.push_back((id, Input::ReadDone { op, outcome }));
                }
                Effect::Answer { request, outcome } => {
                    self.answers.insert(request, outcome);
                }
                Effect::MembershipChanged { membership, .. } if !membership.contains(id) => {
                    self.removed.push(id)
                }
                _ => {}
            }
        }
    }

    fn feed(&mut self, id: u64, input: Input) {
        let Some((replica, _)) = self.nodes.get_mut(&id) else {
            return;
        };
        let mut effects = Vec::new();
        replica.handle(input, &mut effects);
        self.carry_out(id, effects);
    }

    /// Delivers everything queued, ticking every node now and then, until quiet.
    fn settle(&mut self) {
        for round in 0..200 {
            while let Some((to, input)) = self.queue.pop_front() {
                self.feed(to, input);
            }
            if round % 2 == 0 {
                let ids: Vec<u64> = self.nodes.keys().copied().collect();
                for id in ids {
                    self.feed(id, Input::Tick { now_ms: 0 });
                }
            }
        }
    }

    fn leader(&self) -> u64 {
        let leaders: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, (r, _))| r.is_leader())
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(leaders.len(), 1, "one leader: {leaders:?}");
        leaders[0]
    }

    /// Asks `at` for `change`; delivers until it is answered.
    fn change(&mut self, at: u64, change: MembershipChange) -> Result<Applied, ShardError> {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        self.feed(at, Input::ChangeMembership { request, change });
        self.settle();
        self.answers.remove(&request).expect("answered")
    }
}

fn applied_at(outcome: Result<Applied, ShardError>) -> u64 {
    match outcome {
        Ok(Applied::MembershipChanged { index }) => index,
        other => panic!("not applied: {other:?}"),
    }
}

/// A replica moves from node 3 to node 4 in four committed changes; every replica of the
/// group ends with the same configuration, and node 3 is told it was removed.
#[test]
fn a_replica_moves_from_one_node_to_another_in_four_changes() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    let added = applied_at(cluster.change(1, MembershipChange::AddLearner { node: 4 }));
    let membership = cluster.replica(1).membership().clone();
    assert_eq!(
        (membership.voters.clone(), membership.learners.clone()),
        (vec![1, 2, 3], vec![4])
    );
    assert_eq!(membership.index, added);
    cluster.join(4, &membership);
    cluster.settle();
    assert_eq!(
        cluster.replica(4).applied_index(),
        cluster.replica(1).applied_index()
    );
    let promote = MembershipChange::EnterJoint {
        promote: vec![4],
        demote: vec![3],
    };
    applied_at(cluster.change(1, promote));
    let joint = cluster.replica(2).membership().clone();
    assert_eq!(
        (joint.voters, joint.outgoing),
        (vec![1, 2, 4], vec![1, 2, 3])
    );
    applied_at(cluster.change(1, MembershipChange::LeaveJoint));
    applied_at(cluster.change(1, MembershipChange::RemoveLearner { node: 3 }));
    for id in [1, 2, 4] {
        let m = cluster.replica(id).membership();
        assert_eq!(
            (m.voters.clone(), m.outgoing.clone(), m.learners.clone()),
            (vec![1, 2, 4], vec![], vec![]),
            "node {id}"
        );
    }
    assert_eq!(cluster.removed, vec![3]);
}

/// A restart replays committed entries from the compaction point over the configuration
/// stored last: a change at or below its index is not applied twice. (Without the index,
/// a follower restarted in the joint configuration applied the earlier `AddLearner` to
/// it, which raft-rs refuses: "can't apply simple config change in joint config".)
#[test]
fn a_restart_in_a_joint_configuration_does_not_apply_a_change_twice() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    applied_at(cluster.change(1, MembershipChange::AddLearner { node: 4 }));
    let membership = cluster.replica(1).membership().clone();
    cluster.join(4, &membership);
    cluster.settle();
    let promote = MembershipChange::EnterJoint {
        promote: vec![4],
        demote: vec![3],
    };
    let joint_at = applied_at(cluster.change(1, promote));
    // The configuration is written with the next flush: one more entry makes it durable.
    cluster.feed(1, Input::Tick { now_ms: 0 });
    cluster.settle();
    cluster.restart(2);
    let m = cluster.replica(2).membership();
    assert!(m.is_joint() && m.index >= joint_at, "{m:?}");
    applied_at(cluster.change(1, MembershipChange::LeaveJoint));
    assert_eq!(cluster.replica(2).membership().voters, vec![1, 2, 4]);
}

/// A change that would leave the leader out hands leadership to a current incoming voter
/// first and is refused `NotLeader`; the new leader makes it.
#[test]
fn a_leader_demoted_hands_its_leadership_over_first() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    applied_at(cluster.change(1, MembershipChange::AddLearner { node: 4 }));
    let membership = cluster.replica(1).membership().clone();
    cluster.join(4, &membership);
    cluster.settle();
    let demote_leader = MembershipChange::EnterJoint {
        promote: vec![4],
        demote: vec![1],
    };
    assert_eq!(
        cluster.change(1, demote_leader.clone()),
        Err(ShardError::NotLeader)
    );
    let leader = cluster.leader();
    assert!([2, 3, 4].contains(&leader), "handed over to {leader}");
    applied_at(cluster.change(leader, demote_leader));
    applied_at(cluster.change(leader, MembershipChange::LeaveJoint));
    applied_at(cluster.change(leader, MembershipChange::RemoveLearner { node: 1 }));
    assert_eq!(cluster.replica(leader).membership().voters, vec![2, 3, 4]);
    assert_eq!(cluster.removed, vec![1]);
}

/// Changes that make no sense are refused before raft-rs takes them, with a reason.
#[test]
fn changes_that_make_no_sense_are_refused_with_a_reason() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    let refused = |outcome| match outcome {
        Err(ShardError::MembershipRefused(reason)) => reason,
        other => panic!("not refused: {other:?}"),
    };
    let promote_voter = MembershipChange::EnterJoint {
        promote: vec![2],
        demote: vec![],
    };
    assert!(refused(cluster.change(1, promote_voter)).contains("only learners"));
    let remove_voter = MembershipChange::RemoveLearner { node: 3 };
    assert!(refused(cluster.change(1, remove_voter)).contains("only a learner"));
    assert!(refused(cluster.change(1, MembershipChange::LeaveJoint)).contains("joint"));
    let add_member = MembershipChange::AddLearner { node: 2 };
    assert!(refused(cluster.change(1, add_member)).contains("already"));
    let follower = MembershipChange::AddLearner { node: 4 };
    assert_eq!(cluster.change(2, follower), Err(ShardError::NotLeader));
    // Two changes at once: the second waits for the first to apply.
    let (first, second) = (RequestId(900), RequestId(901));
    cluster.feed(
        1,
        Input::ChangeMembership {
            request: first,
            change: MembershipChange::AddLearner { node: 4 },
        },
    );
    cluster.feed(
        1,
        Input::ChangeMembership {
            request: second,
            change: MembershipChange::AddLearner { node: 5 },
        },
    );
    cluster.settle();
    assert!(matches!(
        cluster.answers[&first],
        Ok(Applied::MembershipChanged { .. })
    ));
    assert!(matches!(
        &cluster.answers[&second],
        Err(ShardError::MembershipPending)
    ));
    assert_eq!(cluster.replica(1).membership().learners, vec![4]);
}

#[test]
fn a_new_preferred_leader_takes_the_group_once_it_is_current() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    for (replica, _) in cluster.nodes.values_mut() {
        replica.config.leader_balance_delay_ticks = Some(3);
    }
    cluster.settle();
    let before = cluster.leader();
    for target in [1, 2, 3].into_iter().filter(|&n| n != before) {
        for id in [1, 2, 3] {
            cluster.feed(id, Input::PreferredLeader { node: Some(target) });
        }
        cluster.settle();
        assert_eq!(
            cluster.leader(),
            target,
            "handed to the recorded preferred leader"
        );
    }
}

#[test]
fn a_group_takes_no_more_members_than_its_stored_configuration_holds() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    let most = crate::constants::MAX_CONF_MEMBERS as u64;
    for node in 4..=most {
        let added = cluster.change(1, MembershipChange::AddLearner { node });
        assert!(added.is_ok(), "learner {node}: {added:?}");
    }
    let refused = cluster.change(1, MembershipChange::AddLearner { node: most + 1 });
    assert!(
        matches!(&refused, Err(ShardError::MembershipRefused(r)) if r.contains("MAX_CONF_MEMBERS")),
        "{refused:?}"
    );
    assert_eq!(
        cluster.replica(1).membership().member_count(),
        most as usize
    );
}
