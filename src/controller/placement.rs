//! Where replica groups run and what each holds: the one place that answers "which
//! group", "which nodes" and "which shard".
//!
//! The bootstrap placement (the only one today): a node runs `shards` shards, and group
//! *i* runs on shard *i* of every node of the cluster (all of them are its voters).
//! Partitions spread over the groups from a topic-dependent group; consumer groups are
//! coordinated by the group their name hashes to; each group prefers the (i mod N)-th
//! voter by id as leader. Callers never derive any of this themselves: they ask here,
//! so placement can become data without touching them.
//!
//! Pure; never changes after it is built.

use crate::broker::state::TopicInfo;
use crate::config::NodeConfig;
use crate::replication::preferred_leader_of;

/// A replica group's id. In the bootstrap placement it equals the index of the shard
/// that runs it on every node; nothing else may assume so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

/// The group holding the cluster's metadata (topics today).
pub const CONTROLLER_GROUP: GroupId = GroupId(0);

/// Where the groups of a cluster run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Groups (and shards per node).
    groups: u32,
    /// The nodes, sorted: every group's replicas.
    nodes: Vec<u64>,
}

impl Placement {
    /// The bootstrap placement of a cluster of `nodes` each running `shards` shards.
    pub fn bootstrap(shards: u32, nodes: &[u64]) -> Placement {
        assert!(shards > 0, "a node runs at least one shard");
        assert!(!nodes.is_empty(), "a cluster has at least one node");
        let mut nodes = nodes.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        Placement {
            groups: shards,
            nodes,
        }
    }

    /// The bootstrap placement of the cluster `config` belongs to (its `--peers`, or
    /// this node alone).
    pub fn of_config(config: &NodeConfig) -> Placement {
        Placement::bootstrap(config.shards, &config.voters())
    }

    /// How many groups there are.
    pub fn group_count(&self) -> u32 {
        self.groups
    }

    /// The group holding `partition` of `topic`: the one recorded when the topic was
    /// created, or for a topic that recorded none, the bootstrap spread (`spread`). A
    /// recorded group this placement does not have (a node restarted with fewer shards
    /// than its cluster was created with) reads as the spread too, as every partition did
    /// before groups were recorded, rather than stopping the node on its own metadata.
    pub fn group_of_partition(&self, topic: &TopicInfo, partition: u32) -> GroupId {
        match topic.groups.get(partition as usize) {
            Some(&group) if group < self.groups => GroupId(group),
            _ => self.spread(topic.id, partition),
        }
    }

    /// The groups a new topic's partitions are placed in, recorded in its creation
    /// (`TopicInfo::groups`): the bootstrap spread.
    pub fn groups_for_new_topic(&self, topic_id: u32, partitions: u32) -> Vec<u32> {
        (0..partitions)
            .map(|partition| self.spread(topic_id, partition).0)
            .collect()
    }

    /// The bootstrap spread: partitions over the groups, from a topic-dependent group so
    /// small topics do not all land on group 0.
    fn spread(&self, topic_id: u32, partition: u32) -> GroupId {
        GroupId(((u64::from(topic_id) + u64::from(partition)) % u64::from(self.groups)) as u32)
    }

    /// The group coordinating consumer group `name`.
    pub fn coordinator_of(&self, name: &str) -> GroupId {
        GroupId(coordinator_index(name, self.groups))
    }

    /// The nodes holding a replica of `group` (sorted by id).
    pub fn replicas(&self, group: GroupId) -> &[u64] {
        self.check(group);
        &self.nodes
    }

    /// The node that should lead `group` when the cluster balances leadership.
    pub fn preferred_leader(&self, group: GroupId) -> Option<u64> {
        preferred_leader_of(group.0, self.replicas(group))
    }

    /// The shard running `group` on `node`, if `node` holds a replica of it.
    pub fn shard_on(&self, node: u64, group: GroupId) -> Option<u32> {
        self.replicas(group).contains(&node).then_some(group.0)
    }

    /// The group shard `shard` of `node` runs, if any.
    pub fn group_on(&self, node: u64, shard: u32) -> Option<GroupId> {
        (shard < self.groups && self.nodes.contains(&node)).then_some(GroupId(shard))
    }

