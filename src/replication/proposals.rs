//! Clients' entries into the leader's log: admission (back-pressure before raft-rs takes
//! anything, R8) and one raft-rs proposal per input.
//!
//! The driver gathers the proposals of one executor pass into one `Input::Propose`: one
//! raft-rs step appends them all, so the followers get them in one append message each
//! and the disk in one flush, instead of a Ready pass, two peer frames and a flush per
//! request. Order is kept: an entry is admitted only if every entry before it in the
//! input was (an idempotent producer's batches never pass each other). Owns only the
//! admission and the waiters it registers; it never answers a waiter after apply.

use raft::eraftpb::{Entry, Message, MessageType};

use crate::broker::state::Applied;
use crate::replication::events::{Effect, Proposal, ShardError};
use crate::replication::log_store::LogStore;
use crate::replication::replica::{Replica, Waiter};

/// Answers every proposal with the same refusal.
pub(crate) fn refuse_all(
    proposals: Vec<Proposal>,
    refusal: &ShardError,
    effects: &mut Vec<Effect>,
) {
    for proposal in proposals {
        effects.push(Effect::Answer {
            request: proposal.request,
            outcome: Err(refusal.clone()),
        });
    }
}

impl<S: LogStore> Replica<S> {
    pub(crate) fn on_propose(&mut self, proposals: Vec<Proposal>, effects: &mut Vec<Effect>) {
        let admitted = self.admit_in_order(proposals, effects);
        if admitted.is_empty() {
            return;
        }
        let count = admitted.len() as u64;
        let before = self.raw.raft.raft_log.last_index();
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.from = self.raw.raft.id;
        let mut requests = Vec::with_capacity(admitted.len());
        let mut entries = Vec::with_capacity(admitted.len());
        for proposal in admitted {
            requests.push((proposal.request, proposal.wait));
            entries.push(Entry {
                data: proposal.data.into(),
                ..Default::default()
            });
        }
        message.set_entries(entries.into());
        if let Err(error) = self.raw.raft.step(message) {
            let refused = if self.raw.raft.lead_transferee.is_some() || !self.is_leader() {
                ShardError::NotLeader
            } else {
                tracing::debug!(group = self.config.group_id, %error, "proposals dropped");
                ShardError::Overloaded
            };
            for (request, _) in requests {
                effects.push(Effect::Answer {
                    request,
                    outcome: Err(refused.clone()),
                });
            }
            return;
        }
        let last = self.raw.raft.raft_log.last_index();
        assert_eq!(
            last,
            before + count,
            "a proposal adds one entry per request (A7)"
        );
        let term = self.raw.raft.term;
        for (index, (request, wait)) in (before + 1..).zip(requests) {
            if wait {
                let previous = self.waiters.insert(index, Waiter { term, request });
                assert!(previous.is_none(), "one waiter per index (A7): {index}");
            } else {
                effects.push(Effect::Answer {
                    request,
                    outcome: Ok(Applied::Nothing),
                });
            }
        }
    }

    /// The proposals raft-rs may take, in order; the others are answered. A record batch
    /// is refused on its own while space is short (`low_space`); the first refusal for
    /// load or leadership refuses every proposal after it too.
    fn admit_in_order(
        &mut self,
        proposals: Vec<Proposal>,
        effects: &mut Vec<Effect>,
    ) -> Vec<Proposal> {
        let mut admitted = Vec::with_capacity(proposals.len());
        let (mut bytes, mut waiting) = (0u64, 0usize);
        let mut refused: Option<ShardError> = None;
        for proposal in proposals {
            let size = proposal.data.len() as u64;
            if refused.is_none() {
                refused = self.admit_proposals(bytes + size, waiting).err();
            }
            let refusal = refused
                .clone()
                .or_else(|| self.refusal_for_space(&proposal.data));
            match refusal {
                Some(refusal) => effects.push(Effect::Answer {
                    request: proposal.request,
                    outcome: Err(refusal),
                }),
                None => {
                    bytes += size;
                    waiting += usize::from(proposal.wait);
                    admitted.push(proposal);
                }
            }
        }
        admitted
    }

    /// Back-pressure before raft-rs takes `bytes` more of proposals, with `waiting` more
    /// waiters than are registered already (R8).
    pub(crate) fn admit_proposals(&self, bytes: u64, waiting: usize) -> Result<(), ShardError> {
        if let Some(failure) = &self.failed {
            // Reached only with the H6 defect on (a failed replica is silent otherwise).
            return Err(ShardError::Storage(failure.to_string()));
        }
        if self.handing_over.is_some() {
            return Err(ShardError::NotLeader);
        }
        if !self.is_leader() || self.raw.raft.lead_transferee.is_some() {
            return Err(ShardError::NotLeader);
        }
        if self.waiters.len() + waiting >= self.config.max_waiting_proposals {
            return Err(ShardError::Overloaded);
        }
        // The store must always have room for what raft-rs hands out (A5): proposals
        // keep half of its bound free for the followers' side of a leader change.
        if self.store.unflushed_bytes() + bytes > self.config.max_unflushed_bytes / 2 {
            return Err(ShardError::Overloaded);
        }
        Ok(())
    }
}
