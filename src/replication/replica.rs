//! `Replica`: one replica group as a deterministic state machine.
//!
//! ```text
//!   Input ──▶ handle ──▶ admission (ingress checks, back-pressure)
//!                    ──▶ RawNode (step / propose / tick)
//!                    ──▶ Ready cycle: send ▸ append to the store ▸ advance ▸ apply ▸ flush
//!                    ──▶ Effects (send, flush, disk work, answers, notifications)
//! ```
//!
//! It owns the raft-rs `RawNode`, the log store (memory only), the applied state, the
//! waiters and the outbox of messages that wait for durability, and a seeded generator.
//! It never touches a socket, a file, a clock, an executor or a channel: the driver
//! (`shard/`) or the simulator (`sim/`) feeds it inputs and carries out its effects, so
//! production and the simulator run exactly this code.
//!
//! Rules it holds (`../shared/SIMULATION.md` R1-R10): only `handle` calls the `RawNode`,
//! one input at a time; nothing waits between `ready()` and the entries being in the
//! store (a Ready that needs the disk first is parked and every other input queued);
//! a failed append or flush makes the replica silent before any message that depends on
//! it leaves; back-pressure is applied before raft-rs accepts work.

use std::collections::{BTreeMap, VecDeque};

use raft::eraftpb::{ConfState, Message};
use raft::{Config, RawNode, StateRole};

use crate::broker::state::{ShardState, Topics};
use crate::constants::MAX_OUTBOX_READIES;
use crate::log::raft_storage::from_conf_state;
use crate::replication::events::{
    Defects, DiskWork, Effect, FlushId, Input, OpId, RequestId, ShardError,
};
use crate::replication::log_store::{LogStore, StorageFailure};
use crate::replication::prng::Prng;
use crate::replication::proposals::refuse_all;
use crate::replication::raft_logging::raft_logger;

/// PRNG domain of election timeouts.
const ELECTION_DOMAIN: u64 = 1;

/// Entries a follower may lag and still count as current (in-flight appends).
pub const CURRENT_FOLLOWER_LAG: u64 = 256;

/// Inputs queued while a Ready waits for the disk (beyond: peer messages are dropped,
/// which Raft tolerates as loss).
pub const MAX_PARKED_INPUTS: usize = 4096;

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

/// Retention settings (both off: keep everything).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the log within this many bytes.
    pub bytes: Option<u64>,
    /// Remove sealed segments whose newest entry is older than this.
    pub age_ms: Option<u64>,
}

impl RetentionPolicy {
    /// Whether retention (and so snapshot taking) is on.
    pub fn enabled(&self) -> bool {
        self.bytes.is_some() || self.age_ms.is_some()
    }
}

/// Settings of a replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This replica's Raft id (the node id).
    pub replica_id: u64,
    /// The group's number (the shard index).
    pub group_id: u32,
    /// The group's voters when the log holds no configuration yet.
    pub voters: Vec<u64>,
    /// The group's learners when the log holds no configuration yet (replicas that
    /// follow the log and vote on nothing).
    pub learners: Vec<u64>,
    /// The voter leader balancing hands the group to (the placement's choice, spreading
    /// leaderships over the nodes); `None`, or one that is no longer a voter: the
    /// (group mod N)-th voter by id.
    pub preferred_leader: Option<u64>,
    /// The controller group: topics are created and deleted by the admin's entries in its
    /// log. Any other group is a data group, whose leader copies the controller's changes
    /// into its own log (`topic_mirror`).
    pub controller_group: bool,
    /// Ticks without a leader before an election (randomized up to twice this).
    pub election_ticks: usize,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: usize,
    /// Largest AppendEntries message (raft-rs's soft limit).
    pub max_message_bytes: u64,
    /// AppendEntries in flight per follower.
    pub max_inflight_messages: usize,
    /// Bytes the store may hold appended but not durable; appends are admitted below it.
    pub max_unflushed_bytes: u64,
    /// Bytes of proposals not yet committed (raft-rs's `max_uncommitted_size`).
    pub max_uncommitted_bytes: u64,
    /// Proposals waiting for their answer.
    pub max_waiting_proposals: usize,
    /// Committed bytes handed out by one Ready (bounds a restart's first passes).
    pub max_committed_bytes_per_ready: u64,
    /// Ticks a preferred leader must be current before leadership moves to it.
    pub leader_balance_delay_ticks: Option<u64>,
    /// Campaign at start (a single voter, or this node is the preferred leader).
    pub campaign_at_start: bool,
    /// Retention.
    pub retention: RetentionPolicy,
    /// Ticks after which an unanswered snapshot is reported lost and sent again.
    pub snapshot_resend_ticks: u64,
    /// Ticks between writes of the commit index alone.
    pub commit_persist_ticks: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Known defects switched back on (simulator proofs only).
    pub defects: Defects,
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// raft-rs refused the configuration or the stored state.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The settings do not fit together.
    #[error("replica settings: {0}")]
    Config(String),
    /// The log store refused its configuration.
    #[error(transparent)]
    Storage(#[from] StorageFailure),
}

