//! The simulated world: one thread, one event queue, every node's real `Replica` over a
//! `SimLogStore`, the network, the disks' timing and faults, and the clients. Time is in
//! nanoseconds; ties are broken by insertion order, so a run is a function of its seed.

use std::collections::BTreeMap;

use crate::broker::log_entry::BrokerEntry;
use crate::broker::snapshot::decode_state;
use crate::broker::state::{Applied, ShardState, Topics};
use crate::replication::events::{
    Defects, DiskWork, Effect, FlushId, Input, OpId, Proposal, RequestId,
};
use crate::replication::log_store::StorageFailure;
use crate::replication::membership::Membership;
use crate::replication::prng::Prng;
use crate::replication::replica::{Replica, ReplicaConfig, RetentionPolicy};
use crate::sim::checkers::{Checker, Violation};
use crate::sim::network::{Delivery, Network};
use crate::sim::profile::{FaultKind, LinkMode, Profile};
use crate::sim::sim_store::{SimLog, SimLogStore};
use crate::sim::trace::Trace;
use crate::sim::workload::{Purpose, Workload, TOPIC};

mod churn;
mod controller;
mod gathering;
mod groups;
mod large_state;
mod membership;
pub use churn::{Churn, SCRATCH_TOPIC};
pub use controller::SimController;
pub use groups::GroupClient;
pub use large_state::{large_state_topic_name, LARGE_STATE_TOPIC_NAME_BYTES};
pub use membership::Mover;
pub(crate) use membership::Pick;

/// PRNG domain of faults; of each node's disk.
const FAULT_DOMAIN: u64 = 40;
const DISK_DOMAIN: u64 = 41;

/// Events one run may take (a run that needs more is stuck in a storm).
const MAX_EVENTS_PER_RUN: u64 = 2_000_000;

/// How often the consumers poll, ns.
const CONSUMER_POLL_NS: u64 = 20_000_000;

/// How long a client waits for an answer before it retries elsewhere, ns.
const CLIENT_TIMEOUT_NS: u64 = 1_000_000_000;

/// Something that happens at a time. Fields: `node` the node it happens to,
/// `incarnation` the node's life it belongs to (a crash makes older events void).
#[derive(Debug)]
#[allow(missing_docs)]
pub enum Event {
    /// A node's tick.
    Tick { node: u64, incarnation: u64 },
    /// A frame arrives.
    Deliver(Delivery),
    /// The oldest flush of a node ends.
    FlushComplete {
        node: u64,
        incarnation: u64,
        flush: FlushId,
    },
    /// Disk work of a node ends.
    DiskComplete {
        node: u64,
        incarnation: u64,
        op: OpId,
        work: DiskWork,
    },
    /// A catch-up read of a node ends.
    ReadComplete {
        node: u64,
        incarnation: u64,
        op: OpId,
        low: u64,
        high: u64,
        max_bytes: u64,
    },
    /// Inject a fault.
    Fault,
    /// A node goes down (kill -9, or the end of a planned stop).
    Crash { node: u64 },
    /// A crashed node starts again.
    Restart { node: u64 },
    /// A paused node goes on.
    Resume { node: u64 },
    /// Partitions end.
    Heal,
    /// A client acts (only its newest wake-up counts).
    Client { producer: usize, token: u64 },
    /// The consumers poll the partitions' high watermarks.
    Consume,
    /// The admin tries to create the topic (only its newest wake-up counts).
    Admin { token: u64 },
    /// The admin proposes the next large-state topics.
    GrowState,
    /// Faults stop; liveness is checked.
    FaultsOff,
    /// Liveness check.
    Check,
    /// A node's disk has space again (its `ENOSPC` period ends).
    SpaceBack { node: u64, incarnation: u64 },
    /// A node hands the proposals it gathered to its replica.
    ProposeGathered { node: u64, incarnation: u64 },
    /// The group client acts (only its newest wake-up counts).
    GroupClient { token: u64 },
    /// The mover takes its next step (only its newest wake-up counts).
    Mover { token: u64 },
    /// A node learns the controller's topics (data-group seeds).
    ControllerTopics {
        node: u64,
        incarnation: u64,
        topics: crate::broker::state::Topics,
    },
}

/// One simulated node.
pub struct Node {
    /// Its id.
    pub id: u64,
    /// Running (not crashed).
    pub up: bool,
    /// Stopped (SIGSTOP).
    pub paused: bool,
    /// Bumped at each crash: events of an older life are ignored.
    pub incarnation: u64,
    /// The replica, while up.
    pub replica: Option<Replica<SimLogStore>>,
    /// The log (its durable part survives crashes).
    pub store: SimLogStore,
    /// The disk is busy until then (completions are FIFO).
    pub disk_free_at: u64,
    /// Events held while paused.
    pub held: Vec<Event>,
    /// Proposals not yet handed to the replica (`world::gathering`).
    pub gathered: Vec<Proposal>,
    /// Clock drift, parts per million.
    pub drift_ppm: i64,
    /// The next flush fails with this.
    pub fail_next_flush: Option<StorageFailure>,
    /// After an `ENOSPC` failure: space stays short until then (the replica restarted
    /// over its log is told `SpaceLow`, as the driver's space reserve does).
    pub space_low_until: Option<u64>,
    /// Disk randomness.
    pub rng: Prng,
    /// Started once and not retired since: it holds (or held) a replica of the group,
    /// and faults and clients pick among such nodes (`world::membership`).
    pub in_play: bool,
    /// In a controller world: the topics this node's other shards were last told since
    /// its start (the restored state, then each `Effect::TopicsChanged`).
    pub told_topics: Option<Topics>,
}

