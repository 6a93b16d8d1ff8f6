//! Applying committed entries to the shard's state and answering the proposals that
//! wait for them.
//!
//! Entries apply one by one, in index order, each exactly once (A4); a committed entry
//! that does not decode is a bug, and crashes with its index, never skipped. A waiter is
//! answered with what applying its entry did when the entry at its index has the term it
//! was proposed in; another term there means another leader's entry replaced it (a
//! definite refusal). Waiters that can no longer learn their fate (leadership lost,
//! storage failed, a snapshot installed over them) are answered `Indeterminate`.

use raft::eraftpb::{Entry, EntryType};

use crate::broker::state::{Applied, ShardState};
use crate::replication::events::{Effect, ShardError};
use crate::replication::log_store::LogStore;
use crate::replication::replica::Replica;

impl<S: LogStore> Replica<S> {
    /// Applies committed entries in order and answers their waiters. Topic changes are
    /// told once per pass (a copy of the whole list per change made a pass of n creations,
    /// a restart's replay, cost n² copies): at the place of the first change, before its
    /// answer, with the list as the pass leaves it.
    pub(crate) fn apply(&mut self, committed: Vec<Entry>, effects: &mut Vec<Effect>) {
        let mut any_batch = false;
        let mut topics_changed_at = None;
        for entry in committed {
            let next_topic_id = self.state.topics.next_id();
            let applied = match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_one(&entry),
                _ => self.apply_conf_entry(&entry, effects),
            };
            // A creation ignored (its name taken by a racing one) still uses up its id:
            // the shards are told that too, so their copy is the applied topics.
            let id_used = self.state.topics.next_id() != next_topic_id;
            let topics_changed = id_used || matches!(applied, Applied::TopicsChanged);
            if matches!(applied, Applied::Batch { .. }) {
                any_batch = true;
            } else if topics_changed && topics_changed_at.is_none() {
                topics_changed_at = Some(effects.len());
                effects.push(Effect::TopicsChanged {
                    topics: Default::default(),
                });
            }
            if let Some(waiter) = self.waiters.remove(&entry.index) {
                let outcome = if entry.term == waiter.term {
                    Ok(applied)
                } else {
                    Err(ShardError::NotLeader)
                };
                effects.push(Effect::Answer {
                    request: waiter.request,
                    outcome,
                });
            }
        }
        if let Some(at) = topics_changed_at {
            effects[at] = Effect::TopicsChanged {
                topics: self.state.topics.clone(),
            };
        }
        if any_batch {
            effects.push(Effect::DataArrived);
        }
        self.maybe_take_snapshot(effects);
    }

    fn apply_one(&mut self, entry: &Entry) -> Applied {
        assert_eq!(
            entry.index,
            self.state.applied_index() + 1,
            "entries apply one by one, in order (A4)"
        );
        match self.state.apply(entry.index, &entry.data) {
            Ok(applied) => applied,
            Err(error) => panic!(
                "committed entry {} (term {}) does not decode: {error}; its crc32c passed, so \
                 this is a bug, not damage",
                entry.index, entry.term
            ),
        }
    }

    /// Answers every waiter with `error` (their entries' fate is unknown here).
    pub(crate) fn answer_all_waiters(&mut self, error: ShardError, effects: &mut Vec<Effect>) {
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            effects.push(Effect::Answer {
                request: waiter.request,
                outcome: Err(error.clone()),
            });
        }
    }

    /// A snapshot from the leader is on disk and the store restarted after it: replace the
    /// applied state (item 12: waiters at or below it are answered).
    pub(crate) fn installed_snapshot(
        &mut self,
        index: u64,
        state: ShardState,
        effects: &mut Vec<Effect>,
    ) {
        let covered: Vec<u64> = self.waiters.range(..=index).map(|(i, _)| *i).collect();
        for waiter_index in covered {
            if let Some(waiter) = self.waiters.remove(&waiter_index) {
                effects.push(Effect::Answer {
                    request: waiter.request,
                    outcome: Err(ShardError::Indeterminate),
                });
            }
        }
        // The controller's copy is this node's, not the leader's: it stays.
        let controller_copy = self.state.controller_copy.take();
        self.state = state;
        self.state.controller_copy = controller_copy;
        self.last_snapshot_index = index;
        self.installed_at = index;
        self.kept_snapshots.clear();
        effects.push(Effect::TopicsChanged {
            topics: self.state.topics.clone(),
        });
        effects.push(Effect::DataArrived);
        tracing::info!(
            group = self.config.group_id,
            index,
            "installed a snapshot from the leader"
        );
    }
}
