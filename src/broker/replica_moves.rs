//! Replica moves as the controller group records them: which replica of which group is
//! on its way to which node and shard, the replicas of groups a finished move changed,
//! and the nodes that left a group (a replica id is never used again in a group:
//! `replication::membership`).
//!
//! Owns the move records and their entry format; applying an entry is deterministic
//! (every controller replica decides alike whether it takes effect). Never proposes a
//! membership change itself: the mover (`controller::mover`) takes each group through
//! its changes and records here where the move stands.
//!
//! ```text
//! kind 8 v1, replica move : action u8 (1 start, 2 finish, 3 abandon) | 0 u8 u16 | group u32 | body
//!   start   : from u64 | to node u64 | to shard u32 | config index u64
//!             | voter count u32 | voter u64 ... | learner count u32 | learner u64 ...
//!   finish  : from u64 | to u64 | replica count u32 | (node u64, shard u32) ...
//!   abandon : from u64 | to u64
//!   node    : (group 0) node u64 | state u8 (0 active, 1 draining, 2 removed)
//!   join    : (group 0) node u64 | client port u16 | peer port u16
//!             | host length u16 | host | rack length u16 | rack (0: none)
//!   leader  : node u64 (the group's preferred leader from now on)
//! ```
//!
//! A node that joined a running cluster (`--join`) is recorded with its addresses: every
//! node links to it, routes clients to it and places replicas on it from then on; the
//! nodes of `--peers` are known from the configuration and never recorded.
//!
//! A node's service state says what it may be given: a draining node takes no new
//! replica (its replicas are being moved off), a removed one nothing ever again.

use std::collections::{BTreeMap, BTreeSet};

use crate::broker::entry_cursor::Cursor;
use crate::broker::log_entry::EntryDecodeError;
use crate::config::PeerAddress;
use crate::controller::CONTROLLER_GROUP;

/// Kind byte of a replica move entry.
pub const MOVE_KIND: u8 = 8;

/// Version of the replica move entry's format.
const MOVE_VERSION: u8 = 1;

/// Most replicas (voters, learners, final replicas) a decoded move entry may claim: a
/// group has at most 5 voters and the learner being added.
const MAX_MOVE_MEMBERS: usize = 16;

/// Most moves under way at once in a cluster (a start beyond it is refused): bounds the
/// controller's table; a rebalance runs fewer concurrently (`MAX_CONCURRENT_MOVES`).
pub const MAX_MOVES_UNDER_WAY: usize = 64;

/// Most nodes that may join a cluster after its bootstrap (a join beyond it is refused):
/// bounds the controller's node table and every metadata answer. Each is a learner of
/// the controller group, whose stored configuration holds `MAX_CONF_MEMBERS` (the join
/// handler refuses a join beyond that first).
pub const MAX_JOINED_NODES: usize = crate::constants::MAX_CONF_MEMBERS;

/// Longest host name or rack label a join records (a DNS name is at most 253 bytes).
pub const MAX_NODE_LABEL_BYTES: usize = 255;

/// One replica on its way from one node to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaMove {
    /// The replica group.
    pub group: u32,
    /// The node giving its replica up.
    pub from: u64,
    /// The node and shard taking it.
    pub to: (u64, u32),
    /// The group's configuration once the new replica was added as a learner: the one the
    /// new replica starts with (voters, learners, the index it is as of).
    pub join_voters: Vec<u64>,
    /// Learners of that configuration (the new replica among them).
    pub join_learners: Vec<u64>,
    /// The index of the change that added the learner.
    pub join_index: u64,
}

/// What a node may be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeService {
    /// Takes replicas (every node unless recorded otherwise).
    Active,
    /// Gives its replicas away; takes none.
    Draining,
    /// Out of the cluster for good: takes nothing, never active again.
    Removed,
}

impl NodeService {
    fn code(self) -> u8 {
        match self {
            NodeService::Active => 0,
            NodeService::Draining => 1,
            NodeService::Removed => 2,
        }
    }

    /// From its stored code.
    pub fn of_code(code: u8) -> Option<NodeService> {
        match code {
            0 => Some(NodeService::Active),
            1 => Some(NodeService::Draining),
            2 => Some(NodeService::Removed),
            _ => None,
        }
    }