/// A proposal waiting for its entry to be applied.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Waiter {
    pub(crate) term: u64,
    pub(crate) request: RequestId,
}

/// A Ready that waits for disk work before its entries can be appended.
pub(crate) struct Parked {
    pub(crate) ready: raft::Ready,
    pub(crate) op: OpId,
    pub(crate) persisted: Vec<Message>,
    /// Inputs that arrived meanwhile, in order (ticks counted apart).
    pub(crate) queue: VecDeque<Input>,
    pub(crate) ticks: u64,
    /// The decoded state of a snapshot being installed.
    pub(crate) install: Option<(u64, ShardState)>,
}

/// Events of a replica's life that the node's metrics count; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaCounts {
    /// Leadership transfers this replica asked raft-rs for, as leader (a hand-over, the
    /// preferred leader's balancing, a short disk, a change removing this leader).
    pub transfers_started: u64,
    /// Snapshots sent to a follower.
    pub snapshots_sent: u64,
}

/// One replica group's replica.
pub struct Replica<S: LogStore> {
    pub(crate) raw: RawNode<S::View>,
    pub(crate) store: S,
    pub(crate) config: ReplicaConfig,
    pub(crate) state: ShardState,
    pub(crate) rng: Prng,
    pub(crate) waiters: BTreeMap<u64, Waiter>,
    /// Messages to send once the Ready they came with is durable: (ready number, messages).
    pub(crate) outbox: VecDeque<(u64, Vec<Message>)>,
    /// Newest Ready whose entries are in the store.
    pub(crate) appended_ready: u64,
    /// Newest Ready a started flush covers.
    pub(crate) flushing_ready: u64,
    /// The newest Ready a completed flush made durable.
    pub(crate) persisted_ready: u64,
    /// Flushes started and not reported, in start order: (id, Ready number covered).
    pub(crate) flushes: VecDeque<(FlushId, u64)>,
    /// Flush results that arrived ahead of an earlier flush's.
    pub(crate) early_flushes: BTreeMap<FlushId, Result<u64, StorageFailure>>,
    pub(crate) next_flush: u64,
    pub(crate) durable_index: u64,
    pub(crate) parked: Option<Parked>,
    pub(crate) disk_ops: BTreeMap<OpId, DiskWork>,
    pub(crate) next_op: u64,
    pub(crate) failed: Option<StorageFailure>,
    pub(crate) ticks: u64,
    pub(crate) now_ms: u64,
    pub(crate) last_term_role: (u64, StateRole),
    pub(crate) last_leader: u64,
    pub(crate) was_leader: bool,
    /// Ticks the preferred leader has been current while this replica leads.
    pub(crate) preferred_current_ticks: u64,
    /// Set by `HandOver`: (tick it started, target).
    pub(crate) handing_over: Option<(u64, Option<u64>)>,
    pub(crate) hand_over_done: bool,
    /// What this replica did, counted for the node's metrics (the driver reads them).
    pub(crate) counts: ReplicaCounts,
    /// Snapshots sent and not yet answered: peer → tick sent.
    pub(crate) snapshots_in_flight: BTreeMap<u64, u64>,
    /// Snapshots of the applied state written to files: index → snapshot (newest kept).
    pub(crate) kept_snapshots: BTreeMap<u64, raft::eraftpb::Snapshot>,
    pub(crate) last_snapshot_index: u64,
    /// Index of the last snapshot installed from a leader (0: none in this life).
    pub(crate) installed_at: u64,
    pub(crate) reserved_topic_id: u32,
    /// A data group leader's last topic entries: (term, index); no new ones until applied.
    pub(crate) mirror_pending: Option<(u64, u64)>,
    /// The disk is short of space (`low_space`).
    pub(crate) space_low: bool,
    pub(crate) persisted_commit: u64,
    /// Appends deferred by the `advance_before_append` defect: (Ready number, entries).
    pub(crate) deferred_appends: VecDeque<(u64, Vec<raft::eraftpb::Entry>)>,
    /// Peer messages refused at ingress (wrong sender, addressee or type).
    pub refused_messages: u64,
    /// Catch-up reads in flight.
    pub(crate) catch_up: crate::replication::catch_up::CatchUpReads,
    /// Index of this leader's first entry of its term (reads wait until it is applied).
    pub(crate) term_start_index: u64,
    /// A snapshot being written is for a peer the store's lacked (`retention`).
    pub(crate) snapshot_for_a_peer: bool,
    /// The configuration in force, as the store holds it (`membership`).
    pub(crate) membership: crate::replication::membership::Membership,
}

