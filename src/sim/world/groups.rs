//! Consumer groups: in most seeds a group client, while faults run, keeps one consumer
//! group of one to three members on the main topic busy. One request at a time, each
//! sent to the node it believes leads (moved on `NotLeader` and after a timeout, as the
//! producers do), waited for (`wait: true`): joins of new members, joins again of members
//! whose knowledge is stale, leaves, offset commits for partitions a member owns in the
//! generation it knows, and, as the coordinator's session expiry would, removals of
//! members it does not know (joins whose answer it never got). It learns member ids,
//! generations and assignments only from the answers (`Applied::Group`).
//!
//! Each partition's committed offsets come from one counter that only grows, whoever
//! commits, and a request is made only once the previous one was answered or abandoned:
//! of two commits that both apply, the one made first applies first (its entry was in a
//! leader's log before the other existed). So at the end every partition's committed
//! offset is exactly known, up to commits whose fate the client never learned.
//!
//! S10, consumer groups, checked from the answers and at the end of the run:
//! - (a) at the end, on every replica, each partition's committed offset is the highest
//!   offset a commit was answered `Committed` for, or a higher one of a commit whose fate
//!   is unknown (timed out, `Indeterminate`); none when no commit was acknowledged and
//!   none of unknown fate could have set one; no other offset key exists. Every member
//!   whose join was answered and that was not asked to leave is still a member.
//! - (c) fencing seen from outside: a commit is never answered `Committed` when it carried
//!   a generation older than one an answer had shown before it was sent; a
//!   `StaleGeneration` refusal names the generation sent and a newer one; a commit at the
//!   generation and assignment a join's answer gave is never refused `NotAssigned`; a
//!   member the client knows is never refused `UnknownMember`; no answer shows a
//!   generation older than one shown before its request was sent.
//!
//! (b), replicas agreeing on the groups, is S5: the encoded state it compares carries them.
//! The client's choices come from their own generator; it never looks at the replicas'
//! state except to find members to remove, as a describe request to the leader would.

use std::collections::{BTreeMap, BTreeSet};

use crate::broker::group_entry::GroupEntry;
use crate::broker::groups::{AssignStrategy, GroupApplied, GroupMode, GroupRefusal, Join};
use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::Applied;
use crate::replication::events::{Proposal, RequestId, ShardError};
use crate::replication::prng::Prng;
use crate::replication::replica::Replica;
use crate::sim::checkers::Violation;
use crate::sim::sim_store::SimLogStore;
use crate::sim::workload::Purpose;
use crate::sim::world::{Event, Pick, World, CLIENT_TIMEOUT_NS};

const GROUPS_DOMAIN: u64 = 52;
/// The consumer group's name.
pub const GROUP_NAME: &str = "sim-group";
/// The client name its members join with (member ids are `sim-consumer-<join index>`).
const CLIENT_NAME: &str = "sim-consumer";
/// Members the client keeps at most.
const MAX_MEMBERS: usize = 3;
/// One seed in this many has no group client.
const WITHOUT_GROUPS_ONE_IN: u64 = 4;
/// Between an answer and the next request, ns.
const THINK_NS: (u64, u64) = (20_000_000, 100_000_000);
/// After a refusal for leadership or a connection that failed, ns.
const RETRY_NS: (u64, u64) = (2_000_000, 20_000_000);

/// A member as the client last learned it.
#[derive(Clone, Debug)]
struct KnownMember {
    generation: u64,
    /// Partitions of the main topic it owns at `generation`.
    partitions: Vec<u32>,
}

/// What a request asked for.
#[derive(Clone, Debug)]
enum Operation {
    JoinNew,
    JoinAgain(String),
    Leave(String),
    /// A member the client does not know, removed at the group's generation then.
    Remove(String),
    /// Index into `commits`.
    Commit(usize),
}

/// A request not answered yet.
#[derive(Clone, Debug)]
struct Sent {
    operation: Operation,
    /// The newest generation any answer had shown when it was sent.
    newest_generation: u64,
}

/// What became of a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Not answered, or answered without a verdict: it may or may not have applied.
    Unknown,
    Committed,
    /// Refused at apply, or never proposed.
    NotApplied,
}

/// One commit as the history keeps it.
#[derive(Clone, Debug)]
struct CommitRecord {
    member: String,
    generation: u64,
    /// (partition, offset) pairs.
    offsets: Vec<(u32, u64)>,
    fate: Fate,
}

