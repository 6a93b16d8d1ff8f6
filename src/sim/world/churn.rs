//! Topic churn: in half the seeds a second topic is created and deleted over and over
//! while faults run, so deletions race appends, snapshots, installs and leader changes,
//! and some fire-and-forget batches go to it (refused once it is gone). Its choices come
//! from their own generator: seeds without churn run exactly as they did before it.
//!
//! It checks nothing itself: every replica ends with the same applied state (S5), the
//! deleted topic's partitions included, and the main topic's history is untouched (P1).

use crate::broker::log_entry::BrokerEntry;
use crate::replication::prng::Prng;
use crate::sim::workload::Purpose;
use crate::sim::world::{Pick, World};

const CHURN_DOMAIN: u64 = 50;
/// The churned topic's name.
pub const SCRATCH_TOPIC: &str = "scratch";
/// Between two creations or deletions.
const CHURN_EVERY_NS: u64 = 150_000_000;

/// The churn's own random choices, and whether this seed churns.
pub struct Churn {
    pub(super) rng: Prng,
    /// Whether this seed churns a topic.
    pub enabled: bool,
    /// The scratch topic's newest id at the controller (data-group seeds).
    last_scratch: Option<u32>,
}

impl Churn {
    /// This seed's churn.
    pub fn new(seed: u64) -> Churn {
        let mut rng = Prng::derive(seed, CHURN_DOMAIN, 0);
        let enabled = rng.chance(1, 2);
        Churn {
            rng,
            enabled,
            last_scratch: None,
        }
    }
}

impl World {
    /// Proposes the scratch topic's creation or deletion (as the chosen replica sees it)
    /// and comes back later, while faults run.
    pub(super) fn churn(&mut self) {
        if !self.churn.enabled || !self.faults_on {
            return;
        }
        self.wake_admin(self.now + CHURN_EVERY_NS);
        if self.controller.is_some() {
            return self.churn_at_controller();
        }
        let target = self.pick_node(Pick::Churn);
        let Some(replica) = self.nodes.get_mut(&target).and_then(|n| n.replica.as_mut()) else {
            return;
        };
        let data = match replica.state().topics.get(SCRATCH_TOPIC).map(|t| t.id) {
            Some(topic_id) => BrokerEntry::DeleteTopic { topic_id }.encode(),
            None => BrokerEntry::CreateTopic {
                topic_id: replica.reserve_topic_id(),
                partitions: 1,
                name: SCRATCH_TOPIC,
                groups: Vec::new(),
                new_groups: Vec::new(),
            }
            .encode(),
        };
        self.stats.topic_churn += 1;
        let request = self.workload.request(Purpose::Churn);
        self.propose_admin(target, request, data);
    }

    /// Data-group seeds: the controller creates or deletes the scratch topic, and every
    /// node learns it at its own time.
    fn churn_at_controller(&mut self) {
        let Some(controller) = self.controller.as_mut() else {
            return;
        };
        match controller.topics.get(SCRATCH_TOPIC).map(|t| t.id) {
            Some(id) => {
                controller.topics.apply_delete(id);
            }
            None => self.churn.last_scratch = Some(controller.create(SCRATCH_TOPIC, 1)),
        }
        self.stats.topic_churn += 1;
        self.tell_controller_topics();
    }

    /// The scratch topic's id as some replica (or, in data-group seeds, the controller)
    /// knows it, for a fire-and-forget batch half the time (churning seeds only).
    pub(super) fn scratch_topic_for_a_batch(&mut self) -> Option<u32> {
        if !self.churn.enabled || !self.churn.rng.chance(1, 2) {
            return None;
        }
        if self.controller.is_some() {
            return self.churn.last_scratch;
        }
        self.nodes.values().find_map(|n| {
            n.replica
                .as_ref()
                .and_then(|r| r.state().topics.get(SCRATCH_TOPIC).map(|t| t.id))
        })
    }
}