impl<S: LogStore> Replica<S> {
    /// Starts a replica over `store`, whose applied state up to the store's compaction
    /// point is `state` (the snapshot there, or empty).
    pub fn new(
        mut store: S,
        state: ShardState,
        config: ReplicaConfig,
    ) -> Result<Self, ReplicaError> {
        check_config(&config)?;
        if store.conf_state().voters.is_empty() {
            let conf_state = ConfState {
                voters: config.voters.clone(),
                learners: config.learners.clone(),
                ..Default::default()
            };
            store.set_conf_state(from_conf_state(&conf_state, 0))?;
        }
        let compaction = store.compaction_point().0;
        assert_eq!(
            state.applied_index(),
            compaction,
            "the applied state starts at the log's compaction point"
        );
        let raft_config = raft_config(&config, compaction);
        raft_config.validate()?;
        let logger = raft_logger(config.replica_id, u64::from(config.group_id));
        let raw = RawNode::new(&raft_config, store.view(), &logger)?;
        let rng = Prng::derive(config.seed, ELECTION_DOMAIN, config.replica_id);
        let durable_index = store.durable_index();
        let store_conf = store.conf_state();
        let persisted_commit = store.hard_state().commit;
        let mut replica = Replica {
            last_term_role: (raw.raft.term, raw.raft.state),
            raw,
            store,
            state,
            rng,
            waiters: BTreeMap::new(),
            outbox: VecDeque::new(),
            appended_ready: 0,
            flushing_ready: 0,
            persisted_ready: 0,
            flushes: VecDeque::new(),
            early_flushes: BTreeMap::new(),
            next_flush: 1,
            durable_index,
            parked: None,
            disk_ops: BTreeMap::new(),
            next_op: 1,
            failed: None,
            ticks: 0,
            now_ms: 0,
            last_leader: 0,
            was_leader: false,
            preferred_current_ticks: 0,
            handing_over: None,
            hand_over_done: false,
            counts: ReplicaCounts::default(),
            snapshots_in_flight: BTreeMap::new(),
            kept_snapshots: BTreeMap::new(),
            last_snapshot_index: compaction,
            installed_at: 0,
            reserved_topic_id: 0,
            mirror_pending: None,
            space_low: false,
            persisted_commit,
            deferred_appends: VecDeque::new(),
            refused_messages: 0,
            catch_up: Default::default(),
            term_start_index: u64::MAX,
            snapshot_for_a_peer: false,
            membership: crate::replication::membership::Membership::of_record(&store_conf),
            config,
        };
        replica.draw_election_timeout();
        Ok(replica)
    }