/// The group client of a run.
pub struct GroupClient {
    pub(super) rng: Prng,
    /// Whether this seed has a group client.
    pub enabled: bool,
    wake_token: u64,
    target: u64,
    /// The request waiting for its answer, and when it was sent.
    current: Option<(RequestId, u64)>,
    /// Every request not answered yet (abandoned ones too: a late answer still counts).
    sent: BTreeMap<RequestId, Sent>,
    members: BTreeMap<String, KnownMember>,
    /// The newest generation any answer showed.
    newest_generation: u64,
    /// The last offset handed out per partition.
    last_offset: Vec<u64>,
    commits: Vec<CommitRecord>,
    /// Commits answered `Committed`.
    pub acknowledged_commits: u64,
    /// Commits refused as `StaleGeneration`.
    pub stale_refusals: u64,
}

impl GroupClient {
    /// This seed's group client, for a topic of `partitions` partitions.
    pub fn new(seed: u64, partitions: u32) -> GroupClient {
        let mut rng = Prng::derive(seed, GROUPS_DOMAIN, 0);
        let enabled = !rng.chance(1, WITHOUT_GROUPS_ONE_IN);
        GroupClient {
            rng,
            enabled,
            wake_token: 0,
            target: 1,
            current: None,
            sent: BTreeMap::new(),
            members: BTreeMap::new(),
            newest_generation: 0,
            last_offset: vec![0; partitions as usize],
            commits: Vec::new(),
            acknowledged_commits: 0,
            stale_refusals: 0,
        }
    }

    /// The next operation, given the members the target holds (when it leads).
    fn choose(&mut self, leader_members: &[String]) -> Operation {
        if self.members.is_empty() {
            return Operation::JoinNew;
        }
        let roll = self.rng.range(0, 100);
        if roll < 8 && self.members.len() < MAX_MEMBERS {
            return Operation::JoinNew;
        }
        let ids: Vec<String> = self.members.keys().cloned().collect();
        let id = ids[self.rng.range(0, ids.len() as u64) as usize].clone();
        if roll < 12 {
            return Operation::Leave(id);
        }
        if roll < 20 {
            let ghost = leader_members
                .iter()
                .find(|m| !self.members.contains_key(*m));
            if let Some(ghost) = ghost {
                return Operation::Remove(ghost.clone());
            }
        }
        let member = &self.members[&id];
        // A stale member commits now and then anyway: fencing must refuse it.
        let stale = member.generation < self.newest_generation;
        if member.partitions.is_empty() || (stale && self.rng.chance(1, 2)) {
            return Operation::JoinAgain(id);
        }
        self.new_commit(id)
    }

    /// A commit by `member` of some of its partitions, each at a new, higher offset.
    fn new_commit(&mut self, member: String) -> Operation {
        let known = &self.members[&member];
        let first = self.rng.range(0, known.partitions.len() as u64) as usize;
        let mut offsets = Vec::new();
        for (i, &partition) in known.partitions.iter().enumerate() {
            if i == first || self.rng.chance(1, 2) {
                let last = &mut self.last_offset[partition as usize];
                *last += self.rng.range(1, 4);
                offsets.push((partition, *last));
            }
        }
        self.commits.push(CommitRecord {
            generation: known.generation,
            member,
            offsets,
            fate: Fate::Unknown,
        });
        Operation::Commit(self.commits.len() - 1)
    }

    /// The log entry of `operation`.
    fn entry(&self, operation: &Operation, topic_id: u32, leader_generation: u64) -> Vec<u8> {
        let entry = match operation {
            Operation::JoinNew | Operation::JoinAgain(_) => GroupEntry::Join(Join {
                group: GROUP_NAME,
                member_id: match operation {
                    Operation::JoinAgain(id) => id,
                    _ => "",
                },
                client: CLIENT_NAME,
                instance: "",
                mode: GroupMode::Clustering,
                strategy: AssignStrategy::Sticky,
                session_timeout_ms: 10_000,
                topics: vec![topic_id],
            }),
            Operation::Leave(id) | Operation::Remove(id) => GroupEntry::Leave {
                group: GROUP_NAME,
                member: id,
                generation: matches!(operation, Operation::Remove(_)).then_some(leader_generation),
            },
            Operation::Commit(index) => {
                let record = &self.commits[*index];
                GroupEntry::Commit {
                    group: GROUP_NAME,
                    member: &record.member,
                    generation: record.generation,
                    offsets: record
                        .offsets
                        .iter()
                        .map(|&(partition, offset)| ((topic_id, partition), offset, "sim"))
                        .collect(),
                }
            }
        };
        BrokerEntry::Group(entry).encode()
    }