    /// Its stored code.
    pub fn to_code(self) -> u8 {
        self.code()
    }
}

/// A replica move entry of the controller's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveEntry {
    /// A move starts: its learner was added to the group.
    Start(ReplicaMove),
    /// A move finished: the group's replicas are now these (the old one removed). Only
    /// the move under way from `from` to `to` finishes.
    Finish {
        /// The group.
        group: u32,
        /// The node that gave its replica up.
        from: u64,
        /// The node that took it.
        to: u64,
        /// Its replicas, (node, shard).
        replicas: Vec<(u64, u32)>,
    },
    /// A move rolled back: its learner was removed again. Only the move under way from
    /// `from` to `to` rolls back.
    Abandon {
        /// The group.
        group: u32,
        /// The node that was giving its replica up.
        from: u64,
        /// The node whose learner left.
        to: u64,
    },
    /// A node's service state changes.
    Node {
        /// The node.
        node: u64,
        /// What it may be given from now on.
        state: NodeService,
    },
    /// A node joined the running cluster (or, already joined, moved to new addresses).
    Join(PeerAddress),
    /// A group's preferred leader (leader balancing hands it the group): a rebalance
    /// evens out leaderships with these.
    Leader {
        /// The group.
        group: u32,
        /// The node that should lead it (a voter of it; ignored while it is not).
        node: u64,
    },
}

/// The moves the controller recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaMoves {
    /// Moves under way, by group (one per group).
    pub(crate) under_way: BTreeMap<u32, ReplicaMove>,
    /// Groups whose replicas a finished move changed: their replicas now.
    pub(crate) replaced: BTreeMap<u32, Vec<(u64, u32)>>,
    /// Per group, the nodes whose replica left it (never taken back).
    pub(crate) retired: BTreeMap<u32, BTreeSet<u64>>,
    /// Nodes not active (draining or removed).
    pub(crate) node_states: BTreeMap<u64, NodeService>,
    /// Nodes that joined after the bootstrap, with their addresses.
    pub(crate) joined: BTreeMap<u64, PeerAddress>,
    /// Preferred leaders recorded, by group.
    pub(crate) preferred: BTreeMap<u32, u64>,
}

impl ReplicaMoves {
    /// Applies a move entry; whether it took effect (a start for a group already moving,
    /// to a node that left the group, or beyond the bound, a finish or abandon of no move
    /// under way, do nothing, on every replica alike).
    pub fn apply(&mut self, entry: MoveEntry) -> bool {
        match entry {
            MoveEntry::Start(start) => {
                let refused = self.under_way.contains_key(&start.group)
                    || self.under_way.len() >= MAX_MOVES_UNDER_WAY
                    || start.from == start.to.0
                    || self.has_left(start.group, start.to.0)
                    || self.node_state(start.to.0) != NodeService::Active;
                if refused {
                    return false;
                }
                self.under_way.insert(start.group, start);
                true
            }
            MoveEntry::Finish {
                group,
                from,
                to,
                replicas,
            } => {
                let Some(under_way) = self.under_way.get(&group) else {
                    return false;
                };
                let nodes: Vec<u64> = replicas.iter().map(|&(node, _)| node).collect();
                if (under_way.from, under_way.to.0) != (from, to)
                    || !replicas.contains(&under_way.to)
                    || nodes.contains(&under_way.from)
                {
                    return false;
                }
                let from = under_way.from;
                self.under_way.remove(&group);
                if group != CONTROLLER_GROUP.0 {
                    // A controller replica never leaves its node: its vote moved.
                    self.retired.entry(group).or_default().insert(from);
                }
                self.replaced.insert(group, replicas);
                true
            }
            MoveEntry::Node { node, state } => {
                let now = self.node_state(node);
                let target = self.under_way.values().any(|m| m.to.0 == node);
                if now == state || now == NodeService::Removed {
                    return false;
                }
                if state == NodeService::Removed && target {
                    // A replica is moving onto it: not removed under it.
                    return false;
                }
                if state == NodeService::Active {
                    self.node_states.remove(&node);
                } else {
                    self.node_states.insert(node, state);
                }
                true
            }
            MoveEntry::Join(node) => {
                let id = u64::from(node.node_id);
                let refused = self.node_state(id) == NodeService::Removed
                    || (!self.joined.contains_key(&id) && self.joined.len() >= MAX_JOINED_NODES)
                    || self.joined.get(&id) == Some(&node)
                    || !node_labels_fit(&node);
                if refused {
                    return false;
                }
                self.joined.insert(id, node);
                true
            }
            MoveEntry::Leader { group, node } => {
                if node == 0 || self.preferred.get(&group) == Some(&node) {
                    return false;
                }
                self.preferred.insert(group, node);
                true
            }
            MoveEntry::Abandon { group, from, to } => {
                let matches = self
                    .under_way
                    .get(&group)
                    .is_some_and(|m| (m.from, m.to.0) == (from, to));
                if !matches {
                    return false;
                }
                let Some(under_way) = self.under_way.remove(&group) else {
                    return false;
                };
                if group != CONTROLLER_GROUP.0 {
                    // Its id was the group's once (as a learner): never again.
                    self.retired
                        .entry(group)
                        .or_default()
                        .insert(under_way.to.0);
                }
                true
            }
        }
    }

