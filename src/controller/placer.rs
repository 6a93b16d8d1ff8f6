//! Deciding where replicas go: a new group's replicas and preferred leader (`place`),
//! and the moves that empty a draining node or even out a cluster (`plan_moves`).
//!
//! Load is counted per shard: a node's replicas divided by its shards, so a node with
//! twice the shards takes twice the replicas. A group never has two replicas on one
//! node, nor on one rack while enough racks remain; draining and removed nodes get
//! nothing. Leadership is balanced apart (a preferred leader costs no data to change).
//!
//! Pure and deterministic (ties go to the lowest node id, then shard): the controller's
//! leader plans, and the same inputs always give the same plan. Never reads the clock,
//! never does I/O; bounded by the cluster it is given.

use std::collections::BTreeMap;

use thiserror::Error;

/// What a node may be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Takes new replicas and leaderships.
    Active,
    /// Gives its replicas and leaderships away; takes none.
    Draining,
}

/// A node as the placer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSlots {
    /// Node id.
    pub id: u64,
    /// Shards the node runs (at least 1).
    pub shards: u32,
    /// Failure domain, if the operator gave one.
    pub rack: Option<String>,
    /// Whether it takes new replicas.
    pub state: NodeState,
}

/// One replica: the node and the shard that runs it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// Node id.
    pub node: u64,
    /// Shard index on that node.
    pub shard: u32,
}

/// Where one group's replicas run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSlots {
    /// Its replicas, on distinct nodes.
    pub replicas: Vec<Slot>,
    /// The node that should lead it (one of the replicas' nodes).
    pub preferred_leader: u64,
    /// Nodes whose replica left it: they never take it again (a replica id is never
    /// used twice in a group).
    pub left: Vec<u64>,
    /// Counted in the load but never moved (the controller group, a group with a move
    /// under way).
    pub fixed: bool,
}

/// A change the placer asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Move {
    /// Moves group `group`'s replica from `from` to `to` (a new node for the group).
    Replica {
        /// Index of the group in the list planned over.
        group: usize,
        /// The replica given up.
        from: Slot,
        /// Where its replacement goes.
        to: Slot,
    },
    /// Makes `to` the group's preferred leader (already one of its replicas).
    Leader {
        /// Index of the group in the list planned over.
        group: usize,
        /// The new preferred leader.
        to: u64,
    },
}

/// Why a group cannot be placed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlaceError {
    /// Fewer nodes take replicas than the group needs.
    #[error("replication factor {wanted} needs {wanted} active nodes; {active} are active")]
    NotEnoughNodes {
        /// The replication factor asked.
        wanted: usize,
        /// Active nodes.
        active: usize,
    },
}

/// Replicas and preferred leaderships per node and per (node, shard).
#[derive(Default)]
struct Load {
    replicas: BTreeMap<u64, u64>,
    per_shard: BTreeMap<Slot, u64>,
    leaders: BTreeMap<u64, u64>,
}

impl Load {
    fn of(groups: &[GroupSlots]) -> Load {
        let mut load = Load::default();
        for group in groups {
            for slot in &group.replicas {
                *load.replicas.entry(slot.node).or_default() += 1;
                *load.per_shard.entry(*slot).or_default() += 1;
            }
            *load.leaders.entry(group.preferred_leader).or_default() += 1;
        }
        load
    }

    fn replicas_on(&self, node: u64) -> u64 {
        self.replicas.get(&node).copied().unwrap_or(0)
    }

    fn leaders_on(&self, node: u64) -> u64 {
        self.leaders.get(&node).copied().unwrap_or(0)
    }

    /// The least loaded shard of `node`.
    fn best_shard(&self, node: &NodeSlots) -> u32 {
        (0..node.shards.max(1))
            .min_by_key(|&shard| {
                let slot = Slot {
                    node: node.id,
                    shard,
                };
                (self.per_shard.get(&slot).copied().unwrap_or(0), shard)
            })
            .unwrap_or(0)
    }

    fn add(&mut self, slot: Slot) {
        *self.replicas.entry(slot.node).or_default() += 1;
        *self.per_shard.entry(slot).or_default() += 1;
    }

    fn remove(&mut self, slot: Slot) {
        for count in [
            self.replicas.entry(slot.node).or_default(),
            self.per_shard.entry(slot).or_default(),
        ] {
            assert!(*count > 0, "a replica removed from {slot:?} was counted");
            *count -= 1;
        }
    }
}

