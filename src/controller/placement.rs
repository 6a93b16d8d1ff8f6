//! Where replica groups run and what each holds: the one place that answers "which
//! group", "which nodes" and "which shard".
//!
//! The bootstrap placement, computed alike by every node from `--peers`, `shards` and
//! `replication_factor`:
//! - A cluster no larger than the replication factor keeps every group on every node:
//!   `shards` groups, group *i* on shard *i* of each node, all of them voters.
//! - A larger cluster spreads out: the controller group 0 runs on shard 0 of every node,
//!   its voters the `CONTROLLER_VOTERS` (or replication-factor, if larger) lowest node
//!   ids and every other node a learner (so every node learns the metadata from its own
//!   replica); it holds no partitions. The data groups, enough to give each shard about
//!   one (`nodes × shards / replication_factor`, at least `shards`), each go on
//!   `replication_factor` nodes, at the least loaded shards (`placer::place`).
//!
//! Partitions spread over the data groups from a topic-dependent group; consumer groups
//! are coordinated by the data group their name hashes to; each group prefers the
//! (i mod N)-th voter by id as leader. Callers never derive any of this themselves: they
//! ask here, so placement can become data without touching them.
//!
//! It also holds the node directory: every node of the cluster (those of `--peers` and
//! those that joined since, `with_joined`) and where each listens. A node that joined
//! is a learner of the controller group on its shard 0 (it learns the metadata from its
//! own replica) until replicas are moved to it.
//!
//! Pure; never changes after it is built.

use std::collections::{BTreeMap, BTreeSet};

use crate::broker::replica_moves::{NodeService, ReplicaMoves};
use crate::broker::state::{PlacedGroup, TopicInfo};
use crate::config::{NodeConfig, PeerAddress};
use crate::controller::placer::{self, GroupSlots, NodeSlots, NodeState, PlaceError, Slot};
use crate::replication::preferred_leader_of;

/// A replica group's id. In a cluster no larger than its replication factor it equals
/// the index of the shard that runs it on every node; nothing else may assume so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

/// The group holding the cluster's metadata (topics today).
pub const CONTROLLER_GROUP: GroupId = GroupId(0);

/// Voters of the controller group in a cluster larger than its replication factor (more
/// when the replication factor is larger): its other nodes follow it as learners.
pub const CONTROLLER_VOTERS: usize = 3;

/// Where one group's replicas run.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupPlace {
    /// Its voters, sorted.
    voters: Vec<u64>,
    /// Its learners (replicas that vote on nothing), sorted.
    learners: Vec<u64>,
    /// The shard running it on each of its nodes.
    shard_of: BTreeMap<u64, u32>,
    /// The voter that should lead it.
    preferred_leader: u64,
}

impl GroupPlace {
    /// The group as the placer sees it; `left` never take it again.
    fn slots(&self, left: Vec<u64>) -> GroupSlots {
        GroupSlots {
            replicas: self
                .shard_of
                .iter()
                .map(|(&node, &shard)| Slot { node, shard })
                .collect(),
            preferred_leader: self.preferred_leader,
            left,
            fixed: false,
        }
    }
}

/// A change a rebalance plan asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlannedChange {
    /// Move `group`'s replica from one slot to another.
    Replica {
        /// The group.
        group: u32,
        /// Where its replica is.
        from: Slot,
        /// Where it goes.
        to: Slot,
    },
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

/// Where the groups of a cluster run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Shards per node.
    shards: u32,
    /// Each node's rack, when the operator gave one.
    racks: BTreeMap<u64, String>,
    /// Every group, by id.
    groups: BTreeMap<u32, GroupPlace>,
    /// The groups partitions and consumer groups are spread over.
    data_groups: Vec<GroupId>,
    /// Every node of the cluster: the bootstrap's and those that joined.
    nodes: BTreeSet<u64>,
    /// Where each node listens, when known (from `--peers` or its join).
    addresses: BTreeMap<u64, PeerAddress>,
    /// The nodes that joined after the bootstrap.
    joined: BTreeSet<u64>,
    /// The nodes `keel node remove` took out: clients are not sent to them.
    removed: BTreeSet<u64>,
}

impl Placement {
    /// The bootstrap placement of a cluster of `nodes` each running `shards` shards,
    /// with `replication_factor` replicas per data group (fewer when there are fewer
    /// nodes).
    pub fn bootstrap(shards: u32, nodes: &[u64], replication_factor: u32) -> Placement {
        Placement::bootstrap_in_racks(shards, nodes, &BTreeMap::new(), replication_factor)
    }

