//! Consumer groups as part of a replica group's applied state: each group's members, its
//! generation, which partitions each member consumes, and its committed offsets. The group
//! lives in its coordinator's replica group (`Placement::coordinator_of`); every change is an entry
//! of that group's log, applied here in log order, so every replica holds the same groups,
//! snapshots carry them, and a commit acknowledged with acks=quorum survives what the log
//! survives.
//!
//! The assignment is computed here, at apply, from the members and the log's topics
//! (broker-side assignment): a join or a leave moves the group to a new generation with a
//! new assignment in one step, and a member learns it from the join's answer or its next
//! heartbeat. A commit is checked at apply against the generation and assignment of that
//! moment, so a member fenced by a rebalance cannot commit even if its request was sent
//! before it. Whether a member is alive (heartbeats, session timeouts) is the coordinator
//! leader's business (`shard::group_sessions`): it proposes a leave for an expired member.
//!
//! Pure (no I/O, no clock); bounded by `MAX_CONSUMER_GROUPS`, `MAX_GROUP_MEMBERS` and
//! `MAX_COMMITTED_OFFSETS`.

use std::collections::{BTreeMap, BTreeSet};

use crate::constants::{MAX_COMMITTED_OFFSETS, MAX_CONSUMER_GROUPS, MAX_GROUP_MEMBERS};

/// How a group's members share its topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupMode {
    /// Each partition goes to one member; offsets are the group's.
    Clustering,
    /// Every member reads every partition and keeps its own offsets (under its instance).
    Broadcasting,
}

/// How partitions are dealt out in clustering mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AssignStrategy {
    /// Members keep what they had where the balance allows; new or freed partitions go
    /// to the least loaded members (the default).
    Sticky,
    /// Per topic, contiguous ranges of partitions to the members in id order.
    Range,
    /// All partitions in order, dealt to the members in turn.
    RoundRobin,
}

impl GroupMode {
    /// The byte in entries and snapshots.
    pub fn code(self) -> u8 {
        match self {
            GroupMode::Clustering => 0,
            GroupMode::Broadcasting => 1,
        }
    }

    /// From its byte.
    pub fn from_code(code: u8) -> Option<GroupMode> {
        match code {
            0 => Some(GroupMode::Clustering),
            1 => Some(GroupMode::Broadcasting),
            _ => None,
        }
    }
}

impl AssignStrategy {
    /// The byte in entries and snapshots.
    pub fn code(self) -> u8 {
        match self {
            AssignStrategy::Sticky => 0,
            AssignStrategy::Range => 1,
            AssignStrategy::RoundRobin => 2,
        }
    }

    /// From its byte.
    pub fn from_code(code: u8) -> Option<AssignStrategy> {
        match code {
            0 => Some(AssignStrategy::Sticky),
            1 => Some(AssignStrategy::Range),
            2 => Some(AssignStrategy::RoundRobin),
            _ => None,
        }
    }
}

/// A partition of a topic: (topic id, partition).
pub type TopicPartition = (u32, u32);

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The client's name (for `keel group describe`).
    pub client: String,
    /// Its stable instance name: the owner of its offsets in broadcasting mode.
    pub instance: String,
    /// Topic ids it subscribes to, sorted.
    pub topics: Vec<u32>,
    /// After this long without a heartbeat the coordinator removes it.
    pub session_timeout_ms: u32,
    /// The partitions it consumes in the current generation, sorted.
    pub assignment: Vec<TopicPartition>,
}

/// A committed offset: the next record to consume, and the application's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to consume.
    pub offset: u64,
    /// Free text the committer attached.
    pub metadata: String,
}

/// Whose offset: the group's (clustering, empty owner) or one instance's (broadcasting).
pub type OffsetKey = (String, u32, u32);

/// One consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Bumped by every change of members or subscriptions.
    pub generation: u64,
    /// Clustering or broadcasting.
    pub mode: GroupMode,
    /// How clustering deals partitions.
    pub strategy: AssignStrategy,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// Committed offsets.
    pub offsets: BTreeMap<OffsetKey, CommittedOffset>,
}