    /// A request's answer: what the client learns, or the S10 violation it shows.
    /// Returns whether the target should move (the request reached no leader).
    fn on_answer(
        &mut self,
        sent: Sent,
        is_current: bool,
        outcome: &Result<Applied, ShardError>,
    ) -> Result<bool, String> {
        let applied = match outcome {
            Ok(Applied::Group(applied)) => applied,
            Ok(other) => {
                let operation = self.describe(&sent.operation);
                return Err(format!("{operation} answered {other:?}"));
            }
            Err(error) => {
                let definite = matches!(error, ShardError::NotLeader | ShardError::Overloaded);
                if let Operation::Commit(index) = sent.operation {
                    if definite {
                        self.commits[index].fate = Fate::NotApplied;
                    }
                }
                if let (Operation::Leave(id), true) = (&sent.operation, is_current) {
                    // It may have applied: the member is no longer the client's.
                    self.members.remove(id);
                }
                return Ok(true);
            }
        };
        let newest = sent.newest_generation;
        match (&sent.operation, applied) {
            (
                Operation::JoinNew | Operation::JoinAgain(_),
                GroupApplied::Joined {
                    member_id,
                    generation,
                    assignment,
                },
            ) => {
                if *generation < newest {
                    return Err(format!(
                        "a join was answered at generation {generation}, but generation \
                         {newest} was answered before it was sent"
                    ));
                }
                self.joined(
                    &sent.operation,
                    is_current,
                    member_id,
                    *generation,
                    assignment,
                );
            }
            (Operation::Leave(id) | Operation::Remove(id), GroupApplied::Left { generation }) => {
                if *generation <= newest {
                    return Err(format!(
                        "member {id} left at generation {generation}, but generation {newest} \
                         was answered before the leave was sent"
                    ));
                }
                self.members.remove(id);
                self.newest_generation = self.newest_generation.max(*generation);
            }
            (Operation::Commit(index), GroupApplied::Committed) => {
                self.committed(*index, newest)?
            }
            (operation, GroupApplied::Refused(refusal)) => self.refused(operation, refusal)?,
            (operation, other) => {
                return Err(format!("{} answered {other:?}", self.describe(operation)))
            }
        }
        Ok(false)
    }

    /// A join's answer: the member's generation and assignment (a new member is kept only
    /// from the answer of the request the client waits for, and while there is room).
    fn joined(
        &mut self,
        operation: &Operation,
        is_current: bool,
        member_id: &str,
        generation: u64,
        assignment: &[(u32, u32)],
    ) {
        self.newest_generation = self.newest_generation.max(generation);
        let adopt = matches!(operation, Operation::JoinNew)
            && is_current
            && self.members.len() < MAX_MEMBERS;
        let known = self.members.get(member_id).map(|m| m.generation);
        if known.is_some_and(|g| g <= generation) || (known.is_none() && adopt) {
            let partitions = assignment.iter().map(|&(_, p)| p).collect();
            let member = KnownMember {
                generation,
                partitions,
            };
            self.members.insert(member_id.to_string(), member);
        }
    }

    /// A commit answered `Committed`: it must not have been fenced.
    fn committed(&mut self, index: usize, newest: u64) -> Result<(), String> {
        let record = &mut self.commits[index];
        record.fate = Fate::Committed;
        self.acknowledged_commits += 1;
        if record.generation < newest {
            return Err(format!(
                "member {}'s commit {:?} at generation {} was applied, but generation {newest} \
                 was answered before it was sent",
                record.member, record.offsets, record.generation
            ));
        }
        Ok(())
    }

    /// A refusal at apply: nothing changed; for a commit, the reason must fit what the
    /// client knows.
    fn refused(&mut self, operation: &Operation, refusal: &GroupRefusal) -> Result<(), String> {
        if let GroupRefusal::UnknownMember { member, .. } = refusal {
            if self.members.contains_key(member) {
                return Err(format!(
                    "member {member}, whose join was answered and which was not asked to \
                     leave, is unknown to {}",
                    self.describe(operation)
                ));
            }
        }
        let Operation::Commit(index) = *operation else {
            return Ok(());
        };
        self.commits[index].fate = Fate::NotApplied;
        let record = &self.commits[index];
        match refusal {
            GroupRefusal::StaleGeneration { sent, current, .. } => {
                if *sent != record.generation || current <= sent {
                    return Err(format!(
                        "{} refused as stale with sent {sent}, current {current}",
                        self.describe(operation)
                    ));
                }
                self.stale_refusals += 1;
                self.newest_generation = self.newest_generation.max(*current);
                Ok(())
            }
            // A member the client forgot (its leave timed out), then removed.
            GroupRefusal::UnknownMember { .. } => Ok(()),
            // NotAssigned: the generation was the group's, so the assignment was the one
            // the join's answer gave.
            other => Err(format!("{} refused: {other}", self.describe(operation))),
        }
    }

