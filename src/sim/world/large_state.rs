//! Large state: in some seeds (`Profile::large_state_topics`) the admin creates many
//! topics with long names once the main topic exists, so the applied state, which a Raft
//! snapshot carries, outgrows the frame limit; a follower behind the leader's compacted
//! log is then sent a snapshot larger than any frame (in chunks, `transport::chunks`).
//!
//! The topics are proposed at the leader a few at a time, never waited for (a proposal
//! lost to a leader change is simply not made again), and never deleted (in data-group
//! seeds they are created at the simulated controller instead). Their ids come
//! from a range of their own, far above the ids the admin reserves for the main and the
//! churned topic, so no two topics ever share an id. With every eighth topic a user and an
//! access rule are proposed too (controller seeds only). It checks nothing itself: every
//! replica ends with the same applied state (S5), and no frame goes over the limit (S8).

use crate::broker::access::AccessEntry;
use crate::broker::log_entry::BrokerEntry;
use crate::constants::MIN_SCRAM_ITERATIONS;
use crate::replication::events::Proposal;
use crate::security::acl::{Operation, Pattern, Rule};
use crate::security::scram::StoredCredential;
use crate::sim::workload::Purpose;
use crate::sim::world::{Event, World};

/// Bytes of each large-state topic's name.
pub const LARGE_STATE_TOPIC_NAME_BYTES: usize = 200;

/// Id of the first large-state topic.
const FIRST_TOPIC_ID: u32 = 1 << 20;

/// Topics proposed per wake-up.
const TOPICS_PER_WAKE: u32 = 16;

/// Between two wake-ups, ns.
const WAKE_EVERY_NS: u64 = 5_000_000;

/// The name of large-state topic `index`: distinct, `LARGE_STATE_TOPIC_NAME_BYTES` long.
pub fn large_state_topic_name(index: u32) -> String {
    let mut name = format!("large-state-{index:06}-");
    name.extend(std::iter::repeat_n(
        'x',
        LARGE_STATE_TOPIC_NAME_BYTES - name.len(),
    ));
    name
}

/// Every this many large-state topics, a user and an access rule are created too (in
/// the controller's own group): the snapshot carries them as well.
const ACCESS_EVERY: u32 = 8;

/// The user and the rule proposed with large-state topic `index`: a credential of fixed
/// bytes (no key derivation: nothing authenticates in the simulator), a rule naming it.
pub fn access_entries(index: u32) -> impl Iterator<Item = AccessEntry> {
    let name = format!("user-{index:06}");
    let byte = index as u8;
    let credential = StoredCredential {
        salt: vec![byte; 16],
        iterations: MIN_SCRAM_ITERATIONS,
        stored_key: [byte; 32],
        server_key: [byte.wrapping_add(1); 32],
    };
    let rule = Rule {
        principal: Some(name.clone()),
        pattern: Pattern::TopicPrefix(format!("large-state-{index:06}")),
        operation: Some(Operation::Produce),
        allow: true,
    };
    [
        AccessEntry::SetUser { name, credential },
        AccessEntry::AddRule(rule),
    ]
    .into_iter()
}

impl World {
    /// Proposes the next large-state topics at the leader, and comes back until all were
    /// proposed (while faults run: once they stop, the state stays as it is).
    pub(super) fn grow_state(&mut self) {
        let target = self.profile.large_state_topics;
        if !self.faults_on || self.large_state_proposed >= target {
            return;
        }
        self.schedule(self.now + WAKE_EVERY_NS, Event::GrowState);
        if self.controller.is_some() {
            return self.grow_state_at_controller();
        }
        let leader = self.nodes.values().find_map(|n| {
            n.replica
                .as_ref()
                .filter(|r| n.up && !n.paused && r.is_leader())
                .map(|_| n.id)
        });
        let Some(leader) = leader else {
            return;
        };
        let first = self.large_state_proposed;
        let end = (first + TOPICS_PER_WAKE).min(target);
        for index in first..end {
            let name = large_state_topic_name(index);
            let topic = BrokerEntry::CreateTopic {
                topic_id: FIRST_TOPIC_ID + index,
                partitions: 1,
                name: &name,
                groups: vec![0],
                new_groups: Vec::new(),
            }
            .encode();
            let mut entries = vec![topic];
            if index % ACCESS_EVERY == 0 {
                entries.extend(access_entries(index).map(|e| BrokerEntry::Access(e).encode()));
            }
            for data in entries {
                let request = self.workload.request(Purpose::LargeState);
                self.propose(
                    leader,
                    Proposal {
                        request,
                        data,
                        wait: false,
                    },
                );
            }
        }
        self.large_state_proposed = end;
    }

    /// Data-group seeds: the topics are created at the controller, and the group's leader
    /// copies them into its log (`replication::topic_mirror`).
    fn grow_state_at_controller(&mut self) {
        let first = self.large_state_proposed;
        let end = (first + TOPICS_PER_WAKE).min(self.profile.large_state_topics);
        let Some(controller) = self.controller.as_mut() else {
            return;
        };
        for index in first..end {
            controller.create(&large_state_topic_name(index), 1);
        }
        self.large_state_proposed = end;
        self.tell_controller_topics();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_of_the_set_length() {
        let (a, b) = (large_state_topic_name(0), large_state_topic_name(999_999));
        assert_ne!(a, b);
        assert_eq!(a.len(), LARGE_STATE_TOPIC_NAME_BYTES);
        assert_eq!(b.len(), LARGE_STATE_TOPIC_NAME_BYTES);
    }
}