    /// Campaigns if configured to, and does the first Ready pass.
    pub fn start(&mut self, effects: &mut Vec<Effect>) {
        if self.config.campaign_at_start || self.voter_count() == 1 {
            // A group of one voter elects itself at once. The preferred leader stands for
            // election when it starts (with pre-vote and check-quorum, followers that hear
            // from a live leader refuse it).
            if let Err(error) = self.raw.campaign() {
                tracing::warn!(group = self.config.group_id, %error, "campaign refused");
            }
        }
        self.after_input(effects);
    }

    /// Takes one input; appends what must be done to `effects`.
    pub fn handle(&mut self, input: Input, effects: &mut Vec<Effect>) {
        if self.parked.is_some() {
            if let Input::DiskDone { op, outcome } = input {
                if self.parked.as_ref().is_some_and(|p| p.op == op) {
                    self.unpark(outcome, effects);
                    return;
                }
                self.park_input(Input::DiskDone { op, outcome }, effects);
            } else {
                self.park_input(input, effects);
            }
            return;
        }
        if self.is_silent() {
            self.handle_silent(input, effects);
            return;
        }
        match input {
            Input::Tick { now_ms } => self.on_tick(now_ms, effects),
            Input::Peer { from, messages } => self.on_peer(from, messages),
            Input::Propose { proposals } => self.on_propose(proposals, effects),
            Input::ChangeMembership { request, change } => {
                self.on_change_membership(request, change, effects)
            }
            Input::HandOver => self.on_hand_over(effects),
            Input::ControllerTopics { topics } => {
                self.on_controller_topics(topics);
                self.mirror_topics();
            }
            Input::FlushDone { flush, outcome } => self.on_flush_done(flush, outcome, effects),
            Input::DiskDone { op, outcome } => self.on_disk_done(op, outcome, effects),
            Input::ReadDone { op, outcome } => self.on_read_done(op, outcome),
            Input::SendFailed {
                peer,
                dropped_snapshot,
            } => self.on_send_failed(peer, dropped_snapshot),
            Input::PeerUnreachable { peer } => self.on_peer_unreachable(peer),
            Input::SpaceLow { low } => self.on_space_low(low),
            Input::PreferredLeader { node } => self.config.preferred_leader = node,
        }
        self.after_input(effects);
    }

    /// What a replica whose storage failed still does: nothing that claims anything.
    fn handle_silent(&mut self, input: Input, effects: &mut Vec<Effect>) {
        match input {
            Input::Propose { proposals } => {
                let refusal = match (&self.failed, self.voter_count()) {
                    (Some(failure), 1) => ShardError::Storage(failure.to_string()),
                    _ => ShardError::NotLeader,
                };
                refuse_all(proposals, &refusal, effects);
            }
            Input::ChangeMembership { request, .. } => effects.push(Effect::Answer {
                request,
                outcome: Err(ShardError::NotLeader),
            }),
            Input::HandOver if !self.hand_over_done => {
                self.hand_over_done = true;
                effects.push(Effect::HandOverDone { handed_to: None });
            }
            Input::ControllerTopics { topics } => self.on_controller_topics(topics),
            Input::SpaceLow { low } => self.on_space_low(low),
            Input::PreferredLeader { node } => self.config.preferred_leader = node,
            Input::DiskDone { op, .. } => {
                self.disk_ops.remove(&op);
            }
            _ => {}
        }
    }

