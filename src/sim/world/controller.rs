//! Data-group seeds: in half the seeds the simulated group is not the controller's but a
//! data group, which learns the topics the way every shard but shard 0 does — from a
//! copy of the controller's list, told to each replica at its own time (its node's shard
//! 0 applied the change then). The world holds the controller's list itself and tells
//! each node every change after a random delay (in order per node, as a shard channel
//! does). Whatever a data group's replicas decide from these copies must still be the
//! same on every replica (S5): the copies arrive at different log positions.
//!
//! Its choices come from their own generator; it checks nothing itself.

use crate::broker::state::{TopicInfo, Topics};
use crate::replication::events::Input;
use crate::replication::prng::Prng;
use crate::sim::world::{Event, World};

const CONTROLLER_DOMAIN: u64 = 51;

/// Longest delay before a node learns a change of the controller's list, ns.
const MAX_TELL_DELAY_NS: u64 = 300_000_000;

/// The controller of a data-group seed.
pub struct SimController {
    /// The controller's topics (authoritative).
    pub topics: Topics,
    /// When the last change told to each node lands there (later ones land after it).
    told_at: std::collections::BTreeMap<u64, u64>,
    rng: Prng,
}

impl SimController {
    /// This seed's controller, if the group is a data group.
    pub fn draw(seed: u64) -> Option<SimController> {
        let mut rng = Prng::derive(seed, CONTROLLER_DOMAIN, 0);
        rng.chance(1, 2).then(|| SimController {
            topics: Topics::default(),
            told_at: Default::default(),
            rng,
        })
    }

    /// Creates a topic; its id.
    pub fn create(&mut self, name: &str, partitions: u32) -> u32 {
        let id = self.topics.next_id();
        self.topics.apply_create(TopicInfo {
            id,
            name: name.to_string(),
            partitions,
            groups: Vec::new(),
        });
        id
    }
}

impl World {
    /// Tells every node the controller's list, each after its own delay.
    pub(super) fn tell_controller_topics(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for node in ids {
            self.tell_controller_topics_to(node);
        }
    }

    /// Tells `node` the controller's list after a delay (its shard 0 applied it then).
    pub(super) fn tell_controller_topics_to(&mut self, node: u64) {
        let now = self.now;
        let Some(incarnation) = self.nodes.get(&node).map(|n| n.incarnation) else {
            return;
        };
        let Some(controller) = self.controller.as_mut() else {
            return;
        };
        let delay = controller.rng.range(0, MAX_TELL_DELAY_NS);
        let at = (now + delay).max(controller.told_at.get(&node).copied().unwrap_or(0));
        controller.told_at.insert(node, at);
        let topics = controller.topics.clone();
        self.schedule(
            at,
            Event::ControllerTopics {
                node,
                incarnation,
                topics,
            },
        );
    }

    /// A node learns the controller's list.
    pub(super) fn controller_topics_arrive(&mut self, node: u64, incarnation: u64, topics: Topics) {
        if self
            .nodes
            .get(&node)
            .is_some_and(|n| n.up && n.incarnation == incarnation)
        {
            self.feed(node, Input::ControllerTopics { topics });
        }
    }

    /// Data-group seeds: the admin's step. Creates the producers' topic at the
    /// controller, then churns (when the seed churns) the scratch topic there.
    pub(super) fn controller_admin(&mut self, topic: &str) {
        let Some(controller) = self.controller.as_mut() else {
            return;
        };
        if self.workload.topic_id.is_none() {
            let id = controller.create(topic, self.workload.partitions);
            self.workload.topic_id = Some(id);
            self.tell_controller_topics();
        }
        self.churn();
    }

    /// Whether every node up has been told the controller's latest list and each
    /// healthy replica's applied topics match it (the liveness phase waits for it).
    pub fn controller_settled(&self) -> bool {
        let Some(controller) = self.controller.as_ref() else {
            return true;
        };
        let wanted: Vec<u32> = controller.topics.list().map(|t| t.id).collect();
        let told = controller.told_at.values().all(|&at| at <= self.now);
        told && self
            .nodes
            .values()
            .filter(|n| self.is_member(n.id))
            .all(|n| {
                n.replica.as_ref().is_none_or(|r| {
                    let state = r.state();
                    r.failure().is_some()
                        || (state.topics.list().map(|t| t.id).eq(wanted.iter().copied())
                            && state.stored_topic_ids().iter().all(|t| wanted.contains(t)))
                })
            })
    }
}
