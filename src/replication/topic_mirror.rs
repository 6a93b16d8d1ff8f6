//! A data group's topics: its leader copies the controller's topic changes into the
//! group's own log, so that every replica applies a creation or deletion at the same
//! index (the copies of the controller's list reach each replica at its own time, and
//! a replica that applied a deletion when its copy arrived stored a batch committed just
//! after it where the others did not: the simulator's data-group seeds).
//!
//! Owns only the decision of which entries to propose; apply (`broker::state`) does the
//! rest. Never changes the applied state itself, never consults the copy at apply.
//!
//! Soundness: topic ids are never reused, and a copy is the controller's list at some
//! point of its log. So a topic missing from a copy whose next id is above its id was
//! deleted for good, while a stale copy (a lagging node) never deletes a topic created
//! after it; and the log's own next id marks every id it has seen, so a stale copy never
//! creates a topic the log already deleted. The leader mirrors only once it has applied
//! every entry of earlier terms, so its applied topics are the log's.

use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::Topics;
use crate::replication::log_store::LogStore;
use crate::replication::replica::Replica;

/// The entries that bring the log's topics (`log`) to the controller's (`copy`): the
/// deletions first, of the log's topics and of any other topic the group stored batches
/// for (`stored`: batches that came before the log heard of their topic, which the
/// controller then deleted), then the creations, in id order. Deletions go first: a
/// deleted topic's name may be taken by a newer one, and a creation under a name the
/// log still holds would be ignored.
pub fn mirror_entries(
    log: &Topics,
    copy: &Topics,
    stored: impl Iterator<Item = u32>,
) -> Vec<Vec<u8>> {
    let mut deleted: Vec<u32> = log
        .list()
        .map(|t| t.id)
        .chain(stored)
        .filter(|&id| copy.was_deleted(id))
        .collect();
    deleted.sort_unstable();
    deleted.dedup();
    let mut created: Vec<_> = copy.list().filter(|t| t.id >= log.next_id()).collect();
    created.sort_by_key(|t| t.id);
    let deletions = deleted
        .into_iter()
        .map(|topic_id| BrokerEntry::DeleteTopic { topic_id }.encode());
    let creations = created.into_iter().map(|t| {
        BrokerEntry::CreateTopic {
            topic_id: t.id,
            partitions: t.partitions,
            name: &t.name,
            groups: t.groups.clone(),
            new_groups: Vec::new(),
        }
        .encode()
    });
    deletions.chain(creations).collect()
}

impl<S: LogStore> Replica<S> {
    /// A data group's leader proposes what brings its log's topics to the controller's
    /// copy, unless its last such entries are still on their way to apply.
    pub(crate) fn mirror_topics(&mut self) {
        if self.config.controller_group || !self.is_leader() || self.is_silent() {
            return;
        }
        let term = self.raw.raft.term;
        let applied = self.state.applied_index();
        if applied < self.term_start_index {
            return; // earlier terms' entries are not all applied: the topics may lag
        }
        if let Some((pending_term, index)) = self.mirror_pending {
            if pending_term == term && applied < index {
                return;
            }
        }
        self.mirror_pending = None;
        let Some(copy) = self.state.controller_copy.as_ref() else {
            return;
        };
        let stored = self.state.stored_topic_ids();
        for data in mirror_entries(&self.state.topics, copy, stored.into_iter()) {
            if self.admit_proposals(data.len() as u64, 0).is_err() {
                return; // tried again at the next check
            }
            if self.raw.propose(Vec::new(), data).is_err() {
                return;
            }
            self.mirror_pending = Some((term, self.raw.raft.raft_log.last_index()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::state::TopicInfo;

    fn topics(live: &[u32], next_id: u32) -> Topics {
        let mut topics = Topics::default();
        for &id in live {
            topics.apply_create(TopicInfo {
                id,
                name: format!("t{id}"),
                partitions: 1,
                groups: vec![id % 2],
            });
        }
        topics.next_id = topics.next_id.max(next_id);
        topics
    }

    fn decoded(entries: Vec<Vec<u8>>) -> Vec<String> {
        entries
            .iter()
            .map(|e| match BrokerEntry::decode(e).expect("decodes") {
                BrokerEntry::CreateTopic { topic_id, .. } => format!("create {topic_id}"),
                BrokerEntry::DeleteTopic { topic_id } => format!("delete {topic_id}"),
                BrokerEntry::RecordBatch { .. } => "batch".to_string(),
                BrokerEntry::Group(_) => "group".to_string(),
                BrokerEntry::Move(_) => "move".to_string(),
                BrokerEntry::Access(_) => "access".to_string(),
            })
            .collect()
    }

    #[test]
    fn deletions_come_first_then_creations_in_id_order() {
        let log = topics(&[1, 2], 3);
        let copy = topics(&[1, 4, 3], 5);
        assert_eq!(
            decoded(mirror_entries(&log, &copy, [2, 7].into_iter())),
            ["delete 2", "create 3", "create 4"]
        );
        assert!(mirror_entries(&copy, &copy, std::iter::empty()).is_empty());
    }

    #[test]
    fn a_topic_stored_before_the_log_heard_of_it_is_deleted_too() {
        // A batch of topic 3 was stored before the leader copied its creation, and the
        // controller deleted it before that.
        let log = topics(&[1], 2);
        let copy = topics(&[1], 4);
        assert_eq!(
            decoded(mirror_entries(&log, &copy, [1, 3].into_iter())),
            ["delete 3"]
        );
    }

    #[test]
    fn a_stale_copy_neither_deletes_newer_topics_nor_recreates_deleted_ones() {
        // The log saw topics up to 5; 3 was deleted. A copy from before 4 and 5 existed
        // (next id 4), still holding 3.
        let log = topics(&[1, 4, 5], 6);
        let stale = topics(&[1, 3], 4);
        assert!(mirror_entries(&log, &stale, [1, 4].into_iter()).is_empty());
    }
}