    /// Whether the replica stopped taking part in its group (its storage failed).
    pub fn is_silent(&self) -> bool {
        let keeps_leading = self.config.defects.failed_leader_keeps_leading
            && self.raw.raft.state == raft::StateRole::Leader;
        self.failed.is_some() && !keeps_leading
    }

    /// Queues an input while a Ready waits for the disk.
    fn park_input(&mut self, input: Input, effects: &mut Vec<Effect>) {
        let Some(parked) = self.parked.as_mut() else {
            return;
        };
        match input {
            Input::Tick { now_ms } => {
                self.now_ms = now_ms;
                parked.ticks += 1;
            }
            Input::Propose { proposals } => refuse_all(proposals, &ShardError::NotLeader, effects),
            Input::ChangeMembership { request, .. } => effects.push(Effect::Answer {
                request,
                outcome: Err(ShardError::NotLeader),
            }),
            Input::ControllerTopics { topics } => self.on_controller_topics(topics),
            Input::SpaceLow { low } => self.on_space_low(low),
            Input::PreferredLeader { node } => self.config.preferred_leader = node,
            Input::FlushDone { .. } | Input::DiskDone { .. } | Input::HandOver => {
                parked.queue.push_back(input)
            }
            other if parked.queue.len() < MAX_PARKED_INPUTS => parked.queue.push_back(other),
            _ => {}
        }
    }

    fn on_controller_topics(&mut self, topics: Topics) {
        if self.config.controller_group {
            return;
        }
        self.state.controller_copy = Some(topics);
    }

    /// After any input: new Readies, seeded timeouts on a term or role change, leader
    /// changes.
    pub(crate) fn after_input(&mut self, effects: &mut Vec<Effect>) {
        self.start_catch_up_reads(effects);
        self.drain_ready(effects);
        self.start_catch_up_reads(effects);
        self.take_snapshot_for_a_peer(effects);
        self.note_role(effects);
    }

    fn on_peer(&mut self, from: u64, messages: Vec<Message>) {
        for message in messages {
            let outbox_full = self.outbox.len() >= MAX_OUTBOX_READIES;
            if (outbox_full && answered_after_a_flush(&message)) || self.dropped_for_space(&message)
            {
                // The outbox is full, or the disk short of space: treated as lost, the
                // sender tries again.
                continue;
            }
            let Some(message) = self.admit_message(from, message) else {
                self.refused_messages += 1;
                continue;
            };
            if let Err(error) = self.raw.step(message) {
                tracing::debug!(group = self.config.group_id, %error, "peer message refused");
            }
        }
    }

    /// Ingress checks (G7, G8, R8): over the sender's own connection (the transport
    /// authenticated it as a node of the cluster), addressed here, of a type peers send;
    /// appends only while the store has room. Answers and leadership hand-overs only from
    /// members of the configuration this replica applied. A leader's messages and vote
    /// requests from any node of the cluster: a replica behind on membership changes does
    /// not know a leader or candidate added since, and must still hear it (it learns the
    /// configuration from that leader; raft-rs's terms, pre-vote and check-quorum keep
    /// a node outside the group from disrupting it).
    fn admit_message(&mut self, from: u64, mut message: Message) -> Option<Message> {
        use raft::eraftpb::MessageType::*;
        let me = self.config.replica_id;
        if message.from != from || message.to != me || from == me {
            return None;
        }
        let from_anyone = matches!(
            message.get_msg_type(),
            MsgAppend | MsgHeartbeat | MsgSnapshot | MsgRequestVote | MsgRequestPreVote
        );
        if !from_anyone && !self.is_member(from) {
            return None;
        }
        match message.get_msg_type() {
            MsgAppend => {
                let bytes: u64 = message.entries.iter().map(entry_bytes).sum();
                if self.store.unflushed_bytes() + bytes > self.config.max_unflushed_bytes {
                    return None;
                }
            }
            MsgHeartbeat => {
                let last = self.raw.raft.raft_log.last_index();
                if message.commit > last {
                    tracing::warn!(
                        group = self.config.group_id,
                        commit = message.commit,
                        last,
                        "a heartbeat's commit index is past this log: entries acknowledged \
                         here were lost"
                    );
                    message.commit = self.raw.raft.raft_log.committed;
                }
            }
            // A node that is stopping (it handed its leadership over) never takes it back.
            MsgTimeoutNow if self.handing_over.is_some() => return None,
            MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgSnapshot
            | MsgHeartbeatResponse
            | MsgTimeoutNow => {}
            _ => return None,
        }
        Some(message)
    }