/// Counts for the coverage report.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Events handled.
    pub events: u64,
    /// Faults injected, by kind.
    pub faults: [u64; 8],
    /// Leader elections seen (term changes of leaders).
    pub leader_terms: u64,
    /// Batches acknowledged.
    pub acked: u64,
    /// Simulated nanoseconds.
    pub simulated_ns: u64,
    /// Catch-up reads done off the Ready path.
    pub catch_up_reads: u64,
    /// Snapshots installed from a leader.
    pub snapshot_installs: u64,
    /// Readies parked for disk work (cuts of written entries, installs).
    pub parked_readies: u64,
    /// Creations and deletions of the churned topic proposed.
    pub topic_churn: u64,
    /// Most Readies seen waiting in one replica's outbox.
    pub max_outbox: u64,
    /// 1 when the group is a data group (`world::controller`).
    pub data_group: u64,
    /// Restarts of a replica short of space (after `ENOSPC`).
    pub space_short: u64,
    /// Frames over the limit sent as chunks (snapshots larger than a frame).
    pub chunked_frames: u64,
    /// Replica inputs of several gathered proposals.
    pub gathered_inputs: u64,
    /// Consumer group commits answered `Committed` (`world::groups`).
    pub group_commits: u64,
    /// Consumer group commits refused for a stale generation.
    pub stale_group_commits: u64,
    /// Replicas moved to another node (`world::membership`).
    pub moves_done: u64,
    /// Moves rolled back (the learner did not catch up in time).
    pub moves_rolled_back: u64,
    /// Vote moves done (the demoted voter stays a learner, as in the controller group).
    pub vote_moves: u64,
}

/// The world of one run.
pub struct World {
    /// The run's seed.
    pub seed: u64,
    /// Its profile.
    pub profile: Profile,
    /// Defects switched on in every replica.
    pub defects: Defects,
    /// Frames split below the limit (off: the H10 defect).
    pub split_frames: bool,
    /// Now, ns.
    pub now: u64,
    sequence: u64,
    events: BTreeMap<(u64, u64), Event>,
    /// Nodes by id.
    pub nodes: BTreeMap<u64, Node>,
    network: Network,
    rng: Prng,
    /// The clients.
    pub workload: Workload,
    checker: Checker,
    /// The trace.
    pub trace: Trace,
    faults_on: bool,
    faults_off_at: u64,
    /// Counts.
    pub stats: Stats,
    /// Which request went to which node.
    request_nodes: BTreeMap<RequestId, u64>,
    /// The first broken property.
    pub violation: Option<Violation>,
    /// Whether the liveness phase succeeded.
    pub done: bool,
    admin_token: u64,
    /// The second topic's creations and deletions.
    pub churn: Churn,
    /// The consumer group's client (`world::groups`).
    pub group_client: GroupClient,
    /// The controller, when the simulated group is a data group.
    pub controller: Option<SimController>,
    /// `begin` ran.
    begun: bool,
    /// Large-state topics proposed so far.
    large_state_proposed: u32,
    /// Membership changes (`world::membership`), in seeds that move replicas.
    pub mover: Mover,
}

impl World {
    /// A world for `seed`.
    pub fn new(seed: u64, defects: Defects, split_frames: bool) -> World {
        World::with_profile(seed, Profile::draw(seed), defects, split_frames)
    }

    /// A world for `seed` with a profile chosen by hand (scripted scenarios).
    pub fn with_profile(
        seed: u64,
        profile: Profile,
        defects: Defects,
        split_frames: bool,
    ) -> World {
        let mut nodes = BTreeMap::new();
        for id in 1..=profile.nodes + membership::spare_nodes(&profile) {
            let log = SimLog {
                segment_entries: profile.segment_entries,
                cache_entries: profile.cache_entries,
                ..Default::default()
            };
            let mut rng = Prng::derive(seed, DISK_DOMAIN, id);
            let drift_ppm = rng.range(0, 40_001) as i64 - 20_000;
            nodes.insert(
                id,
                Node {
                    id,
                    up: false,
                    paused: false,
                    incarnation: 0,
                    replica: None,
                    store: SimLogStore::new(log),
                    disk_free_at: 0,
                    held: Vec::new(),
                    gathered: Vec::new(),
                    drift_ppm,
                    fail_next_flush: None,
                    space_low_until: None,
                    rng,
                    in_play: false,
                    told_topics: None,
                },
            );
        }
        let workload = Workload::new(
            seed,
            profile.producers,
            profile.partitions,
            profile.max_value_bytes,
        );
        let group_client = GroupClient::new(seed, profile.partitions);
        World {
            network: Network::new(seed, &profile),
            rng: Prng::derive(seed, FAULT_DOMAIN, 0),
            faults_off_at: profile.safety_ns,
            seed,
            profile,
            defects,
            split_frames,
            now: 0,
            sequence: 0,
            events: BTreeMap::new(),
            nodes,
            workload,
            checker: Checker::default(),
            trace: Trace::new(),
            faults_on: true,
            stats: Stats::default(),
            request_nodes: BTreeMap::new(),
            violation: None,
            done: false,
            admin_token: 0,
            churn: Churn::new(seed),
            group_client,
            controller: SimController::draw(seed),
            begun: false,
            large_state_proposed: 0,
            mover: Mover::new(seed),
        }
    }

