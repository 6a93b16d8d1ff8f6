//! `GroupCore`: one replica group's Raft state machine, without I/O.
//!
//! The Ready loop it serves (raft-rs's asynchronous persistence):
//!
//! ```text
//! take_ready() ──▶ send `messages` now
//!              ──▶ apply `committed` entries
//!              ──▶ install `snapshot`?, truncate_suffix(..)?, append `entries`, set `hard_state`
//!              ──▶ flush ── then ──▶ on_persisted(number), send `persisted_messages`
//! ```

use raft::eraftpb::{ConfState, Entry, Message, MessageType, Snapshot};
use raft::{Config, ProgressState, RawNode, StateRole};

use crate::log::raft_storage::from_conf_state;
use crate::log::{CommitLog, HardStateRecord, LogError, RaftLogStorage};
use crate::replication::raft_logging::raft_logger;

/// Entries a follower may lag and still count as current (in-flight appends).
pub const CURRENT_FOLLOWER_LAG: u64 = 256;

/// The replica that should lead group `group`: the (group mod N)-th of its voters by id,
/// so the groups' leaders spread evenly over the nodes.
pub fn preferred_leader_of(group: u32, voters: &[u64]) -> Option<u64> {
    let mut voters = voters.to_vec();
    voters.sort_unstable();
    voters.dedup();
    if voters.is_empty() {
        return None;
    }
    Some(voters[group as usize % voters.len()])
}

/// Settings of a replica group.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// This replica's Raft id (the node id).
    pub replica_id: u64,
    /// The group's number (the shard index), for logs.
    pub group_id: u64,
    /// Ticks without a leader before an election (randomized between this and twice it).
    pub election_ticks: usize,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: usize,
    /// Largest AppendEntries message.
    pub max_message_bytes: u64,
    /// AppendEntries in flight per follower.
    pub max_inflight_messages: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            replica_id: 1,
            group_id: 0,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_message_bytes: 1024 * 1024,
            max_inflight_messages: 256,
        }
    }
}

/// Failures of the replica group that are not bugs.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// raft-rs refused (for example a proposal on a follower).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// This replica is not the leader.
    #[error("not the leader (leader: {leader_id})")]
    NotLeader {
        /// The leader's id, 0 when unknown.
        leader_id: u64,
    },
}

/// What one Ready pass asks of the group's owner.
#[derive(Debug, Default)]
pub struct ReadyWork {
    /// Ready number, to report with `on_persisted` once `entries`/`hard_state` are durable.
    pub number: u64,
    /// Messages to send at once.
    pub messages: Vec<Message>,
    /// Entries to append; if the first is not after the log's last index, truncate the
    /// log from there first.
    pub entries: Vec<Entry>,
    /// New hard state to persist with the entries.
    pub hard_state: Option<HardStateRecord>,
    /// Committed entries to apply, in order.
    pub committed: Vec<Entry>,
    /// Messages to send only after this Ready's entries and hard state are durable.
    pub persisted_messages: Vec<Message>,
    /// A snapshot from the leader to install before the entries (this replica was behind
    /// the leader's compaction point).
    pub snapshot: Option<Snapshot>,
}

/// One replica group's Raft state.
pub struct GroupCore {
    raw: RawNode<RaftLogStorage>,
    replica_id: u64,
    /// The Ready that carried a snapshot, until it is durable: raft-rs counts the
    /// snapshot as applied only once persisted, so applying waits until then.
    snapshot_ready: Option<u64>,
}