    /// What `node` may be given.
    pub fn node_state(&self, node: u64) -> NodeService {
        self.node_states
            .get(&node)
            .copied()
            .unwrap_or(NodeService::Active)
    }

    /// The nodes draining or removed, with their state.
    pub fn inactive_nodes(&self) -> impl Iterator<Item = (u64, NodeService)> + '_ {
        self.node_states.iter().map(|(&n, &s)| (n, s))
    }

    /// Whether `node`'s replica left `group` once (a move to it is refused).
    pub fn has_left(&self, group: u32, node: u64) -> bool {
        self.retired.get(&group).is_some_and(|r| r.contains(&node))
    }

    /// The move under way of `group`, if any.
    pub fn under_way(&self, group: u32) -> Option<&ReplicaMove> {
        self.under_way.get(&group)
    }

    /// Every move under way, in group order.
    pub fn all_under_way(&self) -> impl Iterator<Item = &ReplicaMove> {
        self.under_way.values()
    }

    /// The preferred leaders recorded: (group, node), in group order.
    pub fn preferred_leaders(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.preferred.iter().map(|(&g, &n)| (g, n))
    }

    /// The nodes that joined after the bootstrap, in id order.
    pub fn joined(&self) -> impl Iterator<Item = &PeerAddress> {
        self.joined.values()
    }

    /// Groups whose replicas a finished move changed, with their replicas.
    pub fn replaced(&self) -> impl Iterator<Item = (u32, &[(u64, u32)])> {
        self.replaced.iter().map(|(&g, r)| (g, r.as_slice()))
    }
}