    /// Schedules `event` at `at`.
    pub fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.events.insert((at.max(self.now), self.sequence), event);
    }

    fn replica_config(&self, id: u64) -> ReplicaConfig {
        let p = &self.profile;
        let voters: Vec<u64> = (1..=p.nodes).collect();
        ReplicaConfig {
            replica_id: id,
            group_id: 0,
            // The controller's group, whose log holds the topics, or a data group,
            // told the controller's topics (`world::controller`).
            controller_group: self.controller.is_none(),
            campaign_at_start: p.balance_ticks.is_some() && id == 1,
            voters,
            learners: Vec::new(),
            preferred_leader: None,
            election_ticks: p.election_ticks,
            heartbeat_ticks: p.heartbeat_ticks,
            max_message_bytes: p.max_message_bytes,
            max_inflight_messages: p.max_inflight_messages,
            max_unflushed_bytes: p.max_unflushed_bytes,
            max_uncommitted_bytes: p.max_unflushed_bytes.max(p.max_message_bytes),
            max_waiting_proposals: 1024,
            max_committed_bytes_per_ready: 64 * 1024,
            leader_balance_delay_ticks: p.balance_ticks,
            retention: RetentionPolicy {
                bytes: p.retention.then_some(p.retention_bytes),
                age_ms: None,
            },
            snapshot_resend_ticks: 10 * p.election_ticks as u64,
            commit_persist_ticks: 10,
            seed: self.seed,
            defects: self.defects,
        }
    }

    /// Starts node `id` from what its log holds.
    pub fn start_node(&mut self, id: u64) {
        let config = self.replica_config(id);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let log = node.store.log.borrow();
        let compaction = log.compaction.0;
        let state = if compaction == 0 {
            Ok(ShardState::default())
        } else {
            match log.snapshot_files.get(&compaction) {
                Some(snapshot) => decode_state(&snapshot.data)
                    .map(|mut s| {
                        s.forget_below(compaction + 1);
                        s
                    })
                    .map_err(|e| e.to_string()),
                None => Err(format!("no snapshot at the compaction point {compaction}")),
            }
        };
        let commit = log.hard_state.commit;
        drop(log);
        let state = match state {
            Ok(state) => state,
            Err(detail) => return self.fail("P7", format!("node {id} cannot restart: {detail}")),
        };
        let replica = match Replica::new(node.store.clone(), state, config) {
            Ok(replica) => replica,
            Err(error) => return self.fail("P7", format!("node {id} cannot restart: {error}")),
        };
        // The driver tells the node's shards the restored topics when it wires the
        // controller's hook (`ShardCore::on_topics_changed`), before the first pass.
        node.told_topics = Some(replica.state().topics.clone());
        node.replica = Some(replica);
        node.up = true;
        node.paused = false;
        node.in_play = true;
        let incarnation = node.incarnation;
        self.checker.restarted(id, commit);
        if let Some(replica) = self.nodes.get(&id).and_then(|n| n.replica.as_ref()) {
            let membership = replica.membership().clone();
            self.mover.started(id, membership);
        }
        let mut effects = Vec::new();
        if let Some(replica) = self.nodes.get_mut(&id).and_then(|n| n.replica.as_mut()) {
            replica.start(&mut effects);
        }
        self.carry_out(id, effects);
        self.tell_controller_topics_to(id);
        self.space_low_at_start(id);
        let first_tick = self.now + self.rng.range(1, self.profile.tick_ns);
        self.schedule(
            first_tick,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
    }

    /// Records the first violation.
    pub fn fail(&mut self, property: &'static str, detail: String) {
        if self.violation.is_none() {
            self.trace
                .note(self.now, 0, format!("VIOLATION {property}: {detail}"));
            self.violation = Some(Violation { property, detail });
        }
    }

    /// Feeds `input` to node `id` and carries out the effects.
    pub fn feed(&mut self, id: u64, input: Input) {
        let mut effects = Vec::new();
        let Some(replica) = self.nodes.get_mut(&id).and_then(|n| n.replica.as_mut()) else {
            return;
        };
        let before = self.profile.moves.then(|| replica.membership().clone());
        replica.handle(input, &mut effects);
        self.carry_out(id, effects);
        self.after_step(id, before);
    }

    fn carry_out(&mut self, id: u64, effects: Vec<Effect>) {
        let mut follow_ups = Vec::new();
        for effect in effects {
            self.carry_out_one(id, effect, &mut follow_ups);
        }
        for input in follow_ups {
            self.feed(id, input);
        }
    }

    fn carry_out_one(&mut self, id: u64, effect: Effect, follow_ups: &mut Vec<Input>) {
        match effect {
            Effect::Send { to, messages } => self.send(id, to, messages, follow_ups),
            Effect::Flush { flush } => self.start_flush(id, flush),
            Effect::Disk { op, work } => self.start_disk(id, op, work),
            Effect::ReadEntries {
                op,
                low,
                high,
                max_bytes,
            } => {
                let (low_ns, high_ns) = self.profile.flush_ns;
                let Some(node) = self.nodes.get_mut(&id) else {
                    return;
                };
                let at = self.now + node.rng.range(low_ns, high_ns);
                let incarnation = node.incarnation;
                self.schedule(
                    at,
                    Event::ReadComplete {
                        node: id,
                        incarnation,
                        op,
                        low,
                        high,
                        max_bytes,
                    },
                );
            }
            Effect::Answer { request, outcome } => self.answer(request, outcome),
            Effect::Failed { failure } => {
                self.trace
                    .note(self.now, id, format!("storage failed: {failure}"));
                // An operator restarts it later (during the safety phase only: once faults
                // stop, the others must do without it). A full disk: the driver restarts
                // it over its log within a second, short of space for a while.
                let at = self.now + self.rng.range(500_000_000, 3_000_000_000);
                if failure == StorageFailure::NoSpace {
                    let restart = self.now + 1_000_000_000;
                    if let Some(node) = self.nodes.get_mut(&id) {
                        node.space_low_until = Some(at.max(restart) + 1_000_000_000);
                    }
                    if restart < self.faults_off_at {
                        self.schedule(restart, Event::Crash { node: id });
                    }
                } else if at < self.faults_off_at {
                    self.schedule(at, Event::Crash { node: id });
                }
            }
            Effect::LeaderChanged { leader, term } => {
                self.trace
                    .note(self.now, id, format!("leader {leader} term {term}"));
            }
            Effect::HandOverDone { handed_to } => {
                self.trace
                    .note(self.now, id, format!("hand-over done: {handed_to:?}"));
                // A planned stop: the node goes down once it handed over (after the
                // effects of this step).
                self.schedule(self.now, Event::Crash { node: id });
            }
            Effect::MembershipChanged {
                membership,
                from_snapshot,
            } => self.membership_changed(id, membership, from_snapshot),
            Effect::TopicsChanged { topics } => {
                if let Some(node) = self.nodes.get_mut(&id) {
                    node.told_topics = Some(topics);
                }
            }
            Effect::DataArrived => {}
        }
    }

    fn send(
        &mut self,
        from: u64,
        to: u64,
        messages: Vec<raft::eraftpb::Message>,
        follow_ups: &mut Vec<Input>,
    ) {
        if let Some(node) = self.nodes.get(&from) {
            let log = node.store.log.borrow();
            for message in &messages {
                if let Err(v) = self.checker.outgoing(from, &log, message) {
                    drop(log);
                    return self.fail(v.property, v.detail);
                }
            }
        }
        let sent = self
            .network
            .send(self.now, from, to, messages, self.split_frames);
        if sent.oversized > 0 {
            self.fail(
                "S8",
                format!("node {from} sent a frame over the limit to {to}"),
            );
        }
        if let Some(detail) = sent.broken_chunks {
            self.fail(
                "S8",
                format!("node {from}'s chunked frame to {to}: {detail}"),
            );
        }
        self.stats.chunked_frames += sent.chunked as u64;
        for delivery in sent.deliveries {
            self.schedule(delivery.at, Event::Deliver(delivery));
        }
        if let Some(dropped_snapshot) = sent.dropped {
            follow_ups.push(Input::SendFailed {
                peer: to,
                dropped_snapshot,
            });
        }
    }

    fn disk_latency(&mut self, id: u64) -> u64 {
        let (low, high) = self.profile.flush_ns;
        let spike = self.profile.spike_per_mille;
        let Some(node) = self.nodes.get_mut(&id) else {
            return low;
        };
        let mut latency = node.rng.range(low, high);
        if self.faults_on && node.rng.chance(spike, 1000) {
            latency += node.rng.range(100_000_000, 400_000_000);
        }
        let at = node.disk_free_at.max(self.now) + latency;
        node.disk_free_at = at;
        at
    }

    fn start_flush(&mut self, id: u64, flush: FlushId) {
        let at = self.disk_latency(id);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        node.store.log.borrow_mut().begin_flush();
        let incarnation = node.incarnation;
        self.schedule(
            at,
            Event::FlushComplete {
                node: id,
                incarnation,
                flush,
            },
        );
    }

    fn start_disk(&mut self, id: u64, op: OpId, work: DiskWork) {
        let at = self.disk_latency(id);
        let incarnation = self.nodes.get(&id).map_or(0, |n| n.incarnation);
        self.schedule(
            at,
            Event::DiskComplete {
                node: id,
                incarnation,
                op,
                work,
            },
        );
    }

    fn answer(
        &mut self,
        request: RequestId,
        outcome: Result<Applied, crate::replication::ShardError>,
    ) {
        self.request_nodes.remove(&request);
        let Some(purpose) = self.workload.requests.remove(&request) else {
            return;
        };
        match purpose {
            Purpose::CreateTopic => {
                if outcome.is_err() {
                    let at = self.now + 20_000_000;
                    self.wake_admin(at);
                }
            }
            Purpose::FireAndForget | Purpose::Churn | Purpose::LargeState => {}
            Purpose::Group => self.group_answer(request, outcome),
            Purpose::Membership => self.membership_answer(request, outcome),
            Purpose::Batch(producer) => {
                let current = self.workload.producers[producer]
                    .in_flight
                    .as_ref()
                    .and_then(|f| f.request);
                if current != Some(request) {
                    return; // an abandoned attempt
                }
                let finished = self.workload.on_batch_answer(producer, &outcome);
                let delay = if finished {
                    self.workload.rng.range(0, 20_000_000)
                } else {
                    self.retarget(producer, outcome.err());
                    self.workload.rng.range(2_000_000, 20_000_000)
                };
                let at = self.now + delay;
                self.wake(producer, at);
            }
        }
    }

    fn retarget(&mut self, producer: usize, error: Option<crate::replication::ShardError>) {
        let current = self.workload.producers[producer].target;
        let hint = self
            .nodes
            .get(&current)
            .and_then(|n| n.replica.as_ref())
            .map_or(0, |r| r.leader_id());
        let target = if hint != 0 && hint != current {
            hint
        } else {
            self.pick_node(Pick::Workload)
        };
        self.workload.producers[producer].target = target;
        if let Some(p) = self.workload.producers[producer].in_flight.as_mut() {
            p.request = None;
        }
        let _ = error;
    }

    /// After a node handled an input: leaders per term (S1), commits (S2, S3).
    fn after_step(&mut self, id: u64, before: Option<Membership>) {
        let Some(replica) = self.nodes.get(&id).and_then(|n| n.replica.as_ref()) else {
            return;
        };
        let (leading, term, commit) = (replica.is_leader(), replica.term(), replica.commit_index());
        // S3 counts holders in the configuration the commit was decided in: the leader's
        // own, before this step or after it (a change applies once committed under the
        // configuration before it); a follower's may lag the leader's by changes. With
        // fixed members, every node's.
        let configurations = (leading || !self.profile.moves).then(|| {
            let mut configurations = vec![replica.membership().clone()];
            configurations.extend(before);
            configurations
        });
        // A parked Ready's entries are not in the store yet: its commits are checked once
        // the store has them.
        let commit = if replica.is_parked() { 0 } else { commit };
        if leading {
            if let Err(v) = self.checker.leader(id, term) {
                return self.fail(v.property, v.detail);
            }
        }
        let logs: BTreeMap<u64, SimLogStore> = self
            .nodes
            .iter()
            .map(|(k, n)| (*k, n.store.clone()))
            .collect();
        if let Err(v) = self
            .checker
            .commit(id, commit, &logs, configurations.as_deref())
        {
            self.fail(v.property, v.detail);
        }
    }

    /// Wakes the admin at `at` (replacing any earlier wake-up).
    fn wake_admin(&mut self, at: u64) {
        self.admin_token += 1;
        let token = self.admin_token;
        self.schedule(at, Event::Admin { token });
    }

    /// Wakes `producer` at `at` (replacing any earlier wake-up).
    fn wake(&mut self, producer: usize, at: u64) {
        let token = self.workload.producers[producer].wake_token + 1;
        self.workload.producers[producer].wake_token = token;
        self.schedule(at, Event::Client { producer, token });
    }

    /// Crashes node `id`: memory is lost, the disk keeps what it made durable.
    pub fn crash(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.up {
            return;
        }
        node.up = false;
        node.paused = false;
        node.incarnation += 1;
        node.replica = None;
        node.held.clear();
        node.gathered.clear();
        node.fail_next_flush = None;
        let recovered = node.store.log.borrow().recover_after_crash(&mut node.rng);
        node.store = SimLogStore::new(recovered);
        node.disk_free_at = self.now;
        self.trace.note(self.now, id, "crashed".to_string());
        self.connections_closed_by(id);
        let down = self.rng.range(50_000_000, 1_500_000_000);
        self.schedule(self.now + down, Event::Restart { node: id });
    }

    /// A killed process's connections close at once: with TCP links, every running peer
    /// hears that `id` is unreachable (the driver's peer listener reports the end of an
    /// admitted connection). A paused peer hears nothing.
    fn connections_closed_by(&mut self, id: u64) {
        if self.profile.link_mode != LinkMode::Tcp {
            return;
        }
        let peers: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.id != id && n.up && !n.paused)
            .map(|n| n.id)
            .collect();
        for peer in peers {
            self.feed(peer, Input::PeerUnreachable { peer: id });
        }
    }

    /// Runs until the end of the liveness phase or the first violation.
    pub fn run(&mut self) {
        self.begin();
        self.run_until(u64::MAX);
        self.stats.simulated_ns = self.now;
        self.stats.data_group = u64::from(self.controller.is_some());
        self.stats.acked = self.workload.acked;
        self.stats.group_commits = self.group_client.acknowledged_commits;
        self.stats.stale_group_commits = self.group_client.stale_refusals;
        self.stats.moves_done = self.mover.done;
        self.stats.moves_rolled_back = self.mover.rolled_back;
        self.stats.vote_moves = self.mover.vote_moves;
    }

    /// Starts the nodes, the clients and the fault schedule (once).
    pub fn begin(&mut self) {
        if self.begun {
            return;
        }
        self.begun = true;
        for id in 1..=self.profile.nodes {
            self.start_node(id);
        }
        self.wake_admin(self.now);
        for producer in 0..self.workload.producers.len() {
            self.wake(producer, self.now + 1_000_000);
        }
        self.wake_group_client(self.now + 1_000_000);
        if self.profile.moves {
            self.wake_mover(self.now + 1_000_000);
        }
        if self.profile.fault_every_ns > 0 {
            let at = self.rng.range(0, self.profile.fault_every_ns);
            self.schedule(at, Event::Fault);
        }
        self.schedule(self.faults_off_at, Event::FaultsOff);
        self.schedule(self.now + CONSUMER_POLL_NS, Event::Consume);
    }

    /// Handles events up to simulated time `until` (ns), the end of the liveness phase or
    /// the first violation, whichever comes first (scripted scenarios step with it).
    pub fn run_until(&mut self, until: u64) {
        while self.violation.is_none() && !self.done {
            if self
                .events
                .first_key_value()
                .is_some_and(|((at, _), _)| *at > until)
            {
                self.now = until;
                return;
            }
            let Some(((at, _), event)) = self.events.pop_first() else {
                self.fail("liveness", "nothing left to happen".to_string());
                break;
            };
            self.now = at;
            self.stats.events += 1;
            if self.stats.events > MAX_EVENTS_PER_RUN {
                self.fail(
                    "liveness",
                    format!("over {MAX_EVENTS_PER_RUN} events: an event storm"),
                );
                break;
            }
            self.dispatch(event);
            self.check_bounds();
        }
    }

    /// M1: every replica's queues and tables within their bounds.
    fn check_bounds(&mut self) {
        let (mut broken, mut max_outbox) = (None, self.stats.max_outbox);
        for node in self.nodes.values() {
            if let Some(replica) = &node.replica {
                max_outbox = max_outbox.max(replica.outbox_len() as u64);
                if let Some((what, held, bound)) = replica.broken_bound() {
                    broken = Some(format!(
                        "node {}: {what}: {held} held, bound {bound}",
                        node.id
                    ));
                }
            }
        }
        self.stats.max_outbox = max_outbox;
        if let Some(detail) = broken {
            self.fail("M1", detail);
        }
    }

    fn dispatch(&mut self, event: Event) {
        if let Some(node) = held_by_pause(&event) {
            if self.nodes.get(&node).is_some_and(|n| n.up && n.paused) {
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.held.push(event);
                }
                return;
            }
        }
        self.trace.event(self.now, &event);
        match event {
            Event::Tick { node, incarnation } => self.tick(node, incarnation),
            Event::Deliver(delivery) => self.deliver(delivery),
            Event::FlushComplete {
                node,
                incarnation,
                flush,
            } => self.flush_complete(node, incarnation, flush),
            Event::DiskComplete {
                node,
                incarnation,
                op,
                work,
            } => {
                match &work {
                    DiskWork::InstallSnapshot { .. } => {
                        self.stats.snapshot_installs += 1;
                        self.stats.parked_readies += 1;
                    }
                    DiskWork::TruncateSuffix { .. } => self.stats.parked_readies += 1,
                    _ => {}
                }
                self.disk_complete(node, incarnation, op, work)
            }
            Event::ReadComplete {
                node,
                incarnation,
                op,
                low,
                high,
                max_bytes,
            } => {
                self.stats.catch_up_reads += 1;
                self.read_complete(node, incarnation, op, low, high, max_bytes)
            }
            Event::Fault => self.inject_fault(),
            Event::Restart { node } => {
                if self.nodes.get(&node).is_some_and(|n| !n.up && n.in_play) {
                    self.start_node(node);
                }
            }
            Event::Resume { node } => self.resume(node),
            Event::Crash { node } => self.crash(node),
            Event::Heal => self.network.heal(self.now),
            Event::Client { producer, token } => {
                if self.workload.producers[producer].wake_token == token {
                    self.client(producer)
                }
            }
            Event::Admin { token } => {
                if token == self.admin_token {
                    self.admin()
                }
            }
            Event::GrowState => self.grow_state(),
            Event::GroupClient { token } => self.group_client_wakes(token),
            Event::Mover { token } => self.mover_wakes(token),
            Event::ProposeGathered { node, incarnation } => {
                self.propose_gathered(node, incarnation)
            }
            Event::FaultsOff => self.faults_off(),
            Event::Consume => self.consume(),
            Event::Check => self.check_liveness(),
            Event::ControllerTopics {
                node,
                incarnation,
                topics,
            } => self.controller_topics_arrive(node, incarnation, topics),
            Event::SpaceBack { node, incarnation } => {
                if self
                    .nodes
                    .get(&node)
                    .is_some_and(|n| n.incarnation == incarnation)
                {
                    self.space_back(node);
                }
            }
        }
    }

    fn tick(&mut self, id: u64, incarnation: u64) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if !node.up || node.incarnation != incarnation {
            return;
        }
        let period = (self.profile.tick_ns as i64
            + self.profile.tick_ns as i64 * node.drift_ppm / 1_000_000) as u64;
        self.schedule(
            self.now + period,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
        let now_ms = self.now / 1_000_000;
        self.feed(id, Input::Tick { now_ms });
    }

    fn deliver(&mut self, delivery: Delivery) {
        if !self.network.current(&delivery) {
            return;
        }
        if !self.nodes.get(&delivery.to).is_some_and(|n| n.up) {
            return;
        }
        let input = Input::Peer {
            from: delivery.from,
            messages: delivery.messages,
        };
        self.feed(delivery.to, input);
    }

    fn flush_complete(&mut self, id: u64, incarnation: u64, flush: FlushId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.up || node.incarnation != incarnation {
            return;
        }
        let failure = node.fail_next_flush.take();
        let outcome = node.store.log.borrow_mut().complete_flush(failure);
        self.feed(id, Input::FlushDone { flush, outcome });
    }

    fn disk_complete(&mut self, id: u64, incarnation: u64, op: OpId, work: DiskWork) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.up || node.incarnation != incarnation {
            return;
        }
        let outcome = node.store.log.borrow_mut().carry_out(&work);
        self.feed(id, Input::DiskDone { op, outcome });
    }

    fn read_complete(
        &mut self,
        id: u64,
        incarnation: u64,
        op: OpId,
        low: u64,
        high: u64,
        max_bytes: u64,
    ) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if !node.up || node.incarnation != incarnation {
            return;
        }
        let outcome = {
            let log = node.store.log.borrow();
            if low <= log.compaction.0 {
                Err(StorageFailure::Io {
                    detail: format!("entries from {low} were removed"),
                })
            } else {
                Ok(log.read(low, high, Some(max_bytes)))
            }
        };
        self.feed(id, Input::ReadDone { op, outcome });
    }

    fn resume(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.paused {
            return;
        }
        node.paused = false;
        let held = std::mem::take(&mut node.held);
        self.trace.note(self.now, id, "resumed".to_string());
        for event in held {
            self.schedule(self.now, event);
        }
    }

    fn admin(&mut self) {
        if self.controller.is_some() {
            return self.controller_admin(TOPIC);
        }
        if self.workload.topic_id.is_some() {
            return self.churn();
        }
        // The topic exists once any replica applied it.
        let known = self.nodes.values().find_map(|n| {
            n.replica
                .as_ref()
                .and_then(|r| r.state().topics.get(TOPIC).map(|t| t.id))
        });
        if let Some(id) = known {
            self.workload.topic_id = Some(id);
            if self.profile.large_state_topics > 0 {
                self.schedule(self.now, Event::GrowState);
            }
            return self.churn();
        }
        let target = self.pick_node(Pick::Workload);
        let request = self.workload.request(Purpose::CreateTopic);
        let Some(replica) = self.nodes.get_mut(&target).and_then(|n| n.replica.as_mut()) else {
            self.workload.requests.remove(&request);
            self.wake_admin(self.now + 20_000_000);
            return;
        };
        let topic_id = replica.reserve_topic_id();
        let data = BrokerEntry::CreateTopic {
            topic_id,
            partitions: self.workload.partitions,
            name: TOPIC,
            groups: vec![0; self.workload.partitions as usize],
            new_groups: Vec::new(),
        }
        .encode();
        self.propose_admin(target, request, data);
        self.wake_admin(self.now + 50_000_000);
    }

    /// Proposes a topic change at `target` and remembers where it went.
    fn propose_admin(&mut self, target: u64, request: RequestId, data: Vec<u8>) {
        self.request_nodes.insert(request, target);
        self.propose(
            target,
            Proposal {
                request,
                data,
                wait: true,
            },
        );
    }

    fn client(&mut self, producer: usize) {
        if self.workload.topic_id.is_none() {
            self.wake(producer, self.now + 20_000_000);
            return;
        }
        if !self.faults_on && self.workload.producers[producer].in_flight.is_none() {
            if self.workload.producers[producer].closing_batches == 0 {
                return;
            }
            self.workload.producers[producer].closing_batches -= 1;
        }
        if self.faults_on && self.workload.rng.chance(1, 10) {
            self.fire_and_forget();
        }
        let in_flight = match self.workload.producers[producer].in_flight.clone() {
            Some(f) if f.request.is_some() && self.now < f.sent_at + CLIENT_TIMEOUT_NS => {
                return self.wake(producer, f.sent_at + CLIENT_TIMEOUT_NS);
            }
            Some(f) => f,
            None => match self.workload.next_batch(producer, self.now) {
                Some(f) => f,
                None => return,
            },
        };
        if in_flight.request.is_some() {
            self.retarget(producer, None);
        }
        let request = self.workload.request(Purpose::Batch(producer));
        let target = self.workload.producers[producer].target;
        let mut sending = in_flight;
        sending.request = Some(request);
        sending.sent_at = self.now;
        let data = sending.data.clone();
        self.workload.producers[producer].in_flight = Some(sending);
        self.wake(producer, self.now + CLIENT_TIMEOUT_NS);
        if !self.nodes.get(&target).is_some_and(|n| n.up) {
            return; // the connection fails: the timeout retries elsewhere
        }
        self.request_nodes.insert(request, target);
        self.propose(
            target,
            Proposal {
                request,
                data,
                wait: true,
            },
        );
    }

    fn fire_and_forget(&mut self) {
        let scratch = self.scratch_topic_for_a_batch();
        let Some(data) = self.workload.fire_and_forget(scratch) else {
            return;
        };
        let target = self.pick_node(Pick::Workload);
        let request = self.workload.request(Purpose::FireAndForget);
        self.propose(
            target,
            Proposal {
                request,
                data,
                wait: false,
            },
        );
    }

    /// S6: the high watermark a leader serves never goes back (a consumer that saw an
    /// offset as committed must never be told it is not), across leader changes and
    /// restarts. Each partition's consumer asks a node; a node serves if it may.
    fn consume(&mut self) {
        self.schedule(self.now + CONSUMER_POLL_NS, Event::Consume);
        let Some(topic_id) = self.workload.topic_id else {
            return;
        };
        // Only a leader of the newest term is asked: a deposed leader that still believes
        // it leads (cut off, until check-quorum steps it down) can serve an older high
        // watermark — a known gap (leader leases would close it), not checked here.
        let newest_term = self
            .nodes
            .values()
            .filter_map(|n| n.replica.as_ref().map(|r| r.term()))
            .max()
            .unwrap_or(0);
        for partition in 0..self.workload.partitions {
            let target = self.pick_node(Pick::Workload);
            let Some(node) = self.nodes.get(&target).filter(|n| n.up && !n.paused) else {
                continue;
            };
            let current = |r: &&Replica<SimLogStore>| r.serves_reads() && r.term() == newest_term;
            let Some(replica) = node.replica.as_ref().filter(current) else {
                continue;
            };
            let served = replica
                .state()
                .partition(topic_id, partition)
                .map_or(0, |p| p.high_watermark());
            let seen = self
                .workload
                .served_high_watermarks
                .entry(partition)
                .or_insert(0);
            if served < *seen {
                let detail = format!(
                    "node {target} serves partition {partition} up to {served}, but {} was \
                     served before",
                    *seen
                );
                return self.fail("S6", detail);
            }
            *seen = served;
        }
    }

    fn faults_off(&mut self) {
        self.faults_on = false;
        self.trace.note(self.now, 0, "faults off".to_string());
        self.network.heal(self.now);
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.fail_next_flush = None;
                node.store.log.borrow_mut().refuse_next_append = false;
            }
            // A replica whose storage failed stays failed: the others must go on
            // without it (no operator restarts it here). Space comes back.
            self.resume(id);
            self.space_back(id);
        }
        for producer in 0..self.workload.producers.len() {
            self.wake(producer, self.now);
        }
        self.schedule(self.now + 100_000_000, Event::Check);
    }

    fn inject_fault(&mut self) {
        if !self.faults_on {
            return;
        }
        crate::sim::faults::inject(self);
        let gap = self.rng.range(0, 2 * self.profile.fault_every_ns);
        self.schedule(self.now + gap, Event::Fault);
    }

    fn check_liveness(&mut self) {
        match crate::sim::liveness::check(self) {
            Ok(true) => self.done = true,
            Ok(false) => {
                let budget = 30_000_000_000;
                if self.now > self.faults_off_at + budget {
                    let pending = crate::sim::liveness::pending(self);
                    self.fail(
                        "liveness",
                        format!("not converged 30 s after faults stopped: {pending}"),
                    );
                } else {
                    self.schedule(self.now + 100_000_000, Event::Check);
                }
            }
            Err(v) => self.fail(v.property, v.detail),
        }
    }

    /// The fault generator's randomness.
    pub fn fault_rng(&mut self) -> &mut Prng {
        &mut self.rng
    }

    /// The network, for faults.
    pub fn network(&mut self) -> &mut Network {
        &mut self.network
    }

    /// Pauses node `id` until `until`.
    pub fn pause(&mut self, id: u64, until: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if node.up && !node.paused {
                node.paused = true;
                self.trace.note(self.now, id, "paused".to_string());
                self.schedule(until, Event::Resume { node: id });
            }
        }
    }

    /// Resets the connection `from → to`: frames in flight are lost, the sender is told
    /// (with whether a snapshot was among them).
    pub fn reset_path(&mut self, from: u64, to: u64) {
        let epoch = self.network.path(from, to).epoch;
        let snapshot_lost = self.events.values().any(|event| match event {
            Event::Deliver(d) => {
                d.from == from
                    && d.to == to
                    && d.epoch == epoch
                    && d.messages
                        .iter()
                        .any(|m| m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot)
            }
            _ => false,
        });
        self.network.reset(self.now, from, to);
        if self.nodes.get(&from).is_some_and(|n| n.up && !n.paused) {
            self.feed(
                from,
                Input::SendFailed {
                    peer: to,
                    dropped_snapshot: snapshot_lost,
                },
            );
        }
    }

    /// Counts a fault.
    pub fn count_fault(&mut self, kind: FaultKind) {
        self.stats.faults[kind as usize] += 1;
    }
}