impl GroupCore {
    /// Starts the group over `log`. A log that has never held a configuration becomes a
    /// group of `voters` (the caller persists it with the first flush).
    pub fn new(log: &CommitLog, config: &GroupConfig, voters: &[u64]) -> Result<Self, GroupError> {
        if log.conf_state().voters.is_empty() {
            let conf_state = ConfState {
                voters: voters.to_vec(),
                ..Default::default()
            };
            log.set_conf_state(from_conf_state(&conf_state))?;
        }
        let raft_config = Config {
            id: config.replica_id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            max_size_per_msg: config.max_message_bytes,
            max_inflight_msgs: config.max_inflight_messages,
            // Committed entries are applied again from the start of the log: the applied
            // state lives in memory and is rebuilt at every start.
            applied: log.compaction_point().0,
            pre_vote: true,
            check_quorum: true,
            // Followers learn a new commit index from the next append or heartbeat, not
            // from an empty append sent for it alone: half the peer messages under load.
            skip_bcast_commit: true,
            // Appends for one follower made in one pass go out as one message.
            batch_append: true,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = raft_logger(config.replica_id, config.group_id);
        let raw = RawNode::new(&raft_config, log.raft_storage(), &logger)?;
        Ok(GroupCore {
            raw,
            replica_id: config.replica_id,
            snapshot_ready: None,
        })
    }

    /// Advances the logical clock one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Starts an election now (a single voter elects itself).
    pub fn campaign(&mut self) -> Result<(), GroupError> {
        Ok(self.raw.campaign()?)
    }

    /// Feeds a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), GroupError> {
        Ok(self.raw.step(message)?)
    }

    /// Whether this replica leads the group.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader's id (0 when unknown).
    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    /// This replica's id.
    pub fn replica_id(&self) -> u64 {
        self.replica_id
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// Highest committed index.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Proposes `data` as a new entry; returns the index it will have.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<u64, GroupError> {
        if !self.is_leader() {
            return Err(GroupError::NotLeader {
                leader_id: self.leader_id(),
            });
        }
        let before = self.raw.raft.raft_log.last_index();
        self.raw.propose(Vec::new(), data)?;
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(index, before + 1, "a proposal adds exactly one entry");
        Ok(index)
    }

    /// The work of the next Ready pass, if there is any. Committed entries handed out
    /// here count as applied: the caller applies them before calling in again.
    pub fn take_ready(&mut self) -> Option<ReadyWork> {
        if !self.raw.has_ready() {
            return None;
        }
        let mut ready = self.raw.ready();
        // A follower's messages all wait for its flush, as raft-rs asks; heartbeat
        // responses need not: they claim nothing about the log or the vote (their commit
        // field is informational). Sent at once, they keep a leader whose followers' disks
        // are slow from losing its check-quorum lease: a flush that takes longer than an
        // election timeout must not cost the group its leader.
        let (heartbeat_responses, persisted_messages): (Vec<Message>, Vec<Message>) = ready
            .take_persisted_messages()
            .into_iter()
            .partition(|m| m.get_msg_type() == MessageType::MsgHeartbeatResponse);
        let mut messages = ready.take_messages();
        messages.extend(heartbeat_responses);
        let snapshot = (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone());
        let work = ReadyWork {
            snapshot,
            number: ready.number(),
            messages,
            entries: ready.entries().clone(),
            hard_state: ready.hs().map(|hs| HardStateRecord {
                term: hs.term,
                vote: hs.vote,
                commit: hs.commit,
            }),
            committed: ready.take_committed_entries(),
            persisted_messages,
        };
        if work.snapshot.is_some() {
            self.snapshot_ready = Some(work.number);
        }
        self.raw.advance_append_async(ready);
        if self.snapshot_ready.is_none() {
            self.raw.advance_apply();
        }
        Some(work)
    }

    /// Tells Raft a peer could not be reached (it backs off sending to it).
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// Hands leadership to the most up-to-date follower (one whose log matches the
    /// leader's last index, if any); returns the chosen follower.
    pub fn transfer_leadership(&mut self) -> Option<u64> {
        if !self.is_leader() {
            return None;
        }
        let last_index = self.raw.raft.raft_log.last_index();
        let me = self.replica_id;
        let target = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .max_by_key(|(_, progress)| progress.matched)
            .filter(|(_, progress)| progress.matched + 16 >= last_index)
            .map(|(id, _)| *id)?;
        self.raw.transfer_leader(target);
        Some(target)
    }

    /// The replica that should lead this group when it is up (`preferred_leader_of`).
    pub fn preferred_leader(&self, group: u32) -> Option<u64> {
        let voters: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
        preferred_leader_of(group, &voters)
    }