impl MoveEntry {
    /// Appends the entry's bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (action, group) = match self {
            MoveEntry::Start(start) => (1u8, start.group),
            MoveEntry::Finish { group, .. } => (2, *group),
            MoveEntry::Abandon { group, .. } => (3, *group),
            MoveEntry::Node { .. } => (4, 0),
            MoveEntry::Join(_) => (5, 0),
            MoveEntry::Leader { group, .. } => (6, *group),
        };
        out.extend_from_slice(&[MOVE_KIND, MOVE_VERSION, action, 0]);
        out.extend_from_slice(&group.to_le_bytes());
        match self {
            MoveEntry::Start(start) => {
                assert!(
                    start.join_voters.len() <= MAX_MOVE_MEMBERS
                        && start.join_learners.len() <= MAX_MOVE_MEMBERS,
                    "a group has a few members"
                );
                out.extend_from_slice(&start.from.to_le_bytes());
                out.extend_from_slice(&start.to.0.to_le_bytes());
                out.extend_from_slice(&start.to.1.to_le_bytes());
                out.extend_from_slice(&start.join_index.to_le_bytes());
                for list in [&start.join_voters, &start.join_learners] {
                    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
                    for node in list {
                        out.extend_from_slice(&node.to_le_bytes());
                    }
                }
            }
            MoveEntry::Finish {
                from, to, replicas, ..
            } => {
                assert!(
                    replicas.len() <= MAX_MOVE_MEMBERS,
                    "a group has a few replicas"
                );
                out.extend_from_slice(&from.to_le_bytes());
                out.extend_from_slice(&to.to_le_bytes());
                out.extend_from_slice(&(replicas.len() as u32).to_le_bytes());
                for (node, shard) in replicas {
                    out.extend_from_slice(&node.to_le_bytes());
                    out.extend_from_slice(&shard.to_le_bytes());
                }
            }
            MoveEntry::Abandon { from, to, .. } => {
                out.extend_from_slice(&from.to_le_bytes());
                out.extend_from_slice(&to.to_le_bytes());
            }
            MoveEntry::Node { node, state } => {
                out.extend_from_slice(&node.to_le_bytes());
                out.push(state.code());
            }
            MoveEntry::Join(node) => encode_node(node, out),
            MoveEntry::Leader { node, .. } => out.extend_from_slice(&node.to_le_bytes()),
        }
    }

    /// Decodes a move entry (its four prefix bytes included).
    pub fn decode(bytes: &[u8]) -> Result<MoveEntry, EntryDecodeError> {
        let mut at = Cursor::new(bytes, 2);
        let action = at.u8()?;
        let version = bytes.get(1).copied().unwrap_or(0);
        if version != MOVE_VERSION {
            return Err(EntryDecodeError::Unknown {
                kind: MOVE_KIND,
                version,
            });
        }
        at.at = 4;
        let group = at.u32()?;
        match action {
            1 => {
                let from = at.u64()?;
                let to = (at.u64()?, at.u32()?);
                let join_index = at.u64()?;
                let join_voters = at.nodes()?;
                let join_learners = at.nodes()?;
                Ok(MoveEntry::Start(ReplicaMove {
                    group,
                    from,
                    to,
                    join_voters,
                    join_learners,
                    join_index,
                }))
            }
            2 => {
                let (from, to) = (at.u64()?, at.u64()?);
                let count = at.count()?;
                let replicas = (0..count)
                    .map(|_| Ok((at.u64()?, at.u32()?)))
                    .collect::<Result<Vec<_>, EntryDecodeError>>()?;
                Ok(MoveEntry::Finish {
                    group,
                    from,
                    to,
                    replicas,
                })
            }
            3 => Ok(MoveEntry::Abandon {
                group,
                from: at.u64()?,
                to: at.u64()?,
            }),
            4 => {
                let node = at.u64()?;
                let state = NodeService::of_code(at.u8()?).ok_or(EntryDecodeError::Unknown {
                    kind: MOVE_KIND,
                    version,
                })?;
                Ok(MoveEntry::Node { node, state })
            }
            5 => Ok(MoveEntry::Join(at.node()?)),
            6 => Ok(MoveEntry::Leader {
                group,
                node: at.u64()?,
            }),
            _ => Err(EntryDecodeError::Unknown {
                kind: MOVE_KIND,
                version,
            }),
        }
    }
}

/// Whether a node's host and rack are short enough to record.
fn node_labels_fit(node: &PeerAddress) -> bool {
    node.host.len() <= MAX_NODE_LABEL_BYTES
        && node
            .rack
            .as_ref()
            .is_none_or(|r| r.len() <= MAX_NODE_LABEL_BYTES)
}

/// Appends a joined node's record: node u64 | client port u16 | peer port u16 | host
/// length u16 | host | rack length u16 | rack (shared with the snapshot's node table).
pub(crate) fn encode_node(node: &PeerAddress, out: &mut Vec<u8>) {
    assert!(
        node_labels_fit(node),
        "a joined node's labels are bounded at its join"
    );
    out.extend_from_slice(&u64::from(node.node_id).to_le_bytes());
    out.extend_from_slice(&node.base_port.to_le_bytes());
    out.extend_from_slice(&node.peer_port.to_le_bytes());
    for label in [node.host.as_str(), node.rack.as_deref().unwrap_or("")] {
        out.extend_from_slice(&(label.len() as u16).to_le_bytes());
        out.extend_from_slice(label.as_bytes());
    }
}