/// The node whose pause holds an event back.
fn held_by_pause(event: &Event) -> Option<u64> {
    match event {
        Event::Tick { node, .. }
        | Event::ReadComplete { node, .. }
        | Event::FlushComplete { node, .. }
        | Event::DiskComplete { node, .. }
        | Event::ControllerTopics { node, .. }
        | Event::ProposeGathered { node, .. }
        | Event::SpaceBack { node, .. } => Some(*node),
        Event::Deliver(delivery) => Some(delivery.to),
        _ => None,
    }
}

impl World {
    /// A node restarting within its `ENOSPC` period is told space is short, and when it
    /// ends.
    fn space_low_at_start(&mut self, id: u64) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        let Some(until) = node.space_low_until.filter(|&u| u > self.now) else {
            return;
        };
        let incarnation = node.incarnation;
        self.trace.note(self.now, id, "space short".to_string());
        self.stats.space_short += 1;
        self.feed(id, Input::SpaceLow { low: true });
        self.schedule(
            until,
            Event::SpaceBack {
                node: id,
                incarnation,
            },
        );
    }

    /// Tells node `id` its disk is short of space until faults stop (scripted scenarios).
    pub fn short_of_space(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.space_low_until = Some(u64::MAX);
        }
        self.trace.note(self.now, id, "space short".to_string());
        self.feed(id, Input::SpaceLow { low: true });
    }

    /// A node's disk has space again.
    fn space_back(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.space_low_until.take().is_some() {
            self.trace.note(self.now, id, "space back".to_string());
            self.feed(id, Input::SpaceLow { low: false });
        }
    }
}