/// Orders nodes by load per shard (replicas / shards, compared without division).
fn lighter(load: &Load, a: &NodeSlots, b: &NodeSlots) -> std::cmp::Ordering {
    let a_load = u128::from(load.replicas_on(a.id)) * u128::from(b.shards.max(1));
    let b_load = u128::from(load.replicas_on(b.id)) * u128::from(a.shards.max(1));
    a_load.cmp(&b_load).then(a.id.cmp(&b.id))
}

/// The best active node for one more replica of a group already on `taken` nodes:
/// a rack the group does not use yet first, then the lightest.
fn best_node<'a>(
    nodes: &'a [NodeSlots],
    load: &Load,
    taken: &[u64],
    left: &[u64],
) -> Option<&'a NodeSlots> {
    let racks_used: Vec<&str> = nodes
        .iter()
        .filter(|n| taken.contains(&n.id))
        .filter_map(|n| n.rack.as_deref())
        .collect();
    let new_rack = |n: &NodeSlots| n.rack.as_deref().is_none_or(|r| !racks_used.contains(&r));
    nodes
        .iter()
        .filter(|n| n.state == NodeState::Active && !taken.contains(&n.id))
        .filter(|n| !left.contains(&n.id))
        .min_by(|a, b| {
            new_rack(b)
                .cmp(&new_rack(a))
                .then_with(|| lighter(load, a, b))
        })
}

/// Places a new group of `replication_factor` replicas among `nodes`, given the groups
/// already placed; its preferred leader is the replica node leading fewest groups.
pub fn place(
    nodes: &[NodeSlots],
    existing: &[GroupSlots],
    replication_factor: usize,
) -> Result<GroupSlots, PlaceError> {
    let active = nodes
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .count();
    if replication_factor == 0 || active < replication_factor {
        return Err(PlaceError::NotEnoughNodes {
            wanted: replication_factor,
            active,
        });
    }
    let mut load = Load::of(existing);
    let mut replicas: Vec<Slot> = Vec::with_capacity(replication_factor);
    for _ in 0..replication_factor {
        let taken: Vec<u64> = replicas.iter().map(|s| s.node).collect();
        let node = best_node(nodes, &load, &taken, &[]).expect("enough active nodes were counted");
        let slot = Slot {
            node: node.id,
            shard: load.best_shard(node),
        };
        load.add(slot);
        replicas.push(slot);
    }
    let preferred_leader = replicas
        .iter()
        .map(|s| s.node)
        .min_by_key(|&node| (load.leaders_on(node), node))
        .expect("a group has replicas");
    Ok(GroupSlots {
        replicas,
        preferred_leader,
        left: Vec::new(),
        fixed: false,
    })
}

/// The moves that take every replica and leadership off draining nodes (and off nodes
/// no longer listed), then even out replicas per shard and leaderships per node over
/// the active nodes: at most `limit` of them. A balanced cluster plans none.
pub fn plan_moves(nodes: &[NodeSlots], groups: &[GroupSlots], limit: usize) -> Vec<Move> {
    let mut groups = groups.to_vec();
    let mut load = Load::of(&groups);
    let mut moves = Vec::new();
    // Off draining and unknown nodes, replicas then leaderships.
    for (index, group) in groups.iter_mut().enumerate() {
        if !group.fixed {
            drain_group(nodes, index, group, &mut load, &mut moves, limit);
        }
    }
    while moves.len() < limit {
        let Some(next) = replica_rebalance(nodes, &groups, &load) else {
            break;
        };
        if let Move::Replica { group, from, to } = next {
            apply_replica_move(&mut groups[group], &mut load, from, to);
        }
        moves.push(next);
    }
    while moves.len() < limit {
        let Some(path) = leader_rebalance(nodes, &groups, &load) else {
            break;
        };
        if moves.len() + path.len() > limit {
            break;
        }
        for next in path {
            if let Move::Leader { group, to } = next {
                apply_leader_move(&mut groups[group], &mut load, to);
            }
            moves.push(next);
        }
    }
    moves
}

/// Moves `group`'s replicas and preferred leadership off nodes that are not active.
fn drain_group(
    nodes: &[NodeSlots],
    index: usize,
    group: &mut GroupSlots,
    load: &mut Load,
    moves: &mut Vec<Move>,
    limit: usize,
) {
    let active = |id: u64| {
        nodes
            .iter()
            .any(|n| n.id == id && n.state == NodeState::Active)
    };
    for position in 0..group.replicas.len() {
        let from = group.replicas[position];
        if active(from.node) || moves.len() >= limit {
            continue;
        }
        let taken: Vec<u64> = group.replicas.iter().map(|s| s.node).collect();
        let Some(node) = best_node(nodes, load, &taken, &group.left) else {
            continue;
        };
        let to = Slot {
            node: node.id,
            shard: load.best_shard(node),
        };
        apply_replica_move(group, load, from, to);
        moves.push(Move::Replica {
            group: index,
            from,
            to,
        });
    }
    if !active(group.preferred_leader) && moves.len() < limit {
        let candidate = group
            .replicas
            .iter()
            .map(|s| s.node)
            .filter(|&n| active(n))
            .min_by_key(|&n| (load.leaders_on(n), n));
        if let Some(to) = candidate {
            apply_leader_move(group, load, to);
            moves.push(Move::Leader { group: index, to });
        }
    }
}