    /// An operation for the trace and violations.
    fn describe(&self, operation: &Operation) -> String {
        match operation {
            Operation::Commit(index) => {
                let record = &self.commits[*index];
                format!(
                    "commit by {} at generation {} of (partition, offset) {:?}",
                    record.member, record.generation, record.offsets
                )
            }
            other => format!("{other:?}"),
        }
    }

    /// (a) on one replica at the end: committed offsets and members.
    pub fn check_replica(
        &self,
        node: u64,
        replica: &Replica<SimLogStore>,
        topic_id: Option<u32>,
    ) -> Result<(), Violation> {
        let fail = |detail: String| {
            Err(Violation {
                property: "S10",
                detail: format!("node {node}: {detail}"),
            })
        };
        let group = replica.state().consumer_groups().get(GROUP_NAME);
        let mut found: BTreeMap<u32, u64> = BTreeMap::new();
        for ((owner, topic, partition), committed) in group.iter().flat_map(|g| &g.offsets) {
            if !owner.is_empty() || Some(*topic) != topic_id {
                return fail(format!(
                    "offset of ({owner:?}, {topic}, {partition}) never sent"
                ));
            }
            found.insert(*partition, committed.offset);
        }
        for partition in 0..self.last_offset.len() as u32 {
            let held = found.get(&partition).copied();
            if let Err(expected) = self.final_offset_fits(partition, held) {
                return fail(format!(
                    "{GROUP_NAME} partition {partition} committed offset {held:?}; {expected}"
                ));
            }
        }
        // A leave still waiting for its answer (its proposer crashed) may have applied.
        let leaving = self
            .current
            .and_then(|(request, _)| match self.sent.get(&request) {
                Some(Sent {
                    operation: Operation::Leave(id),
                    ..
                }) => Some(id),
                _ => None,
            });
        for id in self.members.keys().filter(|id| Some(*id) != leaving) {
            if !group.is_some_and(|g| g.members.contains_key(id)) {
                return fail(format!("member {id}, whose join was answered, is gone"));
            }
        }
        Ok(())
    }

    /// Whether `held` can be the final committed offset of `partition`; else what it
    /// should be.
    fn final_offset_fits(&self, partition: u32, held: Option<u64>) -> Result<(), String> {
        let mut acknowledged = None;
        let mut unknown = BTreeSet::new();
        for record in &self.commits {
            for &(_, offset) in record.offsets.iter().filter(|(p, _)| *p == partition) {
                match record.fate {
                    Fate::Committed => acknowledged = acknowledged.max(Some(offset)),
                    Fate::Unknown => {
                        unknown.insert(offset);
                    }
                    Fate::NotApplied => {}
                }
            }
        }
        let fits = held == acknowledged
            || held.is_some_and(|h| h > acknowledged.unwrap_or(0) && unknown.contains(&h));
        if fits {
            return Ok(());
        }
        Err(format!(
            "the highest acknowledged is {acknowledged:?}, unknown fates {unknown:?}"
        ))
    }
}

impl World {
    /// Wakes the group client at `at` (replacing any earlier wake-up).
    pub(super) fn wake_group_client(&mut self, at: u64) {
        self.group_client.wake_token += 1;
        let token = self.group_client.wake_token;
        self.schedule(at, Event::GroupClient { token });
    }