    /// The same, the nodes of `racks` in their racks: no two replicas of a group on one
    /// rack while enough racks remain (the controller's voters too).
    pub fn bootstrap_in_racks(
        shards: u32,
        nodes: &[u64],
        racks: &BTreeMap<u64, String>,
        replication_factor: u32,
    ) -> Placement {
        assert!(shards > 0, "a node runs at least one shard");
        assert!(!nodes.is_empty(), "a cluster has at least one node");
        assert!(replication_factor > 0, "a group has at least one replica");
        let mut nodes = nodes.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        let factor = (replication_factor as usize).min(nodes.len());
        let mut placement = if factor == nodes.len() {
            Placement::everywhere(shards, &nodes)
        } else {
            Placement::spread_out(shards, &nodes, racks, factor)
        };
        placement.racks = racks.clone();
        placement.nodes = nodes.iter().copied().collect();
        placement
    }

    /// The nodes as the placer sees them, all active, each in its rack.
    fn node_slots(shards: u32, nodes: &[u64], racks: &BTreeMap<u64, String>) -> Vec<NodeSlots> {
        nodes
            .iter()
            .map(|&id| NodeSlots {
                id,
                shards,
                rack: racks.get(&id).cloned(),
                state: NodeState::Active,
            })
            .collect()
    }

    /// Every group on every node: group i on shard i.
    fn everywhere(shards: u32, nodes: &[u64]) -> Placement {
        let groups = (0..shards)
            .map(|shard| {
                let place = GroupPlace {
                    voters: nodes.to_vec(),
                    learners: Vec::new(),
                    shard_of: nodes.iter().map(|&node| (node, shard)).collect(),
                    preferred_leader: preferred_leader_of(shard, nodes).unwrap_or(nodes[0]),
                };
                (shard, place)
            })
            .collect();
        Placement {
            shards,
            racks: BTreeMap::new(),
            groups,
            data_groups: (0..shards).map(GroupId).collect(),
            nodes: BTreeSet::new(),
            addresses: BTreeMap::new(),
            joined: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }

    /// The controller on shard 0 of every node (its voters the lowest ids, one per rack
    /// while racks remain); data groups of `factor` replicas each.
    fn spread_out(
        shards: u32,
        nodes: &[u64],
        racks: &BTreeMap<u64, String>,
        factor: usize,
    ) -> Placement {
        let slots = Placement::node_slots(shards, nodes, racks);
        let controller_voters = factor.max(CONTROLLER_VOTERS).min(nodes.len());
        let mut voters: Vec<u64> = placer::place(&slots, &[], controller_voters)
            .expect("no more controller voters than nodes")
            .replicas
            .iter()
            .map(|slot| slot.node)
            .collect();
        voters.sort_unstable();
        let controller = GroupPlace {
            learners: nodes
                .iter()
                .copied()
                .filter(|n| !voters.contains(n))
                .collect(),
            shard_of: nodes.iter().map(|&node| (node, 0)).collect(),
            preferred_leader: voters[0],
            voters,
        };
        let mut placed = vec![GroupSlots {
            replicas: nodes.iter().map(|&node| Slot { node, shard: 0 }).collect(),
            preferred_leader: controller.preferred_leader,
            left: Vec::new(),
            fixed: true,
        }];
        let data_count = (nodes.len() * shards as usize)
            .div_ceil(factor)
            .max(shards as usize);
        let mut groups = BTreeMap::from([(CONTROLLER_GROUP.0, controller)]);
        for id in 1..=data_count as u32 {
            let slots = placer::place(&slots, &placed, factor)
                .expect("a replication factor no larger than the nodes is placed");
            let mut voters: Vec<u64> = slots.replicas.iter().map(|s| s.node).collect();
            voters.sort_unstable();
            let place = GroupPlace {
                voters,
                learners: Vec::new(),
                shard_of: slots.replicas.iter().map(|s| (s.node, s.shard)).collect(),
                preferred_leader: slots.preferred_leader,
            };
            groups.insert(id, place);
            placed.push(slots);
        }
        Placement {
            shards,
            racks: racks.clone(),
            groups,
            data_groups: (1..=data_count as u32).map(GroupId).collect(),
            nodes: BTreeSet::new(),
            addresses: BTreeMap::new(),
            joined: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }

    /// The bootstrap placement of the cluster `config` belongs to (its `--peers`, or
    /// this node alone).
    pub fn of_config(config: &NodeConfig) -> Placement {
        let mut placement = Placement::bootstrap_in_racks(
            config.shards,
            &config.voters(),
            &config.racks(),
            config.replication_factor,
        );
        let this_node = PeerAddress {
            node_id: config.node_id,
            host: config.host.clone(),
            base_port: config.base_port,
            peer_port: u16::try_from(config.peer_base_port()).unwrap_or(0),
            rack: config.rack.clone(),
        };
        let addresses = if config.peers.is_empty() {
            vec![this_node.clone()]
        } else {
            config.peers.clone()
        };
        placement.addresses = addresses
            .into_iter()
            .map(|address| (u64::from(address.node_id), address))
            .collect();
        if config.joined.is_some() {
            // This node joined after the bootstrap: it knows itself before the
            // controller's topics tell it so.
            placement = placement.with_joined(std::iter::once(&this_node));
        }
        placement
    }

    /// With the nodes that joined the cluster after its bootstrap: each in the node
    /// directory (with its rack) and a learner of the controller group on its shard 0.
    /// A node of the bootstrap named again keeps its place.
    pub fn with_joined<'a>(mut self, joined: impl Iterator<Item = &'a PeerAddress>) -> Self {
        for address in joined {
            let node = u64::from(address.node_id);
            if self.nodes.contains(&node) && !self.joined.contains(&node) {
                continue; // a bootstrap node keeps the place and address it has
            }
            self.joined.insert(node);
            if let Some(rack) = &address.rack {
                self.racks.insert(node, rack.clone());
            }
            self.nodes.insert(node);
            self.addresses.insert(node, address.clone());
            if let Some(controller) = self.groups.get_mut(&CONTROLLER_GROUP.0) {
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    controller.shard_of.entry(node)
                {
                    slot.insert(0);
                    controller.learners.push(node);
                    controller.learners.sort_unstable();
                }
            }
        }
        self
    }

    /// Every node of the cluster, in id order: the bootstrap's and those that joined.
    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().copied().collect()
    }