/// Decodes what `encode_node` wrote from `bytes` at `at`; the position after it.
pub(crate) fn decode_node(
    bytes: &[u8],
    at: usize,
) -> Result<(PeerAddress, usize), EntryDecodeError> {
    let mut cursor = Cursor::new(bytes, at);
    let node = cursor.node()?;
    Ok((node, cursor.at))
}

/// A move entry's compound fields.
impl Cursor<'_> {
    /// A member count, bounded by `MAX_MOVE_MEMBERS`.
    fn count(&mut self) -> Result<usize, EntryDecodeError> {
        let count = self.u32()? as usize;
        if count > MAX_MOVE_MEMBERS {
            return Err(EntryDecodeError::BadGroups);
        }
        Ok(count)
    }

    fn nodes(&mut self) -> Result<Vec<u64>, EntryDecodeError> {
        (0..self.count()?).map(|_| self.u64()).collect()
    }

    /// A bounded UTF-8 label.
    fn label(&mut self) -> Result<String, EntryDecodeError> {
        let length = usize::from(self.u16()?);
        if length > MAX_NODE_LABEL_BYTES {
            return Err(EntryDecodeError::BadNode);
        }
        let raw = self.take(length)?;
        String::from_utf8(raw.to_vec()).map_err(|_| EntryDecodeError::BadNode)
    }

    /// A joined node's record.
    fn node(&mut self) -> Result<PeerAddress, EntryDecodeError> {
        let node_id = u32::try_from(self.u64()?).map_err(|_| EntryDecodeError::BadNode)?;
        let (base_port, peer_port) = (self.u16()?, self.u16()?);
        let host = self.label()?;
        let rack = Some(self.label()?).filter(|rack| !rack.is_empty());
        Ok(PeerAddress {
            node_id,
            host,
            base_port,
            peer_port,
            rack,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(group: u32, from: u64, to: u64) -> MoveEntry {
        MoveEntry::Start(ReplicaMove {
            group,
            from,
            to: (to, 1),
            join_voters: vec![1, 2, 3],
            join_learners: vec![to],
            join_index: 42,
        })
    }

    fn finish(group: u32, from: u64, to: u64, replicas: &[(u64, u32)]) -> MoveEntry {
        MoveEntry::Finish {
            group,
            from,
            to,
            replicas: replicas.to_vec(),
        }
    }

    #[test]
    fn entries_round_trip_and_bad_bytes_are_refused() {
        let entries = [
            start(3, 1, 4),
            finish(3, 1, 4, &[(2, 0), (3, 0), (4, 1)]),
            MoveEntry::Abandon {
                group: 3,
                from: 1,
                to: 4,
            },
            MoveEntry::Node {
                node: 2,
                state: NodeService::Draining,
            },
            MoveEntry::Join(joined(7, Some("east"))),
            MoveEntry::Leader { group: 3, node: 5 },
            MoveEntry::Join(joined(8, None)),
        ];
        for entry in entries {
            let mut bytes = Vec::new();
            entry.encode(&mut bytes);
            assert_eq!(MoveEntry::decode(&bytes), Ok(entry.clone()));
            for cut in 0..bytes.len() {
                assert!(MoveEntry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
        let mut bytes = Vec::new();
        finish(1, 2, 1, &[(1, 0)]).encode(&mut bytes);
        bytes[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(MoveEntry::decode(&bytes), Err(EntryDecodeError::BadGroups));
    }

    #[test]
    fn a_move_starts_once_finishes_once_and_never_returns_to_a_node_that_left() {
        let mut moves = ReplicaMoves::default();
        assert!(moves.apply(start(3, 1, 4)));
        assert!(!moves.apply(start(3, 2, 5)), "one move per group");
        let wrong = finish(3, 1, 4, &[(1, 0), (2, 0), (3, 0)]);
        assert!(
            !moves.apply(wrong),
            "a finish must name the new replica, not the old"
        );
        let another = finish(3, 2, 5, &[(1, 0), (3, 0), (5, 1)]);
        assert!(!moves.apply(another), "only the move under way finishes");
        let other_abandon = MoveEntry::Abandon {
            group: 3,
            from: 2,
            to: 5,
        };
        assert!(
            !moves.apply(other_abandon),
            "only the move under way rolls back"
        );
        let done = finish(3, 1, 4, &[(2, 0), (3, 0), (4, 1)]);
        assert!(moves.apply(done.clone()));
        assert!(!moves.apply(done), "finished once");
        assert!(moves.under_way(3).is_none());
        assert!(moves.has_left(3, 1));
        assert!(!moves.apply(start(3, 4, 1)), "node 1 left group 3");
        assert!(moves.apply(start(3, 2, 5)));
        let removing_the_target = MoveEntry::Node {
            node: 5,
            state: NodeService::Removed,
        };
        assert!(
            !moves.apply(removing_the_target),
            "a node a move goes to stays"
        );
        assert!(moves.apply(MoveEntry::Abandon {
            group: 3,
            from: 2,
            to: 5,
        }));
        assert!(
            moves.has_left(3, 5),
            "an abandoned learner's id is used up too"
        );
        let draining = MoveEntry::Node {
            node: 6,
            state: NodeService::Draining,
        };
        assert!(moves.apply(draining));
        assert!(
            !moves.apply(start(3, 2, 6)),
            "nothing moves onto a draining node"
        );
        assert_eq!(
            moves.replaced().collect::<Vec<_>>(),
            vec![(3, &[(2, 0), (3, 0), (4, 1)][..])]
        );
    }

    fn joined(node_id: u32, rack: Option<&str>) -> PeerAddress {
        PeerAddress {
            node_id,
            host: format!("host-{node_id}"),
            base_port: 9700,
            peer_port: 9800,
            rack: rack.map(str::to_string),
        }
    }

    #[test]
    fn a_node_joins_once_may_change_its_addresses_and_never_after_removal() {
        let mut moves = ReplicaMoves::default();
        assert!(moves.apply(MoveEntry::Join(joined(4, None))));
        assert!(
            !moves.apply(MoveEntry::Join(joined(4, None))),
            "joined already"
        );
        let mut moved = joined(4, None);
        moved.host = "elsewhere".into();
        assert!(moves.apply(MoveEntry::Join(moved.clone())));
        assert_eq!(moves.joined().collect::<Vec<_>>(), vec![&moved]);
        let mut long = joined(5, None);
        long.host = "h".repeat(MAX_NODE_LABEL_BYTES + 1);
        assert!(!moves.apply(MoveEntry::Join(long)), "labels are bounded");
        assert!(moves.apply(MoveEntry::Node {
            node: 6,
            state: NodeService::Removed,
        }));
        assert!(
            !moves.apply(MoveEntry::Join(joined(6, None))),
            "a removed node never comes back"
        );
        for node in 10..10 + MAX_JOINED_NODES as u32 {
            moves.apply(MoveEntry::Join(joined(node, None)));
        }
        assert_eq!(moves.joined().count(), MAX_JOINED_NODES);
    }

    #[test]
    fn a_preferred_leader_is_recorded_per_group_and_replaced() {
        let mut moves = ReplicaMoves::default();
        let lead = |group, node| MoveEntry::Leader { group, node };
        assert!(moves.apply(lead(3, 5)));
        assert!(!moves.apply(lead(3, 5)), "recorded already");
        assert!(!moves.apply(lead(3, 0)), "no node 0");
        assert!(moves.apply(lead(3, 6)));
        assert!(moves.apply(lead(4, 6)));
        assert_eq!(
            moves.preferred_leaders().collect::<Vec<_>>(),
            vec![(3, 6), (4, 6)]
        );
    }

    #[test]
    fn a_node_drains_returns_to_service_or_is_removed_for_good() {
        let mut moves = ReplicaMoves::default();
        let set = |moves: &mut ReplicaMoves, state| moves.apply(MoveEntry::Node { node: 2, state });
        assert_eq!(moves.node_state(2), NodeService::Active);
        assert!(!set(&mut moves, NodeService::Active), "active already");
        assert!(set(&mut moves, NodeService::Draining));
        assert_eq!(moves.node_state(2), NodeService::Draining);
        assert!(set(&mut moves, NodeService::Active));
        assert!(set(&mut moves, NodeService::Removed));
        assert!(!set(&mut moves, NodeService::Active), "removed for good");
        assert_eq!(moves.node_state(2), NodeService::Removed);
    }
}