    fn on_send_failed(&mut self, peer: u64, dropped_snapshot: bool) {
        if dropped_snapshot {
            self.report_snapshot_lost(peer);
        }
        self.on_peer_unreachable(peer);
    }

    pub(crate) fn next_op_id(&mut self) -> OpId {
        let op = OpId(self.next_op);
        self.next_op += 1;
        op
    }

    pub(crate) fn next_flush_id(&mut self) -> FlushId {
        let flush = FlushId(self.next_flush);
        self.next_flush += 1;
        flush
    }

    /// Reserves the id of a topic being created (ids are never reused, even when two
    /// creates race before either is applied).
    pub fn reserve_topic_id(&mut self) -> u32 {
        let next = self.state.topics.next_id().max(self.reserved_topic_id);
        self.reserved_topic_id = next + 1;
        next
    }
}

/// Bytes an entry holds against the unflushed bound.
pub(crate) fn entry_bytes(entry: &raft::eraftpb::Entry) -> u64 {
    entry.data.len() as u64 + entry.context.len() as u64 + 64
}

fn check_config(config: &ReplicaConfig) -> Result<(), ReplicaError> {
    // A follower must hold a leader's whole window unflushed (R8), or appends would be
    // dropped in steady state.
    let window = config.max_inflight_messages as u64 * config.max_message_bytes;
    if window > config.max_unflushed_bytes {
        return Err(ReplicaError::Config(format!(
            "{} appends in flight of {} bytes ({window}) exceed the {} unflushed bytes a \
             follower may hold",
            config.max_inflight_messages, config.max_message_bytes, config.max_unflushed_bytes
        )));
    }
    if config.max_uncommitted_bytes < config.max_message_bytes {
        return Err(ReplicaError::Config(
            "uncommitted bytes must hold at least one message".to_string(),
        ));
    }
    Ok(())
}

fn raft_config(config: &ReplicaConfig, applied: u64) -> Config {
    Config {
        id: config.replica_id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        max_size_per_msg: config.max_message_bytes,
        max_inflight_msgs: config.max_inflight_messages,
        max_uncommitted_size: config.max_uncommitted_bytes,
        max_committed_size_per_ready: config.max_committed_bytes_per_ready,
        // Committed entries are applied again from the compaction point: the applied state
        // lives in memory and is rebuilt at every start.
        applied,
        pre_vote: true,
        check_quorum: true,
        // Followers learn a new commit index from the next append or heartbeat, not from
        // an empty append sent for it alone: half the peer messages under load.
        skip_bcast_commit: true,
        // Off: raft-rs 0.7's `try_batching` merges a follower's new entries into an empty
        // MsgAppend already queued for it (a probe) without fixing its `index`, so the
        // follower acknowledges entries it does not hold (found by the simulator). A
        // pass's messages for a peer still share frames.
        batch_append: false,
        ..Default::default()
    }
}

/// Whether stepping `message` makes an answer that must wait for a flush (an append's,
/// a snapshot's, a vote's): dropped while the outbox is full (`MAX_OUTBOX_READIES`).
fn answered_after_a_flush(message: &Message) -> bool {
    use raft::eraftpb::MessageType::*;
    matches!(
        message.get_msg_type(),
        MsgAppend | MsgSnapshot | MsgRequestVote | MsgRequestPreVote
    )
}