    /// The group client's wake-up: abandons a request that timed out, then makes the next.
    pub(super) fn group_client_wakes(&mut self, token: u64) {
        if token != self.group_client.wake_token || !self.group_client.enabled {
            return;
        }
        if !self.faults_on {
            return;
        }
        let Some(topic_id) = self.workload.topic_id else {
            return self.wake_group_client(self.now + 20_000_000);
        };
        if let Some((request, sent_at)) = self.group_client.current {
            if self.now < sent_at + CLIENT_TIMEOUT_NS {
                return self.wake_group_client(sent_at + CLIENT_TIMEOUT_NS);
            }
            self.group_client.current = None;
            if let Some(Sent {
                operation: Operation::Leave(id),
                ..
            }) = self.group_client.sent.get(&request)
            {
                // It may still apply: the member is no longer the client's.
                let id = id.clone();
                self.group_client.members.remove(&id);
            }
            self.retarget_group_client();
        }
        let target = self.group_client.target;
        if !self.nodes.get(&target).is_some_and(|n| n.up) {
            // The connection fails: try another node soon.
            self.retarget_group_client();
            let (low, high) = RETRY_NS;
            let at = self.now + self.group_client.rng.range(low, high);
            return self.wake_group_client(at);
        }
        self.group_request(target, topic_id);
    }

    /// Makes and proposes the client's next request at `target`.
    fn group_request(&mut self, target: u64, topic_id: u32) {
        let leader_view = self.nodes.get(&target).and_then(|n| {
            let replica = n
                .replica
                .as_ref()
                .filter(|r| n.up && !n.paused && r.is_leader())?;
            let group = replica.state().consumer_groups().get(GROUP_NAME)?;
            Some((
                group.generation,
                group.members.keys().cloned().collect::<Vec<_>>(),
            ))
        });
        let (leader_generation, leader_members) = leader_view.unwrap_or_default();
        let client = &mut self.group_client;
        let operation = client.choose(&leader_members);
        let data = client.entry(&operation, topic_id, leader_generation);
        let note = format!(
            "group client: {} (newest generation {})",
            client.describe(&operation),
            client.newest_generation
        );
        let sent = Sent {
            operation,
            newest_generation: client.newest_generation,
        };
        let request = self.workload.request(Purpose::Group);
        self.group_client.sent.insert(request, sent);
        self.group_client.current = Some((request, self.now));
        self.trace.note(self.now, target, note);
        self.wake_group_client(self.now + CLIENT_TIMEOUT_NS);
        self.propose(
            target,
            Proposal {
                request,
                data,
                wait: true,
            },
        );
    }

    /// An answer to one of the group client's requests.
    pub(super) fn group_answer(
        &mut self,
        request: RequestId,
        outcome: Result<Applied, ShardError>,
    ) {
        let Some(sent) = self.group_client.sent.remove(&request) else {
            return;
        };
        let is_current = self.group_client.current.map(|(r, _)| r) == Some(request);
        let operation = self.group_client.describe(&sent.operation);
        let note = format!("group client: {operation} answered {outcome:?}");
        self.trace.note(self.now, 0, note);
        let moved = match self.group_client.on_answer(sent, is_current, &outcome) {
            Ok(moved) => moved,
            Err(detail) => return self.fail("S10", detail),
        };
        if !is_current {
            return;
        }
        self.group_client.current = None;
        let (low, high) = if moved {
            self.retarget_group_client();
            RETRY_NS
        } else {
            THINK_NS
        };
        let at = self.now + self.group_client.rng.range(low, high);
        self.wake_group_client(at);
    }