/// Applies `moves` (from `plan_moves` over the same groups) to `groups`.
pub fn apply_moves(groups: &mut [GroupSlots], moves: &[Move]) {
    let mut load = Load::of(groups);
    for planned in moves {
        match *planned {
            Move::Replica { group, from, to } => {
                apply_replica_move(&mut groups[group], &mut load, from, to)
            }
            Move::Leader { group, to } => apply_leader_move(&mut groups[group], &mut load, to),
        }
    }
}

fn apply_replica_move(group: &mut GroupSlots, load: &mut Load, from: Slot, to: Slot) {
    assert!(
        group.replicas.iter().all(|s| s.node != to.node),
        "a group never gets two replicas on node {}",
        to.node
    );
    let position = group
        .replicas
        .iter()
        .position(|s| *s == from)
        .expect("a moved replica belongs to its group");
    group.replicas[position] = to;
    load.remove(from);
    load.add(to);
    // A moved replica's preferred leadership goes with it (the leader balancing that
    // follows spreads leaderships again).
    if group.preferred_leader == from.node {
        apply_leader_move(group, load, to.node);
    }
}

fn apply_leader_move(group: &mut GroupSlots, load: &mut Load, to: u64) {
    assert!(
        group.replicas.iter().any(|s| s.node == to),
        "a preferred leader holds a replica"
    );
    let from = group.preferred_leader;
    if let Some(count) = load.leaders.get_mut(&from) {
        *count = count.saturating_sub(1);
    }
    *load.leaders.entry(to).or_default() += 1;
    group.preferred_leader = to;
}

/// One replica move from a heavier to a lighter active node that leaves the heavier no
/// lighter than the lighter becomes (per shard), the heaviest pairs first.
fn replica_rebalance(nodes: &[NodeSlots], groups: &[GroupSlots], load: &Load) -> Option<Move> {
    let mut active: Vec<&NodeSlots> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .collect();
    active.sort_by(|a, b| lighter(load, a, b));
    for heavy in active.iter().rev() {
        for light in &active {
            let (h, l) = (load.replicas_on(heavy.id), load.replicas_on(light.id));
            // Worth it only if the heavy node stays above what the light one reaches.
            if u128::from(h) * u128::from(light.shards.max(1))
                <= u128::from(l + 1) * u128::from(heavy.shards.max(1))
            {
                continue;
            }
            // The replica on the heavy node's busiest shard goes, so its shards stay
            // even.
            let candidate = groups
                .iter()
                .enumerate()
                .filter(|(_, group)| {
                    !group.fixed
                        && !group.replicas.iter().any(|s| s.node == light.id)
                        && !group.left.contains(&light.id)
                        && keeps_racks_apart(nodes, group, heavy.id, light)
                })
                .filter_map(|(index, group)| {
                    let from = group.replicas.iter().find(|s| s.node == heavy.id)?;
                    Some((index, *from))
                })
                .max_by_key(|(index, from)| {
                    (
                        load.per_shard.get(from).copied().unwrap_or(0),
                        std::cmp::Reverse(*index),
                    )
                });
            if let Some((group, from)) = candidate {
                let to = Slot {
                    node: light.id,
                    shard: load.best_shard(light),
                };
                return Some(Move::Replica { group, from, to });
            }
        }
    }
    None
}

/// Replacing `leaving`'s replica of `group` by one on `joining` puts no two replicas on
/// one rack unless the group already had two there.
fn keeps_racks_apart(
    nodes: &[NodeSlots],
    group: &GroupSlots,
    leaving: u64,
    joining: &NodeSlots,
) -> bool {
    let Some(rack) = joining.rack.as_deref() else {
        return true;
    };
    !group
        .replicas
        .iter()
        .filter(|s| s.node != leaving)
        .filter_map(|s| nodes.iter().find(|n| n.id == s.node))
        .any(|n| n.rack.as_deref() == Some(rack))
}