    /// Whether `keel node remove` took `node` out of the cluster.
    pub fn is_removed(&self, node: u64) -> bool {
        self.removed.contains(&node)
    }

    /// Whether `node` joined after the bootstrap.
    pub fn is_joined(&self, node: u64) -> bool {
        self.joined.contains(&node)
    }

    /// Where `node` listens, if known.
    pub fn address_of(&self, node: u64) -> Option<&PeerAddress> {
        self.addresses.get(&node)
    }

    /// The peer port address of shard `shard` of `node`, if its address is known.
    pub fn peer_link_address(&self, node: u64, shard: u32) -> Option<String> {
        let address = self.addresses.get(&node)?;
        Some(format!(
            "{}:{}",
            address.host,
            u32::from(address.peer_port) + shard
        ))
    }

    /// The client address of shard `shard` of `node`, if its address is known.
    pub fn client_address(&self, node: u64, shard: u32) -> Option<String> {
        let address = self.addresses.get(&node)?;
        Some(format!(
            "{}:{}",
            address.host,
            u32::from(address.base_port) + shard
        ))
    }

    /// The shards every node runs.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// How many groups there are.
    pub fn group_count(&self) -> u32 {
        self.groups.len() as u32
    }

    /// Every group's id, in order.
    pub fn group_ids(&self) -> Vec<GroupId> {
        self.groups.keys().map(|&id| GroupId(id)).collect()
    }