    /// The leader the current target names, else a node at random.
    fn retarget_group_client(&mut self) {
        let current = self.group_client.target;
        let hint = self
            .nodes
            .get(&current)
            .and_then(|n| n.replica.as_ref())
            .map_or(0, |r| r.leader_id());
        self.group_client.target = if hint != 0 && hint != current {
            hint
        } else {
            self.pick_node(Pick::GroupClient)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_with_member(generation: u64, partitions: Vec<u32>) -> GroupClient {
        let mut client = GroupClient::new(0, 3);
        client.members.insert(
            "m-1".to_string(),
            KnownMember {
                generation,
                partitions,
            },
        );
        client.newest_generation = generation;
        client
    }

    fn commit_sent(client: &mut GroupClient) -> Sent {
        let operation = client.new_commit("m-1".to_string());
        Sent {
            operation,
            newest_generation: client.newest_generation,
        }
    }

    fn group(applied: GroupApplied) -> Result<Applied, ShardError> {
        Ok(Applied::Group(applied))
    }

    #[test]
    fn the_final_offset_is_the_highest_acknowledged_or_a_higher_one_of_unknown_fate() {
        let mut client = client_with_member(1, vec![0]);
        let fates = [
            Fate::Committed,
            Fate::NotApplied,
            Fate::Unknown,
            Fate::Committed,
        ];
        for (offset, fate) in [(3, fates[0]), (4, fates[1]), (5, fates[2]), (6, fates[3])] {
            client.commits.push(CommitRecord {
                member: "m-1".to_string(),
                generation: 1,
                offsets: vec![(0, offset)],
                fate,
            });
        }
        client.commits.push(CommitRecord {
            member: "m-1".to_string(),
            generation: 1,
            offsets: vec![(0, 8)],
            fate: Fate::Unknown,
        });
        assert!(client.final_offset_fits(0, Some(6)).is_ok());
        assert!(
            client.final_offset_fits(0, Some(8)).is_ok(),
            "may have applied"
        );
        for wrong in [None, Some(3), Some(4), Some(5), Some(7)] {
            assert!(client.final_offset_fits(0, wrong).is_err(), "{wrong:?}");
        }
        // Nothing acknowledged: none, or an offset of unknown fate.
        assert!(client.final_offset_fits(1, None).is_ok());
        assert!(client.final_offset_fits(1, Some(1)).is_err());
    }

    #[test]
    fn offsets_only_grow_per_partition_whoever_commits() {
        let mut client = client_with_member(1, vec![0, 2]);
        client.members.insert(
            "m-2".to_string(),
            KnownMember {
                generation: 1,
                partitions: vec![0],
            },
        );
        let mut last = BTreeMap::new();
        for i in 0..50 {
            let member = if i % 2 == 0 { "m-1" } else { "m-2" };
            let Operation::Commit(index) = client.new_commit(member.to_string()) else {
                panic!("not a commit");
            };
            for &(partition, offset) in &client.commits[index].offsets {
                let before = last.insert(partition, offset).unwrap_or(0);
                assert!(
                    offset > before,
                    "partition {partition}: {before} then {offset}"
                );
            }
        }
    }

    #[test]
    fn a_stale_commit_must_be_refused_as_stale_and_never_acknowledged() {
        let mut client = client_with_member(2, vec![0]);
        client.newest_generation = 3;
        let sent = commit_sent(&mut client);
        let acknowledged = client.on_answer(sent.clone(), true, &group(GroupApplied::Committed));
        assert!(acknowledged.is_err(), "a fenced commit was applied");
        let stale = GroupApplied::Refused(GroupRefusal::StaleGeneration {
            group: GROUP_NAME.to_string(),
            sent: 2,
            current: 4,
        });
        assert_eq!(client.on_answer(sent, true, &group(stale)), Ok(false));
        assert_eq!((client.newest_generation, client.stale_refusals), (4, 1));
    }

    #[test]
    fn a_commit_at_the_known_generation_is_never_refused_as_not_assigned() {
        let mut client = client_with_member(2, vec![1]);
        let sent = commit_sent(&mut client);
        let refused = GroupApplied::Refused(GroupRefusal::NotAssigned {
            member: "m-1".to_string(),
            topic_id: 1,
            partition: 1,
        });
        assert!(client.on_answer(sent, true, &group(refused)).is_err());
    }

    #[test]
    fn a_known_member_is_never_unknown_and_generations_never_go_back() {
        let mut client = client_with_member(5, vec![0]);
        let again = Sent {
            operation: Operation::JoinAgain("m-1".to_string()),
            newest_generation: 5,
        };
        let unknown = GroupApplied::Refused(GroupRefusal::UnknownMember {
            group: GROUP_NAME.to_string(),
            member: "m-1".to_string(),
        });
        assert!(client
            .on_answer(again.clone(), true, &group(unknown))
            .is_err());
        let older = GroupApplied::Joined {
            member_id: "m-1".to_string(),
            generation: 4,
            assignment: vec![(1, 0)],
        };
        assert!(client.on_answer(again, true, &group(older)).is_err());
    }

    #[test]
    fn an_answer_without_a_verdict_leaves_a_commit_s_fate_unknown() {
        let mut client = client_with_member(1, vec![0]);
        let sent = commit_sent(&mut client);
        let index = match sent.operation {
            Operation::Commit(index) => index,
            _ => unreachable!(),
        };
        let moved = client.on_answer(sent.clone(), true, &Err(ShardError::Indeterminate));
        assert_eq!(
            (moved, client.commits[index].fate),
            (Ok(true), Fate::Unknown)
        );
        let moved = client.on_answer(sent, true, &Err(ShardError::NotLeader));
        assert_eq!(
            (moved, client.commits[index].fate),
            (Ok(true), Fate::NotApplied)
        );
    }
}