/// A join as applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join<'a> {
    /// The group.
    pub group: &'a str,
    /// The member's id, or empty for a new member (it gets one from the entry's index).
    pub member_id: &'a str,
    /// The client's name.
    pub client: &'a str,
    /// Its stable instance name (broadcasting offsets); empty: the member id.
    pub instance: &'a str,
    /// Mode the member asks for (a group keeps the mode it was created with).
    pub mode: GroupMode,
    /// Strategy the member asks for (the group keeps the one it was created with).
    pub strategy: AssignStrategy,
    /// Session timeout.
    pub session_timeout_ms: u32,
    /// Topic ids subscribed to.
    pub topics: Vec<u32>,
}

/// What a group change did, for the requester.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupApplied {
    /// The member is in the group at `generation` with `assignment`.
    Joined {
        /// Its id (new members learn theirs here).
        member_id: String,
        /// The group's generation.
        generation: u64,
        /// Its partitions.
        assignment: Vec<TopicPartition>,
    },
    /// The member left (or was removed); the group moved to `generation`.
    Left {
        /// The group's new generation.
        generation: u64,
    },
    /// The offsets were committed.
    Committed,
    /// The group was deleted.
    Deleted,
    /// Refused; nothing changed.
    Refused(GroupRefusal),
}

/// Why a group change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupRefusal {
    /// No such group.
    #[error("no consumer group {0:?}")]
    UnknownGroup(String),
    /// The member is not (or no longer) in the group: it joins again.
    #[error("member {member:?} is not in group {group:?} (removed after its session timeout, or left): join again")]
    UnknownMember {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// The member's generation is not the group's: a rebalance happened.
    #[error("generation {sent} is stale: group {group:?} is at generation {current} (a rebalance happened: take the new assignment)")]
    StaleGeneration {
        /// The group.
        group: String,
        /// The generation the request carried.
        sent: u64,
        /// The group's.
        current: u64,
    },
    /// A commit for a partition the member does not own in this generation.
    #[error("partition {partition} of topic id {topic_id} is not assigned to member {member:?}")]
    NotAssigned {
        /// The member.
        member: String,
        /// Topic id.
        topic_id: u32,
        /// Partition.
        partition: u32,
    },
    /// An admin change (reset, delete, a commit without membership) of a group that has
    /// members.
    #[error("group {group:?} has {members} member(s): stop them first")]
    NotEmpty {
        /// The group.
        group: String,
        /// How many.
        members: usize,
    },
    /// A bound was reached.
    #[error("{0}")]
    Full(&'static str),
}

/// Every consumer group of one replica group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerGroups {
    pub(crate) groups: BTreeMap<String, Group>,
    pub(crate) offset_count: usize,
}