    fn check(&self, group: GroupId) {
        assert!(
            group.0 < self.groups,
            "group {} does not exist ({} groups)",
            group.0,
            self.groups
        );
    }
}

/// Which of `count` coordinator groups coordinates consumer group `name` (FNV-1a of the
/// name). Clients that know only the count use it directly.
pub fn coordinator_index(name: &str, count: u32) -> u32 {
    assert!(count > 0);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    (hash % u64::from(count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bootstrap placement: group i on shard i of every node, partitions spread
    /// from a topic-dependent group, coordinators by name hash, leaders spread.
    #[test]
    fn the_bootstrap_placement_runs_group_i_on_shard_i_of_every_node() {
        let placement = Placement::bootstrap(4, &[3, 1, 2]);
        assert_eq!(placement.group_count(), 4);
        for group in 0..4 {
            assert_eq!(placement.replicas(GroupId(group)), &[1, 2, 3]);
            for node in 1..=3 {
                assert_eq!(placement.shard_on(node, GroupId(group)), Some(group));
                assert_eq!(placement.group_on(node, group), Some(GroupId(group)));
            }
            assert_eq!(placement.shard_on(9, GroupId(group)), None);
        }
        assert_eq!(placement.group_on(1, 4), None);
        let unrecorded = topic(7, 4, Vec::new());
        let groups: Vec<u32> = (0..4)
            .map(|p| placement.group_of_partition(&unrecorded, p).0)
            .collect();
        assert_eq!(groups, vec![3, 0, 1, 2]);
        assert_eq!(placement.groups_for_new_topic(7, 4), vec![3, 0, 1, 2]);
        let leaders: Vec<_> = (0..4)
            .map(|g| placement.preferred_leader(GroupId(g)))
            .collect();
        assert_eq!(leaders, vec![Some(1), Some(2), Some(3), Some(1)]);
    }

    fn topic(id: u32, partitions: u32, groups: Vec<u32>) -> TopicInfo {
        TopicInfo {
            id,
            name: format!("t{id}"),
            partitions,
            groups,
        }
    }

    /// A topic's recorded groups are where its partitions are, whatever the spread
    /// would say: a cluster that gains groups never moves a partition; a recorded group
    /// the placement lacks reads as the spread.
    #[test]
    fn a_partition_stays_in_the_group_recorded_at_its_topic_s_creation() {
        let recorded = topic(7, 4, vec![0, 0, 2, 1]);
        let placement = Placement::bootstrap(4, &[1, 2, 3]);
        let groups: Vec<u32> = (0..4)
            .map(|p| placement.group_of_partition(&recorded, p).0)
            .collect();
        assert_eq!(groups, vec![0, 0, 2, 1]);
        let more_groups = Placement::bootstrap(6, &[1, 2, 3]);
        assert_eq!(more_groups.group_of_partition(&recorded, 2), GroupId(2));
        let fewer_groups = Placement::bootstrap(2, &[1, 2, 3]);
        assert_eq!(fewer_groups.group_of_partition(&recorded, 2), GroupId(1));
    }

    /// A consumer group's coordinator is stable and the names spread over the groups.
    #[test]
    fn coordinators_are_stable_and_spread() {
        let placement = Placement::bootstrap(4, &[1]);
        assert_eq!(
            placement.coordinator_of("orders"),
            placement.coordinator_of("orders")
        );
        let used: std::collections::BTreeSet<u32> = (0..64)
            .map(|i| placement.coordinator_of(&format!("g{i}")).0)
            .collect();
        assert_eq!(used.len(), 4, "64 names use every group");
        assert_eq!(
            placement.coordinator_of("orders").0,
            coordinator_index("orders", 4)
        );
    }

    /// Asking about a group that does not exist is a bug, caught where it happens.
    #[test]
    #[should_panic(expected = "group 4 does not exist")]
    fn a_group_beyond_the_placement_is_an_invariant_violation() {
        Placement::bootstrap(4, &[1, 2, 3]).replicas(GroupId(4));
    }
}