/// Preferred leaderships shifted along a path from the node leading most groups to one
/// leading at least two fewer: each step hands one group's leadership to another of its
/// replicas, so the nodes between give one and take one. Breadth-first, so the path is
/// the shortest; `None` when no node can take one from a heavier one.
fn leader_rebalance(nodes: &[NodeSlots], groups: &[GroupSlots], load: &Load) -> Option<Vec<Move>> {
    let mut active: Vec<u64> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .map(|n| n.id)
        .collect();
    active.sort_by_key(|&n| (load.leaders_on(n), n));
    for &heavy in active.iter().rev() {
        // Reached from `heavy`: node -> (the node before it, the group handed over).
        let mut reached: BTreeMap<u64, (u64, usize)> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([heavy]);
        while let Some(at) = queue.pop_front() {
            if at != heavy && load.leaders_on(heavy) > load.leaders_on(at) + 1 {
                return Some(leader_path(&reached, heavy, at));
            }
            for (index, group) in groups.iter().enumerate() {
                if group.preferred_leader != at || group.fixed {
                    continue;
                }
                for slot in &group.replicas {
                    if slot.node != heavy
                        && !reached.contains_key(&slot.node)
                        && active.contains(&slot.node)
                    {
                        reached.insert(slot.node, (at, index));
                        queue.push_back(slot.node);
                    }
                }
            }
        }
    }
    None
}