impl ConsumerGroups {
    /// A group by name.
    pub fn get(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    /// Every group, by name.
    pub fn list(&self) -> impl Iterator<Item = (&String, &Group)> {
        self.groups.iter()
    }

    /// Committed offsets held, over all groups.
    pub fn offset_count(&self) -> usize {
        self.offset_count
    }

    /// Applies a join at log `index`: a new member gets the id `client-index`; the
    /// group moves to a new generation when its members or their subscriptions change.
    pub fn join(
        &mut self,
        index: u64,
        join: Join<'_>,
        partitions_of: &dyn Fn(u32) -> u32,
    ) -> GroupApplied {
        if let Some(refusal) = self.join_refusal(&join) {
            return GroupApplied::Refused(refusal);
        }
        let group = self
            .groups
            .entry(join.group.to_string())
            .or_insert_with(|| Group {
                generation: 0,
                mode: join.mode,
                strategy: join.strategy,
                members: BTreeMap::new(),
                offsets: BTreeMap::new(),
            });
        let member_id = if join.member_id.is_empty() {
            format!("{}-{index}", join.client)
        } else {
            join.member_id.to_string()
        };
        let mut topics = join.topics.clone();
        topics.sort_unstable();
        topics.dedup();
        let changed = match group.members.get_mut(&member_id) {
            Some(member) => {
                member.session_timeout_ms = join.session_timeout_ms;
                let changed = member.topics != topics;
                member.topics = topics;
                changed
            }
            None => {
                let instance = if join.instance.is_empty() {
                    member_id.clone()
                } else {
                    join.instance.to_string()
                };
                group.members.insert(
                    member_id.clone(),
                    Member {
                        client: join.client.to_string(),
                        instance,
                        topics,
                        session_timeout_ms: join.session_timeout_ms,
                        assignment: Vec::new(),
                    },
                );
                true
            }
        };
        if changed {
            group.rebalance(partitions_of);
        }
        let member = &group.members[&member_id];
        GroupApplied::Joined {
            assignment: member.assignment.clone(),
            member_id,
            generation: group.generation,
        }
    }

    /// Why a join is refused, decided before anything changes.
    fn join_refusal(&self, join: &Join<'_>) -> Option<GroupRefusal> {
        let Some(group) = self.groups.get(join.group) else {
            if self.groups.len() >= MAX_CONSUMER_GROUPS {
                return Some(GroupRefusal::Full(
                    "too many consumer groups on this shard (MAX_CONSUMER_GROUPS)",
                ));
            }
            return (!join.member_id.is_empty()).then(|| GroupRefusal::UnknownMember {
                group: join.group.to_string(),
                member: join.member_id.to_string(),
            });
        };
        if join.member_id.is_empty() {
            return (group.members.len() >= MAX_GROUP_MEMBERS).then_some(GroupRefusal::Full(
                "the group has MAX_GROUP_MEMBERS members",
            ));
        }
        (!group.members.contains_key(join.member_id)).then(|| GroupRefusal::UnknownMember {
            group: join.group.to_string(),
            member: join.member_id.to_string(),
        })
    }

    /// Applies a leave (or a removal after the session timeout). `generation`, when
    /// given, must still be the group's: a removal decided before a rebalance the member
    /// took part in again is void.
    pub fn leave(
        &mut self,
        group_name: &str,
        member_id: &str,
        generation: Option<u64>,
        partitions_of: &dyn Fn(u32) -> u32,
    ) -> GroupApplied {
        let Some(group) = self.groups.get_mut(group_name) else {
            return GroupApplied::Refused(GroupRefusal::UnknownGroup(group_name.to_string()));
        };
        if let Some(sent) = generation.filter(|&g| g != group.generation) {
            return GroupApplied::Refused(GroupRefusal::StaleGeneration {
                group: group_name.to_string(),
                sent,
                current: group.generation,
            });
        }
        if group.members.remove(member_id).is_none() {
            return GroupApplied::Refused(GroupRefusal::UnknownMember {
                group: group_name.to_string(),
                member: member_id.to_string(),
            });
        }
        group.rebalance(partitions_of);
        GroupApplied::Left {
            generation: group.generation,
        }
    }

    /// Applies a commit. A member commits at the group's generation, in clustering mode
    /// only partitions it owns; an empty member id commits for an empty group (tools,
    /// `keel group reset`), creating it.
    pub fn commit(
        &mut self,
        group_name: &str,
        member_id: &str,
        generation: u64,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> GroupApplied {
        let owner = match self.commit_owner(group_name, member_id, generation, offsets) {
            Ok(owner) => owner,
            Err(refusal) => return GroupApplied::Refused(refusal),
        };
        // Distinct partitions not committed before (one listed twice is one offset).
        let existing = self.groups.get(group_name).map(|g| &g.offsets);
        let new_keys = offsets
            .iter()
            .map(|((t, p), _)| (owner.clone(), *t, *p))
            .filter(|key| existing.is_none_or(|o| !o.contains_key(key)))
            .collect::<BTreeSet<_>>()
            .len();
        if self.offset_count + new_keys > MAX_COMMITTED_OFFSETS {
            return GroupApplied::Refused(GroupRefusal::Full(
                "this shard holds MAX_COMMITTED_OFFSETS committed offsets",
            ));
        }
        if !self.groups.contains_key(group_name) && self.groups.len() >= MAX_CONSUMER_GROUPS {
            return GroupApplied::Refused(GroupRefusal::Full(
                "too many consumer groups on this shard (MAX_CONSUMER_GROUPS)",
            ));
        }
        let group = self
            .groups
            .entry(group_name.to_string())
            .or_insert_with(|| Group {
                generation: 0,
                mode: GroupMode::Clustering,
                strategy: AssignStrategy::Sticky,
                members: BTreeMap::new(),
                offsets: BTreeMap::new(),
            });
        for ((topic, partition), committed) in offsets {
            group
                .offsets
                .insert((owner.clone(), *topic, *partition), committed.clone());
        }
        self.offset_count += new_keys;
        GroupApplied::Committed
    }

    /// Whose offsets a commit writes, or why it is refused.
    fn commit_owner(
        &self,
        group_name: &str,
        member_id: &str,
        generation: u64,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<String, GroupRefusal> {
        let group = self.groups.get(group_name);
        if member_id.is_empty() {
            return match group.map_or(0, |g| g.members.len()) {
                0 => Ok(String::new()),
                members => Err(GroupRefusal::NotEmpty {
                    group: group_name.to_string(),
                    members,
                }),
            };
        }
        let group = group.ok_or_else(|| GroupRefusal::UnknownGroup(group_name.to_string()))?;
        let member = group
            .members
            .get(member_id)
            .ok_or_else(|| GroupRefusal::UnknownMember {
                group: group_name.to_string(),
                member: member_id.to_string(),
            })?;
        if generation != group.generation {
            return Err(GroupRefusal::StaleGeneration {
                group: group_name.to_string(),
                sent: generation,
                current: group.generation,
            });
        }
        if let Some(((topic_id, partition), _)) = offsets
            .iter()
            .find(|(tp, _)| member.assignment.binary_search(tp).is_err())
        {
            return Err(GroupRefusal::NotAssigned {
                member: member_id.to_string(),
                topic_id: *topic_id,
                partition: *partition,
            });
        }
        Ok(match group.mode {
            GroupMode::Clustering => String::new(),
            GroupMode::Broadcasting => member.instance.clone(),
        })
    }

    /// Deletes an empty group and its offsets.
    pub fn delete(&mut self, group_name: &str) -> GroupApplied {
        let Some(group) = self.groups.get(group_name) else {
            return GroupApplied::Refused(GroupRefusal::UnknownGroup(group_name.to_string()));
        };
        if !group.members.is_empty() {
            return GroupApplied::Refused(GroupRefusal::NotEmpty {
                group: group_name.to_string(),
                members: group.members.len(),
            });
        }
        if let Some(group) = self.groups.remove(group_name) {
            self.offset_count -= group.offsets.len();
        }
        GroupApplied::Deleted
    }

    /// A topic was deleted: its offsets go, and groups subscribed to it rebalance.
    pub fn topic_deleted(&mut self, topic_id: u32, partitions_of: &dyn Fn(u32) -> u32) {
        for group in self.groups.values_mut() {
            let before = group.offsets.len();
            group.offsets.retain(|(_, topic, _), _| *topic != topic_id);
            self.offset_count -= before - group.offsets.len();
            if group.members.values().any(|m| m.topics.contains(&topic_id)) {
                group.rebalance(partitions_of);
            }
        }
    }

    /// A topic was created in this log: groups whose members subscribe to it rebalance
    /// (a member may subscribe, by the controller's list, before this log holds it).
    pub fn topic_created(&mut self, topic_id: u32, partitions_of: &dyn Fn(u32) -> u32) {
        for group in self.groups.values_mut() {
            if group.members.values().any(|m| m.topics.contains(&topic_id)) {
                group.rebalance(partitions_of);
            }
        }
    }

    /// Rebuilds the table from a snapshot's groups.
    pub(crate) fn from_groups(groups: BTreeMap<String, Group>) -> ConsumerGroups {
        let offset_count = groups.values().map(|g| g.offsets.len()).sum();
        ConsumerGroups {
            groups,
            offset_count,
        }
    }
}

impl Group {
    /// A new generation and its assignment.
    fn rebalance(&mut self, partitions_of: &dyn Fn(u32) -> u32) {
        self.generation += 1;
        let subscribed = |member: &Member| -> Vec<TopicPartition> {
            member
                .topics
                .iter()
                .flat_map(|&topic| (0..partitions_of(topic)).map(move |p| (topic, p)))
                .collect()
        };
        let assignment: BTreeMap<String, Vec<TopicPartition>> = match self.mode {
            GroupMode::Broadcasting => self
                .members
                .iter()
                .map(|(id, member)| (id.clone(), subscribed(member)))
                .collect(),
            GroupMode::Clustering => {
                let eligible: BTreeMap<&String, BTreeSet<TopicPartition>> = self
                    .members
                    .iter()
                    .map(|(id, member)| (id, subscribed(member).into_iter().collect()))
                    .collect();
                match self.strategy {
                    AssignStrategy::Range => assign_range(&eligible),
                    AssignStrategy::RoundRobin => assign_round_robin(&eligible),
                    AssignStrategy::Sticky => {
                        let previous = self
                            .members
                            .iter()
                            .map(|(id, m)| (id, m.assignment.as_slice()))
                            .collect();
                        assign_sticky(&eligible, &previous)
                    }
                }
            }
        };
        for (id, member) in self.members.iter_mut() {
            let mut mine = assignment.get(id).cloned().unwrap_or_default();
            mine.sort_unstable();
            member.assignment = mine;
        }
    }
}

/// Every partition some member may take, in order.
fn all_partitions(
    eligible: &BTreeMap<&String, BTreeSet<TopicPartition>>,
) -> BTreeSet<TopicPartition> {
    eligible.values().flatten().copied().collect()
}

/// Per topic, contiguous ranges to the members that subscribe to it (in id order); the
/// first members get one more when the count does not divide.
fn assign_range(
    eligible: &BTreeMap<&String, BTreeSet<TopicPartition>>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut result: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
    let mut by_topic: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (topic, partition) in all_partitions(eligible) {
        by_topic.entry(topic).or_default().push(partition);
    }
    for (topic, partitions) in by_topic {
        let members: Vec<&&String> = eligible
            .iter()
            .filter(|(_, set)| set.contains(&(topic, partitions[0])))
            .map(|(id, _)| id)
            .collect();
        let (each, extra) = (
            partitions.len() / members.len(),
            partitions.len() % members.len(),
        );
        let mut next = 0;
        for (i, member) in members.into_iter().enumerate() {
            let take = each + usize::from(i < extra);
            let mine = result.entry((**member).clone()).or_default();
            mine.extend(partitions[next..next + take].iter().map(|&p| (topic, p)));
            next += take;
        }
    }
    result
}

/// All partitions in order, each to the next member (in id order) that subscribes to it.
fn assign_round_robin(
    eligible: &BTreeMap<&String, BTreeSet<TopicPartition>>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut result: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
    let members: Vec<(&&String, &BTreeSet<TopicPartition>)> = eligible.iter().collect();
    let mut turn = 0;
    for tp in all_partitions(eligible) {
        for step in 0..members.len() {
            let (id, set) = members[(turn + step) % members.len()];
            if set.contains(&tp) {
                result.entry((**id).clone()).or_default().push(tp);
                turn = (turn + step + 1) % members.len();
                break;
            }
        }
    }
    result
}

/// Members keep the partitions they had (still subscribed, not taken twice) up to an
/// even share (rounded down); every other partition, in order, goes to a least loaded
/// member that may take it: its previous owner if that is one, else the lowest id. So
/// loads differ by at most one where subscriptions allow, and as few partitions move as
/// that permits.
fn assign_sticky(
    eligible: &BTreeMap<&String, BTreeSet<TopicPartition>>,
    previous: &BTreeMap<&String, &[TopicPartition]>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let all = all_partitions(eligible);
    let share = all.len() / eligible.len().max(1);
    let mut owner_before: BTreeMap<TopicPartition, &String> = BTreeMap::new();
    let mut owned: BTreeSet<TopicPartition> = BTreeSet::new();
    let mut result: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
    for (id, set) in eligible {
        let mine = result.entry((*id).clone()).or_default();
        for tp in previous.get(id).copied().unwrap_or(&[]) {
            owner_before.entry(*tp).or_insert(id);
            if mine.len() < share && set.contains(tp) && owned.insert(*tp) {
                mine.push(*tp);
            }
        }
    }
    for tp in all.difference(&owned) {
        let load = |id: &String| result.get(id).map_or(0, Vec::len);
        let candidates: Vec<&String> = eligible
            .iter()
            .filter(|(_, set)| set.contains(tp))
            .map(|(id, _)| *id)
            .collect();
        let Some(least) = candidates.iter().map(|id| load(id)).min() else {
            continue;
        };
        let before = owner_before.get(tp).copied();
        let taker = candidates
            .iter()
            .find(|id| Some(**id) == before && load(id) == least)
            .or_else(|| candidates.iter().find(|id| load(id) == least));
        if let Some(id) = taker {
            let id = (*id).clone();
            result.entry(id).or_default().push(*tp);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Topic 1 has 12 partitions, topic 2 has 4; others none.
    fn partitions_of(topic: u32) -> u32 {
        match topic {
            1 => 12,
            2 => 4,
            _ => 0,
        }
    }

    fn join<'a>(group: &'a str, member_id: &'a str, client: &'a str, topics: &[u32]) -> Join<'a> {
        Join {
            group,
            member_id,
            client,
            instance: "",
            mode: GroupMode::Clustering,
            strategy: AssignStrategy::Sticky,
            session_timeout_ms: 10_000,
            topics: topics.to_vec(),
        }
    }

    fn joined(applied: GroupApplied) -> (String, u64, Vec<TopicPartition>) {
        match applied {
            GroupApplied::Joined {
                member_id,
                generation,
                assignment,
            } => (member_id, generation, assignment),
            other => panic!("not joined: {other:?}"),
        }
    }

    fn assignments(groups: &ConsumerGroups, name: &str) -> BTreeMap<String, Vec<TopicPartition>> {
        groups.groups[name]
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.assignment.clone()))
            .collect()
    }

    /// Every subscribed partition has exactly one owner, and loads differ by at most one.
    fn check_clustering(groups: &ConsumerGroups, name: &str, expected_partitions: usize) {
        let all = assignments(groups, name);
        let mut seen = BTreeSet::new();
        for tps in all.values() {
            for tp in tps {
                assert!(seen.insert(*tp), "{tp:?} assigned twice: {all:?}");
            }
        }
        assert_eq!(seen.len(), expected_partitions, "{all:?}");
        let loads: Vec<usize> = all.values().map(Vec::len).collect();
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(max - min <= 1, "unbalanced: {all:?}");
    }

    #[test]
    fn members_get_ids_from_the_join_index_and_each_join_is_a_new_generation() {
        let mut groups = ConsumerGroups::default();
        let (a, g1, first) = joined(groups.join(7, join("g", "", "app", &[1]), &partitions_of));
        assert_eq!((a.as_str(), g1, first.len()), ("app-7", 1, 12));
        let (b, g2, _) = joined(groups.join(9, join("g", "", "app", &[1]), &partitions_of));
        assert_eq!((b.as_str(), g2), ("app-9", 2));
        check_clustering(&groups, "g", 12);
        // Joining again unchanged (a member after a coordinator change) keeps the
        // generation and the assignment.
        let before = assignments(&groups, "g");
        let (_, g3, _) = joined(groups.join(11, join("g", &a, "app", &[1]), &partitions_of));
        assert_eq!(g3, 2);
        assert_eq!(assignments(&groups, "g"), before);
    }

    #[test]
    fn a_leave_rebalances_and_sticky_moves_only_the_leaver_s_partitions() {
        let mut groups = ConsumerGroups::default();
        let ids: Vec<String> = (1..=3)
            .map(|i| joined(groups.join(i, join("g", "", "c", &[1]), &partitions_of)).0)
            .collect();
        check_clustering(&groups, "g", 12);
        let before = assignments(&groups, "g");
        let applied = groups.leave("g", &ids[1], None, &partitions_of);
        assert_eq!(applied, GroupApplied::Left { generation: 4 });
        check_clustering(&groups, "g", 12);
        let after = assignments(&groups, "g");
        for id in [&ids[0], &ids[2]] {
            for tp in &before[id] {
                assert!(
                    after[id].contains(tp),
                    "{id} lost {tp:?}: {before:?} -> {after:?}"
                );
            }
        }
    }

    #[test]
    fn range_and_round_robin_deal_every_partition_once_and_evenly() {
        for strategy in [
            AssignStrategy::Range,
            AssignStrategy::RoundRobin,
            AssignStrategy::Sticky,
        ] {
            for members in 1..=7 {
                let mut groups = ConsumerGroups::default();
                for i in 0..members {
                    let mut j = join("g", "", "c", &[1, 2]);
                    j.strategy = strategy;
                    groups.join(i + 1, j, &partitions_of);
                }
                if strategy == AssignStrategy::Range {
                    // Range balances per topic: 16 partitions, a topic at a time.
                    let all = assignments(&groups, "g");
                    let total: usize = all.values().map(Vec::len).sum();
                    assert_eq!(total, 16, "{strategy:?} {members}: {all:?}");
                } else {
                    check_clustering(&groups, "g", 16);
                }
            }
        }
    }

    #[test]
    fn a_member_only_gets_partitions_of_topics_it_subscribes_to() {
        let mut groups = ConsumerGroups::default();
        let (a, _, _) = joined(groups.join(1, join("g", "", "c", &[1]), &partitions_of));
        let (b, _, _) = joined(groups.join(2, join("g", "", "c", &[2]), &partitions_of));
        let all = assignments(&groups, "g");
        assert!(all[&a].iter().all(|(t, _)| *t == 1) && all[&a].len() == 12);
        assert!(all[&b].iter().all(|(t, _)| *t == 2) && all[&b].len() == 4);
    }

    #[test]
    fn broadcasting_gives_every_member_every_partition_and_its_own_offsets() {
        let mut groups = ConsumerGroups::default();
        let mut ids = Vec::new();
        for (i, instance) in ["host-a", "host-b"].iter().enumerate() {
            let mut j = join("b", "", "c", &[2]);
            j.mode = GroupMode::Broadcasting;
            j.instance = instance;
            ids.push(joined(groups.join(i as u64 + 1, j, &partitions_of)));
        }
        for (_, _, assignment) in &ids {
            assert_eq!(assignment.len(), 4);
        }
        let generation = groups.groups["b"].generation;
        for (k, (id, _, _)) in ids.iter().enumerate() {
            let offset = CommittedOffset {
                offset: 10 * (k as u64 + 1),
                metadata: String::new(),
            };
            let applied = groups.commit("b", id, generation, &[((2, 0), offset)]);
            assert_eq!(applied, GroupApplied::Committed);
        }
        let offsets = &groups.groups["b"].offsets;
        assert_eq!(offsets[&("host-a".to_string(), 2, 0)].offset, 10);
        assert_eq!(offsets[&("host-b".to_string(), 2, 0)].offset, 20);
    }

    #[test]
    fn commits_are_fenced_by_generation_membership_and_assignment() {
        let mut groups = ConsumerGroups::default();
        let (a, g1, mine) = joined(groups.join(1, join("g", "", "c", &[1]), &partitions_of));
        let offset = |o| CommittedOffset {
            offset: o,
            metadata: "m".into(),
        };
        assert_eq!(
            groups.commit("g", &a, g1, &[(mine[0], offset(5))]),
            GroupApplied::Committed
        );
        let (b, g2, _) = joined(groups.join(2, join("g", "", "c", &[1]), &partitions_of));
        let stale = groups.commit("g", &a, g1, &[(mine[0], offset(6))]);
        assert!(matches!(
            stale,
            GroupApplied::Refused(GroupRefusal::StaleGeneration {
                sent: 1,
                current: 2,
                ..
            })
        ));
        let theirs = assignments(&groups, "g")[&b][0];
        let not_mine = groups.commit("g", &a, g2, &[(theirs, offset(6))]);
        assert!(matches!(
            not_mine,
            GroupApplied::Refused(GroupRefusal::NotAssigned { .. })
        ));
        let unknown = groups.commit("g", "nobody", g2, &[(theirs, offset(6))]);
        assert!(matches!(
            unknown,
            GroupApplied::Refused(GroupRefusal::UnknownMember { .. })
        ));
        // A tool's commit (no member) is refused while the group has members.
        let tool = groups.commit("g", "", 0, &[(theirs, offset(0))]);
        assert!(matches!(
            tool,
            GroupApplied::Refused(GroupRefusal::NotEmpty { members: 2, .. })
        ));
        assert_eq!(
            groups.groups["g"].offsets[&(String::new(), mine[0].0, mine[0].1)].offset,
            5
        );
        assert_eq!(groups.offset_count(), 1);
    }

    #[test]
    fn a_removal_decided_before_a_rebalance_is_void() {
        let mut groups = ConsumerGroups::default();
        let (a, g1, _) = joined(groups.join(1, join("g", "", "c", &[1]), &partitions_of));
        joined(groups.join(2, join("g", "", "c", &[1]), &partitions_of));
        let late = groups.leave("g", &a, Some(g1), &partitions_of);
        assert!(matches!(
            late,
            GroupApplied::Refused(GroupRefusal::StaleGeneration { .. })
        ));
        assert!(groups.groups["g"].members.contains_key(&a));
    }

    #[test]
    fn deleting_a_topic_drops_its_offsets_and_rebalances_its_subscribers() {
        let mut groups = ConsumerGroups::default();
        let offset = CommittedOffset {
            offset: 3,
            metadata: String::new(),
        };
        groups.commit("g", "", 0, &[((1, 0), offset.clone()), ((2, 0), offset)]);
        assert_eq!(groups.offset_count(), 2);
        joined(groups.join(5, join("g", "", "c", &[1, 2]), &partitions_of));
        let generation = groups.groups["g"].generation;
        let without_1 = |t| if t == 1 { 0 } else { partitions_of(t) };
        groups.topic_deleted(1, &without_1);
        assert_eq!(groups.offset_count(), 1);
        let group = &groups.groups["g"];
        assert_eq!(group.generation, generation + 1);
        assert!(group
            .members
            .values()
            .all(|m| m.assignment.iter().all(|(t, _)| *t == 2)));
    }

    #[test]
    fn only_an_empty_group_is_deleted() {
        let mut groups = ConsumerGroups::default();
        let (a, _, _) = joined(groups.join(1, join("g", "", "c", &[1]), &partitions_of));
        assert!(matches!(
            groups.delete("g"),
            GroupApplied::Refused(GroupRefusal::NotEmpty { .. })
        ));
        groups.leave("g", &a, None, &partitions_of);
        assert_eq!(groups.delete("g"), GroupApplied::Deleted);
        assert!(groups.get("g").is_none());
        assert!(matches!(
            groups.delete("g"),
            GroupApplied::Refused(GroupRefusal::UnknownGroup(_))
        ));
    }

    /// A refused join changes nothing: no empty group is left behind (found by the
    /// simulator's group client).
    #[test]
    fn a_refused_join_leaves_no_group_behind() {
        let mut groups = ConsumerGroups::default();
        let refused = groups.join(1, join("g", "gone-1", "c", &[1]), &partitions_of);
        assert!(matches!(
            refused,
            GroupApplied::Refused(GroupRefusal::UnknownMember { .. })
        ));
        assert!(groups.get("g").is_none(), "{groups:?}");
    }

    /// A partition listed twice in one commit is one offset (the count is what a
    /// snapshot's restore recounts; found by the simulator's group client).
    #[test]
    fn a_partition_listed_twice_in_a_commit_counts_once() {
        let mut groups = ConsumerGroups::default();
        let offset = |o| CommittedOffset {
            offset: o,
            metadata: String::new(),
        };
        groups.commit("g", "", 0, &[((1, 0), offset(3)), ((1, 0), offset(4))]);
        assert_eq!(groups.offset_count(), 1);
        assert_eq!(groups.groups["g"].offsets[&(String::new(), 1, 0)].offset, 4);
        let restored = ConsumerGroups::from_groups(groups.groups.clone());
        assert_eq!(restored.offset_count(), groups.offset_count());
    }

    /// A member subscribed to a topic its replica group's log does not hold yet gets the
    /// topic's partitions when the log creates it (found by the simulator: a member that
    /// joined first kept an empty assignment through its joins again).
    #[test]
    fn a_topic_created_after_the_join_is_assigned_to_its_subscribers() {
        let mut groups = ConsumerGroups::default();
        let (_, generation, assignment) =
            joined(groups.join(1, join("g", "", "c", &[9]), &partitions_of));
        assert!(assignment.is_empty());
        groups.topic_created(9, &|t| if t == 9 { 3 } else { 0 });
        let member = groups.groups["g"].members.values().next().unwrap();
        assert_eq!(member.assignment, vec![(9, 0), (9, 1), (9, 2)]);
        assert_eq!(groups.groups["g"].generation, generation + 1);
    }
}
