//! A replica on a disk short of space: it takes no new records but keeps running, so
//! retention can remove old segments and give the space back.
//!
//! The driver keeps a reserve of space per shard and releases it when the disk fills
//! (`shard::no_space`); the replica restarts over its log and is told `SpaceLow` until
//! the reserve can be taken back. Meanwhile it refuses record batches (`StorageFull`:
//! topic changes, a few bytes each, still go in), takes no appends or snapshots from a
//! leader (dropped as lost: the leader sends them again later), and hands its leadership
//! to a current follower when it has one. Retention and its snapshots go on as usual.
//! Owns only these refusals; it never writes anything itself.

use raft::eraftpb::{Message, MessageType};

use crate::broker::log_entry::BrokerEntry;
use crate::replication::events::ShardError;
use crate::replication::log_store::{LogStore, StorageFailure};
use crate::replication::replica::Replica;

impl<S: LogStore> Replica<S> {
    /// The driver's word on the disk: short of space (`low`) or not.
    pub(crate) fn on_space_low(&mut self, low: bool) {
        if low != self.space_low {
            tracing::warn!(
                group = self.config.group_id,
                low,
                "disk space: {}",
                if low {
                    "short; records are refused until retention or the operator frees space"
                } else {
                    "enough again; records are taken"
                }
            );
        }
        self.space_low = low;
    }

    /// The refusal of a proposal while space is short: records only (the entry is looked
    /// at only then: proposals are the hot path).
    pub(crate) fn refusal_for_space(&self, data: &[u8]) -> Option<ShardError> {
        let records = || {
            matches!(
                BrokerEntry::decode(data),
                Ok(BrokerEntry::RecordBatch { .. })
            )
        };
        (self.space_low && records()).then(|| {
            ShardError::Storage(format!(
                "{}: this shard's disk is short of space (its space reserve is \
                     released), so records are refused until retention or the operator \
                     frees space",
                StorageFailure::NoSpace
            ))
        })
    }

    /// Whether a peer message is dropped while space is short: appends with entries and
    /// snapshots (both need the disk).
    pub(crate) fn dropped_for_space(&self, message: &Message) -> bool {
        self.space_low
            && match message.get_msg_type() {
                MessageType::MsgAppend => !message.entries.is_empty(),
                MessageType::MsgSnapshot => true,
                _ => false,
            }
    }

    /// A leader short of space hands the group to a current follower, if there is one
    /// (at most once per election timeout).
    pub(crate) fn shed_leadership_for_space(&mut self) {
        if !self.space_low || !self.is_leader() || self.raw.raft.lead_transferee.is_some() {
            return;
        }
        if !self
            .ticks
            .is_multiple_of(self.config.election_ticks.max(1) as u64)
        {
            return;
        }
        if let Some(target) = self.most_current_follower() {
            tracing::info!(
                group = self.config.group_id,
                target,
                "handing leadership over: this node's disk is short of space"
            );
            self.transfer_leadership(target);
        }
    }
}