    /// Adds the groups topic creations placed (`Topics::placed_groups`), all of their
    /// replicas voters; a group already known keeps its place.
    pub fn with_placed<'a>(mut self, placed: impl Iterator<Item = &'a PlacedGroup>) -> Self {
        for group in placed {
            let mut voters: Vec<u64> = group.replicas.iter().map(|&(node, _)| node).collect();
            voters.sort_unstable();
            voters.dedup();
            let preferred_leader = preferred_leader_of(group.id, &voters).unwrap_or(0);
            self.groups.entry(group.id).or_insert_with(|| GroupPlace {
                voters,
                learners: Vec::new(),
                shard_of: group.replicas.iter().copied().collect(),
                preferred_leader,
            });
        }
        self
    }

    /// With the replica moves the controller recorded: a group a finished move changed
    /// runs on its new replicas, and a move under way adds its new replica as a learner
    /// (on the node and shard it goes to).
    pub fn with_moves(mut self, moves: &ReplicaMoves) -> Self {
        for (group, replicas) in moves.replaced() {
            let Some(place) = self.groups.get_mut(&group) else {
                continue;
            };
            let mut voters: Vec<u64> = replicas.iter().map(|&(node, _)| node).collect();
            voters.sort_unstable();
            voters.dedup();
            if group == CONTROLLER_GROUP.0 {
                // Its vote moved: every replica stays, those without a vote as learners.
                place.learners = place
                    .shard_of
                    .keys()
                    .copied()
                    .filter(|node| !voters.contains(node))
                    .collect();
                if !voters.contains(&place.preferred_leader) {
                    place.preferred_leader = preferred_leader_of(group, &voters).unwrap_or(0);
                }
                place.voters = voters;
                continue;
            }
            place.learners.retain(|node| !voters.contains(node));
            let learners = place.learners.clone();
            let mut shard_of: BTreeMap<u64, u32> = replicas.iter().copied().collect();
            for learner in &learners {
                if let Some(&shard) = place.shard_of.get(learner) {
                    shard_of.insert(*learner, shard);
                }
            }
            place.shard_of = shard_of;
            if !voters.contains(&place.preferred_leader) {
                place.preferred_leader = preferred_leader_of(group, &voters).unwrap_or(0);
            }
            place.voters = voters;
        }
        for (group, node) in moves.preferred_leaders() {
            if let Some(place) = self.groups.get_mut(&group) {
                if place.voters.contains(&node) {
                    place.preferred_leader = node;
                }
            }
        }
        if let Some(controller) = self.groups.get_mut(&CONTROLLER_GROUP.0) {
            // A removed node's controller replica left (`keel node remove`).
            for (node, state) in moves.inactive_nodes() {
                if state == NodeService::Removed {
                    self.removed.insert(node);
                }
                if state == NodeService::Removed && !controller.voters.contains(&node) {
                    controller.learners.retain(|&n| n != node);
                    controller.shard_of.remove(&node);
                }
            }
        }
        for moving in moves.all_under_way() {
            let Some(place) = self.groups.get_mut(&moving.group) else {
                continue;
            };
            let (node, shard) = moving.to;
            if place.shard_of.contains_key(&node) {
                continue;
            }
            place.shard_of.insert(node, shard);
            place.learners.push(node);
            place.learners.sort_unstable();
        }
        self
    }

    /// The id a newly placed group gets: above every group's, and at least `reserved`
    /// (ids never reused, even when two placements race before either is applied).
    pub fn next_group_id(&self, reserved: u32) -> u32 {
        let above = self.groups.keys().next_back().map_or(0, |&id| id + 1);
        above.max(reserved)
    }

    /// Places a new group of `replication_factor` replicas on the nodes of `nodes` (each
    /// running this placement's shards), counting the load of every group placed.
    pub fn place_new_group(
        &self,
        id: u32,
        nodes: &[u64],
        replication_factor: usize,
    ) -> Result<PlacedGroup, PlaceError> {
        let slots = Placement::node_slots(self.shards, nodes, &self.racks);
        let existing: Vec<GroupSlots> = self
            .groups
            .values()
            .map(|place| place.slots(Vec::new()))
            .collect();
        let placed = placer::place(&slots, &existing, replication_factor)?;
        Ok(PlacedGroup {
            id,
            replicas: placed.replicas.iter().map(|s| (s.node, s.shard)).collect(),
        })
    }

    /// The replica moves that take every data group's replicas off the `draining` nodes,
    /// then even out replicas over the others (`placer::plan_moves`), at most `limit`:
    /// (group, from, to). The controller group and the groups in `busy` (a move under
    /// way) stay as they are; `left(group)` names the nodes that never take it again.
    pub fn plan_replica_moves(
        &self,
        (nodes, draining): (&[u64], &[u64]),
        left: impl Fn(u32) -> Vec<u64>,
        busy: &[u32],
        limit: usize,
    ) -> Vec<PlannedChange> {
        let mut slots = Placement::node_slots(self.shards, nodes, &self.racks);
        for node in &mut slots {
            if draining.contains(&node.id) {
                node.state = NodeState::Draining;
            }
        }
        // Every group counts in the load; the controller group and the groups with a
        // move under way (a learner) stay where they are.
        let ids: Vec<u32> = self.groups.keys().copied().collect();
        let groups: Vec<GroupSlots> = self
            .groups
            .iter()
            .map(|(&id, place)| GroupSlots {
                fixed: id == CONTROLLER_GROUP.0 || busy.contains(&id) || !place.learners.is_empty(),
                ..place.slots(left(id))
            })
            .collect();
        let mut changes = self.controller_votes_off(draining, nodes, busy);
        changes.truncate(limit);
        let data = placer::plan_moves(&slots, &groups, limit - changes.len())
            .into_iter()
            .map(|planned| match planned {
                placer::Move::Replica { group, from, to } => PlannedChange::Replica {
                    group: ids[group],
                    from,
                    to,
                },
                placer::Move::Leader { group, to } => PlannedChange::Leader {
                    group: ids[group],
                    from: groups[group].preferred_leader,
                    to,
                },
            });
        changes.extend(data);
        changes
    }

    /// The controller group's votes held by `draining` nodes, each moved to an active
    /// learner of it (every node holds a controller replica): one on a rack no other voter
    /// is on first (while there is one), then the one holding the fewest replicas. None
    /// while a move of the controller group is under way.
    fn controller_votes_off(
        &self,
        draining: &[u64],
        nodes: &[u64],
        busy: &[u32],
    ) -> Vec<PlannedChange> {
        let Some(controller) = self.groups.get(&CONTROLLER_GROUP.0) else {
            return Vec::new();
        };
        if busy.contains(&CONTROLLER_GROUP.0) {
            return Vec::new();
        }
        let held = |node: u64| {
            self.groups
                .values()
                .filter(|place| place.voters.contains(&node))
                .count()
        };
        let mut voters = controller.voters.clone();
        let mut changes = Vec::new();
        for &from in controller.voters.iter().filter(|v| draining.contains(v)) {
            let staying: Vec<u64> = voters
                .iter()
                .copied()
                .filter(|v| *v != from && !draining.contains(v))
                .collect();
            let shares_a_rack = |node: u64| {
                self.racks.get(&node).is_some_and(|rack| {
                    staying
                        .iter()
                        .any(|voter| self.racks.get(voter) == Some(rack))
                })
            };
            let to = controller
                .learners
                .iter()
                .copied()
                .filter(|n| nodes.contains(n) && !draining.contains(n) && !voters.contains(n))
                .min_by_key(|&n| (shares_a_rack(n), held(n), n));
            let Some(to) = to else {
                continue;
            };
            voters.retain(|&v| v != from);
            voters.push(to);
            changes.push(PlannedChange::Replica {
                group: CONTROLLER_GROUP.0,
                from: Slot {
                    node: from,
                    shard: 0,
                },
                to: Slot { node: to, shard: 0 },
            });
        }
        changes
    }

    /// The group holding `partition` of `topic`: the one recorded when the topic was
    /// created, or for a topic that recorded none, the bootstrap spread (`spread`). A
    /// recorded group this placement does not have (a node restarted with fewer shards
    /// than its cluster was created with) reads as the spread too, as every partition did
    /// before groups were recorded, rather than stopping the node on its own metadata.
    pub fn group_of_partition(&self, topic: &TopicInfo, partition: u32) -> GroupId {
        match topic.groups.get(partition as usize) {
            Some(&group) if self.contains(GroupId(group)) => GroupId(group),
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

    /// The bootstrap spread: partitions over the data groups, from a topic-dependent
    /// group so small topics do not all land on the first.
    fn spread(&self, topic_id: u32, partition: u32) -> GroupId {
        let count = self.data_groups.len() as u64;
        self.data_groups[((u64::from(topic_id) + u64::from(partition)) % count) as usize]
    }

    /// The group coordinating consumer group `name`.
    pub fn coordinator_of(&self, name: &str) -> GroupId {
        self.data_groups[coordinator_index(name, self.data_groups.len() as u32) as usize]
    }

    /// The voters of `group` (sorted by id).
    pub fn replicas(&self, group: GroupId) -> &[u64] {
        &self.place(group).voters
    }

    /// Every node holding a replica of `group`, voters and learners (sorted by id).
    pub fn members(&self, group: GroupId) -> Vec<u64> {
        let place = self.place(group);
        let mut members: Vec<u64> = place.shard_of.keys().copied().collect();
        members.sort_unstable();
        debug_assert_eq!(members.len(), place.voters.len() + place.learners.len());
        members
    }

    /// The learners of `group` (sorted by id).
    pub fn learners(&self, group: GroupId) -> &[u64] {
        &self.place(group).learners
    }

    /// The node that should lead `group` when the cluster balances leadership: in a
    /// cluster that spreads out, the placer's choice (leaderships even over the nodes),
    /// else the (group mod N)-th voter by id.
    pub fn preferred_leader(&self, group: GroupId) -> Option<u64> {
        let place = self.place(group);
        Some(place.preferred_leader).filter(|leader| place.voters.contains(leader))
    }

    /// The shard running `group` on `node`, if `node` holds a replica of it.
    pub fn shard_on(&self, node: u64, group: GroupId) -> Option<u32> {
        self.place(group).shard_of.get(&node).copied()
    }

    /// The groups shard `shard` of `node` runs (none, one or several), in id order.
    pub fn groups_on(&self, node: u64, shard: u32) -> Vec<GroupId> {
        self.group_ids()
            .into_iter()
            .filter(|&group| self.shard_on(node, group) == Some(shard))
            .collect()
    }

    /// Whether `group` exists.
    pub fn contains(&self, group: GroupId) -> bool {
        self.groups.contains_key(&group.0)
    }

    fn place(&self, group: GroupId) -> &GroupPlace {
        self.groups.get(&group.0).unwrap_or_else(|| {
            panic!(
                "group {} does not exist ({} groups)",
                group.0,
                self.groups.len()
            )
        })
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
        let placement = Placement::bootstrap(4, &[3, 1, 2], 3);
        assert_eq!(placement.group_count(), 4);
        for group in 0..4 {
            assert_eq!(placement.replicas(GroupId(group)), &[1, 2, 3]);
            for node in 1..=3 {
                assert_eq!(placement.shard_on(node, GroupId(group)), Some(group));
                assert_eq!(placement.groups_on(node, group), vec![GroupId(group)]);
            }
            assert_eq!(placement.shard_on(9, GroupId(group)), None);
        }
        assert!(placement.groups_on(1, 4).is_empty());
        assert!(placement.groups_on(9, 0).is_empty());
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
        let placement = Placement::bootstrap(4, &[1, 2, 3], 3);
        let groups: Vec<u32> = (0..4)
            .map(|p| placement.group_of_partition(&recorded, p).0)
            .collect();
        assert_eq!(groups, vec![0, 0, 2, 1]);
        let more_groups = Placement::bootstrap(6, &[1, 2, 3], 3);
        assert_eq!(more_groups.group_of_partition(&recorded, 2), GroupId(2));
        let fewer_groups = Placement::bootstrap(2, &[1, 2, 3], 3);
        assert_eq!(fewer_groups.group_of_partition(&recorded, 2), GroupId(1));
    }

    /// A consumer group's coordinator is stable and the names spread over the groups.
    #[test]
    fn coordinators_are_stable_and_spread() {
        let placement = Placement::bootstrap(4, &[1], 3);
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

    /// A cluster larger than its replication factor spreads out: the controller on
    /// shard 0 of every node (three voters, the rest learners, no partitions), data
    /// groups of three replicas each, about one per shard, every shard running one, no
    /// node holding two replicas of a group; every node computes the same placement.
    #[test]
    fn a_cluster_larger_than_its_replication_factor_spreads_its_groups_out() {
        let nodes = [6, 5, 4, 3, 2, 1];
        let placement = Placement::bootstrap(2, &nodes, 3);
        assert_eq!(placement, Placement::bootstrap(2, &[1, 2, 3, 4, 5, 6], 3));
        assert_eq!(
            placement.group_count(),
            5,
            "the controller and 6 x 2 / 3 data groups"
        );
        assert_eq!(placement.replicas(CONTROLLER_GROUP), &[1, 2, 3]);
        assert_eq!(placement.learners(CONTROLLER_GROUP), &[4, 5, 6]);
        assert_eq!(placement.members(CONTROLLER_GROUP), vec![1, 2, 3, 4, 5, 6]);
        let mut per_shard = BTreeMap::new();
        for group in 1..5 {
            let voters = placement.replicas(GroupId(group));
            assert_eq!(voters.len(), 3, "group {group}: {voters:?}");
            assert!(placement.learners(GroupId(group)).is_empty());
            for &node in voters {
                let shard = placement.shard_on(node, GroupId(group)).unwrap();
                *per_shard.entry((node, shard)).or_insert(0) += 1;
            }
        }
        assert_eq!(
            per_shard.len(),
            12,
            "every shard runs a data group: {per_shard:?}"
        );
        assert!(per_shard.values().all(|&count| count == 1));
        for node in 1..=6 {
            assert_eq!(placement.groups_on(node, 0)[0], CONTROLLER_GROUP);
        }
        let topic = topic(7, 40, Vec::new());
        let used: std::collections::BTreeSet<u32> = (0..40)
            .map(|p| placement.group_of_partition(&topic, p).0)
            .collect();
        assert_eq!(
            used,
            (1..5).collect(),
            "partitions go to the data groups only"
        );
        let coordinators: std::collections::BTreeSet<u32> = (0..64)
            .map(|i| placement.coordinator_of(&format!("g{i}")).0)
            .collect();
        assert_eq!(coordinators, (1..5).collect());
    }

    /// Preferred leaderships spread evenly over the nodes of a cluster that spreads
    /// out: every node within one of the average, each leader one of its group's voters.
    #[test]
    fn preferred_leaders_spread_evenly_over_the_nodes() {
        for (nodes, shards) in [(6u64, 2u32), (6, 1), (9, 3), (4, 4), (12, 2)] {
            let ids: Vec<u64> = (1..=nodes).collect();
            let placement = Placement::bootstrap(shards, &ids, 3);
            let mut leads = BTreeMap::new();
            for group in placement.group_ids() {
                let leader = placement.preferred_leader(group).unwrap();
                assert!(placement.replicas(group).contains(&leader));
                *leads.entry(leader).or_insert(0u32) += 1;
            }
            let counts: Vec<u32> = ids
                .iter()
                .map(|n| leads.get(n).copied().unwrap_or(0))
                .collect();
            let (low, high) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(
                high - low <= 1,
                "{nodes} nodes x {shards}: leaderships {counts:?}"
            );
        }
    }

    /// Nodes in racks: every group's replicas (the controller's voters too, and a group
    /// placed later) on distinct racks while there are enough of them.
    #[test]
    fn replicas_of_a_group_go_to_distinct_racks() {
        let nodes: Vec<u64> = (1..=6).collect();
        // Racks a, a, b, b, c, c: the lowest ids alone would put two voters in rack a.
        let racks: BTreeMap<u64, String> = nodes
            .iter()
            .map(|&n| (n, ["a", "b", "c"][((n - 1) / 2) as usize].to_string()))
            .collect();
        let placement = Placement::bootstrap_in_racks(2, &nodes, &racks, 3);
        let racks_of = |voters: &[u64]| -> std::collections::BTreeSet<String> {
            voters.iter().map(|n| racks[n].clone()).collect()
        };
        for group in placement.group_ids() {
            let voters = placement.replicas(group);
            assert_eq!(racks_of(voters).len(), 3, "group {}: {voters:?}", group.0);
        }
        let id = placement.next_group_id(0);
        let placed = placement.place_new_group(id, &nodes, 3).unwrap();
        let voters: Vec<u64> = placed.replicas.iter().map(|r| r.0).collect();
        assert_eq!(racks_of(&voters).len(), 3, "{voters:?}");
    }

    /// A replication factor of one on a larger cluster keeps three controller voters;
    /// one of five takes five.
    #[test]
    fn the_controller_has_three_voters_or_the_replication_factor() {
        let single = Placement::bootstrap(1, &[1, 2, 3, 4], 1);
        assert_eq!(single.replicas(CONTROLLER_GROUP), &[1, 2, 3]);
        assert_eq!(single.group_count(), 5, "4 x 1 / 1 data groups");
        assert!((1..5).all(|g| single.replicas(GroupId(g)).len() == 1));
        let five = Placement::bootstrap(1, &[1, 2, 3, 4, 5, 6, 7], 5);
        assert_eq!(five.replicas(CONTROLLER_GROUP), &[1, 2, 3, 4, 5]);
        assert_eq!(five.learners(CONTROLLER_GROUP), &[6, 7]);
        assert!((1..five.group_count()).all(|g| five.replicas(GroupId(g)).len() == 5));
    }

    /// A group placed by a topic's creation joins the placement: its replicas are its
    /// voters at their shards, new ids come after every group's (and after any id
    /// reserved), and a new group goes to the least loaded nodes.
    #[test]
    fn groups_placed_by_topic_creations_join_the_placement() {
        let nodes = [1, 2, 3, 4, 5, 6];
        let base = Placement::bootstrap(1, &nodes, 3);
        let id = base.next_group_id(0);
        assert_eq!(id, base.group_count());
        assert_eq!(base.next_group_id(id + 5), id + 5);
        let single = base.place_new_group(id, &nodes, 1).unwrap();
        assert_eq!(single.replicas.len(), 1);
        let placement = base.clone().with_placed([&single].into_iter());
        let node = single.replicas[0].0;
        assert_eq!(placement.replicas(GroupId(id)), &[node]);
        assert_eq!(placement.shard_on(node, GroupId(id)), Some(0));
        assert!(placement.groups_on(node, 0).contains(&GroupId(id)));
        assert_eq!(placement.next_group_id(0), id + 1);
        let five = placement.place_new_group(id + 1, &nodes, 5).unwrap();
        assert_eq!(five.replicas.len(), 5);
        assert!(
            !five.replicas.iter().any(|&(n, _)| n == node),
            "the node given the single replica is the most loaded: {five:?}"
        );
        assert!(placement.place_new_group(id + 1, &nodes, 7).is_err());
        let recorded = topic(9, 2, vec![id, id]);
        assert_eq!(placement.group_of_partition(&recorded, 1), GroupId(id));
        assert_ne!(
            base.group_of_partition(&recorded, 1),
            GroupId(id),
            "unknown: the spread"
        );
    }

    /// Asking about a group that does not exist is a bug, caught where it happens.
    #[test]
    #[should_panic(expected = "group 4 does not exist")]
    fn a_group_beyond_the_placement_is_an_invariant_violation() {
        Placement::bootstrap(4, &[1, 2, 3], 3).replicas(GroupId(4));
    }

    fn joined(node_id: u32) -> PeerAddress {
        PeerAddress {
            node_id,
            host: "127.0.0.1".into(),
            base_port: 9700 + 10 * node_id as u16,
            peer_port: 9800 + 10 * node_id as u16,
            rack: None,
        }
    }

    #[test]
    fn nodes_that_join_learn_the_controller_and_a_rebalance_fills_their_free_shards() {
        let joined: Vec<PeerAddress> = (4..=6).map(joined).collect();
        let placement = Placement::bootstrap(3, &[1, 2, 3], 3).with_joined(joined.iter());
        assert_eq!(placement.node_ids(), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(placement.learners(CONTROLLER_GROUP), &[4, 5, 6]);
        assert_eq!(placement.shard_on(5, CONTROLLER_GROUP), Some(0));
        assert_eq!(
            placement.peer_link_address(5, 2).as_deref(),
            Some("127.0.0.1:9852")
        );
        assert!(placement.is_joined(4) && !placement.is_joined(1));
        let again = placement.clone().with_joined(joined.iter());
        assert_eq!(again, placement, "joining twice changes nothing");
        let nodes = placement.node_ids();
        let planned = placement.plan_replica_moves((&nodes, &[]), |_| Vec::new(), &[], 64);
        let moves: Vec<(u32, Slot, Slot)> = planned
            .iter()
            .filter_map(|change| match *change {
                PlannedChange::Replica { group, from, to } => Some((group, from, to)),
                PlannedChange::Leader { .. } => None,
            })
            .collect();
        assert_eq!(moves.len(), 3, "{planned:?}");
        for (group, from, to) in moves {
            assert_ne!(group, CONTROLLER_GROUP.0, "the controller stays");
            assert!(from.node <= 3 && to.node >= 4, "{from:?} -> {to:?}");
            assert_ne!(to.shard, 0, "shard 0 runs the controller's learner there");
        }
    }

    #[test]
    fn a_recorded_preferred_leader_holds_while_it_is_a_voter() {
        use crate::broker::replica_moves::MoveEntry;
        let bootstrap = Placement::bootstrap(2, &[1, 2, 3], 3);
        let default = bootstrap.preferred_leader(GroupId(1));
        let mut moves = ReplicaMoves::default();
        let other = [1, 2, 3].into_iter().find(|&n| Some(n) != default).unwrap();
        assert!(moves.apply(MoveEntry::Leader {
            group: 1,
            node: other
        }));
        let recorded = bootstrap.clone().with_moves(&moves);
        assert_eq!(recorded.preferred_leader(GroupId(1)), Some(other));
        assert_eq!(
            recorded.preferred_leader(GroupId(0)),
            bootstrap.preferred_leader(GroupId(0)),
            "other groups keep theirs"
        );
        assert!(moves.apply(MoveEntry::Leader { group: 1, node: 9 }));
        assert_eq!(
            bootstrap
                .clone()
                .with_moves(&moves)
                .preferred_leader(GroupId(1)),
            default,
            "a node that is no voter does not lead"
        );
    }

    #[test]
    fn a_controller_vote_moves_to_a_rack_no_other_voter_is_on() {
        let racks: BTreeMap<u64, String> = [(1, "a"), (2, "b"), (3, "c")]
            .into_iter()
            .map(|(node, rack)| (node, rack.to_string()))
            .collect();
        let in_rack = |node_id: u32, rack: &str| PeerAddress {
            rack: Some(rack.to_string()),
            ..joined(node_id)
        };
        // Node 4 holds nothing but shares rack "b" with voter 2; node 5 is on a free rack.
        let joined = [in_rack(4, "b"), in_rack(5, "d")];
        let placement =
            Placement::bootstrap_in_racks(1, &[1, 2, 3], &racks, 3).with_joined(joined.iter());
        let nodes = placement.node_ids();
        let planned = placement.plan_replica_moves((&nodes, &[1]), |_| Vec::new(), &[], 64);
        let to = |planned: &[PlannedChange]| {
            planned.iter().find_map(|change| match change {
                PlannedChange::Replica { group: 0, to, .. } => Some(to.node),
                _ => None,
            })
        };
        assert_eq!(to(&planned), Some(5), "{planned:?}");
        // With no free rack left, racks no longer decide: the usual order (fewest
        // replicas, then id) does.
        let joined = [in_rack(4, "b"), in_rack(5, "c")];
        let placement =
            Placement::bootstrap_in_racks(1, &[1, 2, 3], &racks, 3).with_joined(joined.iter());
        let planned = placement.plan_replica_moves((&nodes, &[1]), |_| Vec::new(), &[], 64);
        assert_eq!(to(&planned), Some(4), "{planned:?}");
    }

    #[test]
    fn a_draining_controller_voter_hands_its_vote_to_a_learner_and_stays_one() {
        use crate::broker::replica_moves::{MoveEntry, ReplicaMove};
        let joined = [joined(4)];
        let placement = Placement::bootstrap(2, &[1, 2, 3], 3).with_joined(joined.iter());
        let nodes = placement.node_ids();
        let planned = placement.plan_replica_moves((&nodes, &[1]), |_| Vec::new(), &[], 64);
        assert_eq!(
            planned.first(),
            Some(&PlannedChange::Replica {
                group: 0,
                from: Slot { node: 1, shard: 0 },
                to: Slot { node: 4, shard: 0 },
            }),
            "{planned:?}"
        );
        let mut moves = ReplicaMoves::default();
        assert!(moves.apply(MoveEntry::Start(ReplicaMove {
            group: 0,
            from: 1,
            to: (4, 0),
            join_voters: vec![1, 2, 3],
            join_learners: vec![4],
            join_index: 9,
        })));
        assert!(moves.apply(MoveEntry::Finish {
            group: 0,
            from: 1,
            to: 4,
            replicas: vec![(2, 0), (3, 0), (4, 0)],
        }));
        assert!(!moves.has_left(0, 1), "a controller replica never leaves");
        let after = Placement::bootstrap(2, &[1, 2, 3], 3)
            .with_joined(joined.iter())
            .with_moves(&moves);
        assert_eq!(after.replicas(CONTROLLER_GROUP), &[2, 3, 4]);
        assert_eq!(after.learners(CONTROLLER_GROUP), &[1]);
        assert_eq!(
            after.shard_on(1, CONTROLLER_GROUP),
            Some(0),
            "node 1 keeps it"
        );
        let again = after.plan_replica_moves((&nodes, &[1]), |_| Vec::new(), &[], 64);
        assert!(
            again
                .iter()
                .all(|c| !matches!(c, PlannedChange::Replica { group: 0, .. })),
            "{again:?}"
        );
    }
}