    /// Whether `follower` is healthy and nearly caught up, when leading: replicating
    /// normally (not being probed after a rejection or an unreachable report) and at most
    /// `CURRENT_FOLLOWER_LAG` entries behind the leader's last index.
    pub fn follower_is_current(&self, follower: u64) -> bool {
        if !self.is_leader() {
            return false;
        }
        let last_index = self.raw.raft.raft_log.last_index();
        self.raw.raft.prs().get(follower).is_some_and(|p| {
            p.state == ProgressState::Replicate && p.matched + CURRENT_FOLLOWER_LAG >= last_index
        })
    }

    /// Hands leadership to `target` (raft-rs catches it up first if needed).
    pub fn transfer_to(&mut self, target: u64) {
        if self.is_leader() && target != self.replica_id {
            self.raw.transfer_leader(target);
        }
    }

    /// Progress of every follower as (id, matched index), when leading.
    pub fn follower_progress(&self) -> Vec<(u64, u64)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let me = self.replica_id;
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, p)| (*id, p.matched))
            .collect()
    }

    /// Index of the last entry in the group's log (durable or not).
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// Highest index applied.
    pub fn applied_index(&self) -> u64 {
        self.raw.raft.raft_log.applied
    }

    /// This replica's role: leader, follower, candidate or pre-candidate.
    pub fn role(&self) -> &'static str {
        match self.raw.raft.state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        }
    }

    /// Number of voters in the group's configuration.
    pub fn voter_count(&self) -> usize {
        self.raw.raft.prs().conf().voters().ids().len()
    }

    /// Reports that everything of Ready `number` (and earlier) is durable.
    pub fn on_persisted(&mut self, number: u64) {
        self.raw.on_persist_ready(number);
        if self.snapshot_ready.is_some_and(|ready| ready <= number) {
            self.snapshot_ready = None;
            self.raw.advance_apply();
        }
    }
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{Entry, Message, MessageType};

    use super::{GroupConfig, GroupCore};
    use crate::log::{CommitLog, LogConfig};

    fn message(kind: MessageType, term: u64, commit: u64) -> Message {
        let mut message = Message::default();
        message.set_msg_type(kind);
        message.from = 1;
        message.to = 2;
        message.term = term;
        message.commit = commit;
        message
    }

    /// A follower answers a heartbeat at once, but an append only once it is durable.
    #[test]
    fn heartbeat_answers_do_not_wait_for_the_flush_but_append_answers_do() {
        crate::runtime::run_on_executor("group-core-test", 512 * 1024, || async {
            let dir = tempfile::tempdir().unwrap();
            let log = CommitLog::open(dir.path(), LogConfig::default())
                .await
                .unwrap();
            let config = GroupConfig {
                replica_id: 2,
                ..GroupConfig::default()
            };
            let mut follower = GroupCore::new(&log, &config, &[1, 2, 3]).unwrap();

            // An append from the leader of term 1: its answer waits for the flush.
            let mut append = message(MessageType::MsgAppend, 1, 0);
            let entry = Entry {
                index: 1,
                term: 1,
                ..Default::default()
            };
            append.entries = vec![entry].into();
            follower.step(append).unwrap();
            let work = follower.take_ready().expect("work");
            assert_eq!(work.entries.len(), 1);
            assert!(work
                .messages
                .iter()
                .all(|m| m.get_msg_type() != MessageType::MsgAppendResponse));
            assert!(work
                .persisted_messages
                .iter()
                .any(|m| m.get_msg_type() == MessageType::MsgAppendResponse));

            // A heartbeat while that flush runs: its answer goes out now.
            follower
                .step(message(MessageType::MsgHeartbeat, 1, 0))
                .unwrap();
            let work = follower.take_ready().expect("work");
            assert!(work
                .messages
                .iter()
                .any(|m| m.get_msg_type() == MessageType::MsgHeartbeatResponse));
            assert!(work
                .persisted_messages
                .iter()
                .all(|m| m.get_msg_type() != MessageType::MsgHeartbeatResponse));
        })
        .unwrap();
    }
}