/// The leader moves along the path found to `end`, applied from its far end first.
fn leader_path(reached: &BTreeMap<u64, (u64, usize)>, start: u64, end: u64) -> Vec<Move> {
    let mut moves = Vec::new();
    let mut at = end;
    while at != start {
        let (before, group) = reached[&at];
        moves.push(Move::Leader { group, to: at });
        at = before;
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(count: u64, shards: u32, racks: u64) -> Vec<NodeSlots> {
        (1..=count)
            .map(|id| NodeSlots {
                id,
                shards,
                rack: (racks > 0).then(|| format!("rack-{}", id % racks)),
                state: NodeState::Active,
            })
            .collect()
    }

    fn place_all(nodes: &[NodeSlots], count: usize, rf: usize) -> Vec<GroupSlots> {
        let mut groups = Vec::new();
        for _ in 0..count {
            let group = place(nodes, &groups, rf).expect("enough nodes");
            groups.push(group);
        }
        groups
    }

    /// Max minus min of a count over the active nodes.
    fn spread(nodes: &[NodeSlots], count: impl Fn(u64) -> u64) -> u64 {
        let counts: Vec<u64> = nodes
            .iter()
            .filter(|n| n.state == NodeState::Active)
            .map(|n| count(n.id))
            .collect();
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
    }

    fn check_balanced(nodes: &[NodeSlots], groups: &[GroupSlots]) {
        let load = Load::of(groups);
        assert!(
            spread(nodes, |n| load.replicas_on(n)) <= 1,
            "replicas per node within 1"
        );
        assert!(
            spread(nodes, |n| load.leaders_on(n)) <= 1,
            "leaders per node within 1"
        );
        for node in nodes.iter().filter(|n| n.state == NodeState::Active) {
            let per_shard: Vec<u64> = (0..node.shards)
                .map(|shard| {
                    load.per_shard
                        .get(&Slot {
                            node: node.id,
                            shard,
                        })
                        .copied()
                        .unwrap_or(0)
                })
                .collect();
            let (max, min) = (
                per_shard.iter().max().unwrap(),
                per_shard.iter().min().unwrap(),
            );
            assert!(
                max - min <= 1,
                "shards of node {} within 1: {per_shard:?}",
                node.id
            );
        }
    }

    fn check_well_formed(nodes: &[NodeSlots], groups: &[GroupSlots], rf: usize) {
        for group in groups {
            assert_eq!(group.replicas.len(), rf);
            let mut on: Vec<u64> = group.replicas.iter().map(|s| s.node).collect();
            on.sort_unstable();
            on.dedup();
            assert_eq!(on.len(), rf, "replicas on distinct nodes: {group:?}");
            assert!(
                on.contains(&group.preferred_leader),
                "the leader holds a replica"
            );
            for slot in &group.replicas {
                let node = nodes
                    .iter()
                    .find(|n| n.id == slot.node)
                    .expect("a known node");
                assert!(slot.shard < node.shards, "a shard the node runs");
            }
        }
    }

    proptest! {
        /// Groups placed one at a time spread evenly: replicas per node and per shard
        /// within one of each other, never two on one node; leaderships within one
        /// after the planned leader moves, and then nothing more is planned.
        #[test]
        fn placing_groups_keeps_every_node_within_one(
            count in 1u64..10, shards in 1u32..4, rf_pick in 0usize..3, groups in 1usize..40,
        ) {
            let rf = [1, 3, 5][rf_pick];
            prop_assume!(rf as u64 <= count);
            let nodes = nodes(count, shards, 0);
            let mut placed = place_all(&nodes, groups, rf);
            check_well_formed(&nodes, &placed, rf);
            // Replicas are even as placed; a new group's leader is chosen among its own
            // replicas only, so leaderships may need shifting (no data moves).
            let moves = plan_moves(&nodes, &placed, 1000);
            prop_assert!(moves.iter().all(|m| matches!(m, Move::Leader { .. })), "{:?}", moves);
            apply_moves(&mut placed, &moves);
            check_balanced(&nodes, &placed);
            prop_assert!(plan_moves(&nodes, &placed, 1000).is_empty(), "balanced: no move");
        }

        /// With at least as many racks as replicas, no group has two on one rack.
        #[test]
        fn replicas_of_a_group_go_to_distinct_racks(
            count in 3u64..10, racks in 3u64..5, groups in 1usize..30,
        ) {
            let nodes = nodes(count, 2, racks);
            let placed = place_all(&nodes, groups, 3);
            for group in &placed {
                let mut used: Vec<String> = group.replicas.iter()
                    .map(|s| nodes[(s.node - 1) as usize].rack.clone().unwrap())
                    .collect();
                used.sort();
                used.dedup();
                prop_assert_eq!(used.len(), 3, "{:?}", group);
            }
        }

        /// Nodes added to a cluster get their share: after the planned moves every node
        /// is within one (replicas and leaders), and planning again finds nothing.
        #[test]
        fn a_rebalance_after_adding_nodes_evens_the_cluster_out(
            first in 3u64..6, added in 1u64..5, groups in 3usize..30,
        ) {
            let before = nodes(first, 2, 0);
            let mut placed = place_all(&before, groups, 3);
            let after = nodes(first + added, 2, 0);
            let moves = plan_moves(&after, &placed, 10_000);
            apply_moves(&mut placed, &moves);
            check_well_formed(&after, &placed, 3);
            check_balanced(&after, &placed);
            prop_assert!(plan_moves(&after, &placed, 10_000).is_empty());
        }

        /// A draining node is given nothing new, and the plan takes every replica and
        /// leadership off it while enough active nodes remain.
        #[test]
        fn a_draining_node_ends_with_nothing(
            count in 4u64..8, drained in 1u64..4, groups in 1usize..30,
        ) {
            let mut nodes = nodes(count, 2, 0);
            let mut placed = place_all(&nodes, groups, 3);
            nodes[(drained - 1) as usize].state = NodeState::Draining;
            let extra = place(&nodes, &placed, 3).expect("enough active nodes");
            prop_assert!(extra.replicas.iter().all(|s| s.node != drained));
            let moves = plan_moves(&nodes, &placed, 10_000);
            apply_moves(&mut placed, &moves);
            check_well_formed(&nodes, &placed, 3);
            for group in &placed {
                prop_assert!(group.replicas.iter().all(|s| s.node != drained));
                prop_assert_ne!(group.preferred_leader, drained);
            }
            check_balanced(&nodes, &placed);
        }
    }

    /// A replication factor above the active nodes is refused, saying why.
    #[test]
    fn too_few_active_nodes_is_a_clear_error() {
        let mut nodes = nodes(3, 1, 0);
        nodes[0].state = NodeState::Draining;
        let error = place(&nodes, &[], 3).unwrap_err();
        assert_eq!(
            error,
            PlaceError::NotEnoughNodes {
                wanted: 3,
                active: 2
            }
        );
        assert_eq!(
            error.to_string(),
            "replication factor 3 needs 3 active nodes; 2 are active"
        );
    }

    /// Load is per shard: a node running twice the shards takes twice the replicas.
    #[test]
    fn a_node_with_more_shards_takes_more_replicas() {
        let mut nodes = nodes(3, 1, 0);
        nodes[0].shards = 2;
        let placed = place_all(&nodes, 8, 1);
        let load = Load::of(&placed);
        assert_eq!(
            [
                load.replicas_on(1),
                load.replicas_on(2),
                load.replicas_on(3)
            ],
            [4, 2, 2]
        );
    }

    /// The plan stops at its limit.
    #[test]
    fn a_plan_is_bounded_by_its_limit() {
        let before = nodes(3, 1, 0);
        let placed = place_all(&before, 12, 3);
        let after = nodes(6, 1, 0);
        assert!(plan_moves(&after, &placed, 1000).len() > 2);
        assert_eq!(plan_moves(&after, &placed, 2).len(), 2);
    }
}
