//! Drives one shard's replica group: runs the Ready loop against the CommitLog, applies
//! committed entries to the shard's state, and answers the requests waiting for them.
//!
//! ```text
//! propose ──▶ GroupCore ──take_ready──▶ append to log ──▶ flush task ──▶ on_persisted
//!                 ▲                         apply committed ──▶ waiters, fetch wake-ups
//!                 └──────────── tick task, wake-ups ◀───────────────┘
//! ```
//!
//! Everything runs on the shard's executor; the RefCells are never borrowed across an
//! await. A failed flush (full disk, I/O error) fails the shard's writes: waiting and later
//! proposals get a storage error, reads go on.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use raft::eraftpb::{Entry, Message, Snapshot};

use crate::broker::snapshot::{decode_state, encode_state};
use crate::broker::state::{Applied, ShardState, TopicInfo};
use crate::config::NodeConfig;
use crate::log::raft_storage::{from_conf_state, to_conf_state};
use crate::log::{CommitLog, LogError};
use crate::replication::group_core::preferred_leader_of;
use crate::replication::{GroupConfig, GroupCore, GroupError};
use crate::shard::snapshots::{SnapshotFileError, SnapshotFiles};
use crate::transport::PeerLinks;

/// Flushes of one shard's log running at once (the next one's writes overlap the
/// previous one's fdatasync).
pub const MAX_FLUSHES_IN_FLIGHT: usize = 2;

/// How long a stopping leader waits for a follower to take over.
pub const LEADERSHIP_TRANSFER_WAIT: Duration = Duration::from_secs(2);

/// Most proposals waiting for their entry to be applied, per shard.
pub const MAX_WAITING_PROPOSALS: usize = 100_000;

/// Why a shard could not do what was asked.
#[derive(Debug, thiserror::Error, Clone)]
pub enum ShardError {
    /// This replica does not lead the group.
    #[error("not the leader of this group")]
    NotLeader,
    /// The shard's storage failed; it takes no more writes.
    #[error("storage failed: {0}")]
    Storage(String),
    /// Too many requests are waiting.
    #[error("too many requests in flight")]
    Overloaded,
    /// The shard is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// An entry could not be proposed.
    #[error("{0}")]
    Rejected(String),
}

type Waiter = LocalSender<Result<Applied, ShardError>>;

/// Called with the topic list whenever the applied topics change.
pub type TopicsHook = Box<dyn Fn(Vec<TopicInfo>)>;

/// Called with (group, leader node) whenever this shard's group changes leader.
pub type LeaderHook = Box<dyn Fn(u32, u32)>;

/// A replica group's state, for `keel cluster status`.
#[derive(Clone, Debug)]
pub struct GroupStatusView {
    /// leader, follower, candidate or pre-candidate.
    pub role: &'static str,
    /// Leader node (0: unknown).
    pub leader: u32,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last log index.
    pub last_index: u64,
    /// Durable log index.
    pub durable: u64,
    /// (node, matched, lag) of each follower, when leading.
    pub followers: Vec<(u32, u64, u64)>,
}

/// A proposal waiting for its entry to be applied.
pub struct Pending(LocalReceiver<Result<Applied, ShardError>>);

impl Pending {
    /// Waits for the entry to be committed and applied.
    pub async fn wait(self) -> Result<Applied, ShardError> {
        self.0.recv().await.unwrap_or(Err(ShardError::ShuttingDown))
    }
}

/// One shard: its group, its log, its applied state and what waits on them.
pub struct ShardCore {
    /// This shard's index.
    pub shard_id: u32,
    /// The node's configuration.
    pub config: NodeConfig,
    /// The group's CommitLog.
    pub log: CommitLog,
    group: RefCell<GroupCore>,
    /// Applied state: topics and partition indexes.
    pub state: RefCell<ShardState>,
    /// Proposals waiting to be applied: log index → (term proposed in, waiter).
    waiters: RefCell<BTreeMap<u64, (u64, Waiter)>>,
    data_waiters: RefCell<Vec<LocalSender<()>>>,
    wake: LocalSender<()>,
    failure: RefCell<Option<String>>,
    stopping: Cell<bool>,
    topics_changed: RefCell<Option<TopicsHook>>,
    reserved_topic_id: Cell<u32>,
    /// Links to the same shard of the other nodes.
    peers: PeerLinks,
    /// Messages to send once the Ready they came with is durable.
    persisted_outbox: RefCell<VecDeque<(u64, Vec<Message>)>>,
    /// Leader of each group as last heard (0: unknown), for metadata answers.
    leaders: RefCell<Vec<u32>>,
    leader_changed: RefCell<Option<LeaderHook>>,
    /// Newest Ready whose entries are appended to the log.
    appended_ready: Cell<u64>,
    /// Newest Ready a running flush covers.
    flushing_ready: Cell<u64>,
    flushes_in_flight: Cell<usize>,
    /// Since when the group's preferred leader (another node) has been current while
    /// this replica leads: leadership moves to it after `leader_balance_delay`.
    preferred_current_since: Cell<Option<Instant>>,
    /// Set once the node hands its leadership over to stop: no more balancing.
    handing_over: Cell<bool>,
    /// Snapshots of the applied state, next to the log.
    snapshots: SnapshotFiles,
    /// Index of the newest snapshot taken or installed.
    last_snapshot_index: Cell<u64>,
}

impl ShardCore {
    /// Opens the shard's group over its log and starts its Ready loop and tick tasks.
    pub fn start(
        shard_id: u32,
        config: NodeConfig,
        log: CommitLog,
        snapshots: SnapshotFiles,
        state: ShardState,
    ) -> Result<Rc<ShardCore>, GroupError> {
        let last_snapshot_index = log.compaction_point().0;
        let group_config = GroupConfig {
            replica_id: u64::from(config.node_id),
            group_id: u64::from(shard_id),
            election_ticks: config.election_ticks,
            heartbeat_ticks: config.heartbeat_ticks,
            ..GroupConfig::default()
        };
        let mut group = GroupCore::new(&log, &group_config, &config.voters())?;
        let preferred = preferred_leader_of(shard_id, &config.voters());
        let balancing = config.leader_balance_delay.is_some();
        if group.voter_count() == 1 || (balancing && preferred == Some(u64::from(config.node_id))) {
            // A group of one voter elects itself at once. With leader balancing, the
            // group's preferred leader stands for election as soon as it starts: a new
            // cluster's leaders are spread from the start. (Harmless in a running
            // cluster: with pre-vote and check-quorum, followers that hear from a leader
            // refuse it.)
            group.campaign()?;
        }
        let peers = PeerLinks::start(&config, shard_id);
        let leaders = vec![0u32; config.shards as usize];
        let (wake, woken) = local_channel::new_bounded(1);
        let core = Rc::new(ShardCore {
            shard_id,
            config,
            log,
            group: RefCell::new(group),
            state: RefCell::new(state),
            waiters: RefCell::new(BTreeMap::new()),
            data_waiters: RefCell::new(Vec::new()),
            wake,
            failure: RefCell::new(None),
            stopping: Cell::new(false),
            topics_changed: RefCell::new(None),
            reserved_topic_id: Cell::new(0),
            peers,
            persisted_outbox: RefCell::new(VecDeque::new()),
            leaders: RefCell::new(leaders),
            leader_changed: RefCell::new(None),
            appended_ready: Cell::new(0),
            flushing_ready: Cell::new(0),
            flushes_in_flight: Cell::new(0),
            preferred_current_since: Cell::new(None),
            handing_over: Cell::new(false),
            snapshots,
            last_snapshot_index: Cell::new(last_snapshot_index),
        });
        glommio::spawn_local(ready_loop(core.clone(), woken)).detach();
        glommio::spawn_local(tick_loop(core.clone())).detach();
        core.poke();
        Ok(core)
    }

    /// Sets what to do when this shard's applied topics change (the controller shard
    /// tells the others).
    pub fn on_topics_changed(&self, hook: TopicsHook) {
        *self.topics_changed.borrow_mut() = Some(hook);
    }

    /// Sets what to do when this shard's group changes leader (tell the other shards).
    pub fn on_leader_changed(&self, hook: LeaderHook) {
        *self.leader_changed.borrow_mut() = Some(hook);
    }

    /// Records the leader of a group (this shard's, or another shard's as told).
    pub fn set_leader(&self, group: u32, leader: u32) {
        if let Some(slot) = self.leaders.borrow_mut().get_mut(group as usize) {
            *slot = leader;
        }
    }

    /// The leader of `group` as last heard (0: unknown).
    pub fn leader_of(&self, group: u32) -> u32 {
        self.leaders
            .borrow()
            .get(group as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Address of this group's leader (this shard on the leader node), if known.
    pub fn leader_address(&self) -> Option<String> {
        let leader = self.group.borrow().leader_id();
        u32::try_from(leader)
            .ok()
            .filter(|&l| l != 0)
            .and_then(|l| self.config.peer_shard_address(l, self.shard_id))
    }

    /// The group's state as this replica sees it.
    pub fn status(&self) -> GroupStatusView {
        let group = self.group.borrow();
        let last_index = group.last_index();
        GroupStatusView {
            role: group.role(),
            leader: u32::try_from(group.leader_id()).unwrap_or(0),
            term: group.term(),
            commit: group.commit_index(),
            applied: self.state.borrow().applied_index(),
            last_index,
            durable: self.log.durable_index(),
            followers: group
                .follower_progress()
                .into_iter()
                .map(|(id, matched)| {
                    (
                        u32::try_from(id).unwrap_or(0),
                        matched,
                        last_index.saturating_sub(matched),
                    )
                })
                .collect(),
        }
    }

    /// Steps messages from a peer into the group.
    pub fn step_messages(&self, messages: Vec<Message>) {
        let mut group = self.group.borrow_mut();
        for message in messages {
            if let Err(error) = group.step(message) {
                tracing::debug!(shard = self.shard_id, %error, "peer message refused");
            }
        }
        drop(group);
        self.poke();
    }

    fn note_leader(&self) {
        let leader = u32::try_from(self.group.borrow().leader_id()).unwrap_or(0);
        if self.leader_of(self.shard_id) != leader {
            self.set_leader(self.shard_id, leader);
            tracing::info!(
                shard = self.shard_id,
                leader,
                term = self.group.borrow().term(),
                "group leader"
            );
            if let Some(hook) = self.leader_changed.borrow().as_ref() {
                hook(self.shard_id, leader);
            }
        }
    }

    /// Wakes the Ready loop.
    fn poke(&self) {
        let _ = self.wake.try_send(());
    }

    /// Whether this shard leads its group.
    pub fn is_leader(&self) -> bool {
        self.group.borrow().is_leader()
    }

    fn check_writable(&self) -> Result<(), ShardError> {
        if self.stopping.get() {
            return Err(ShardError::ShuttingDown);
        }
        if let Some(failure) = self.failure.borrow().as_ref() {
            return Err(ShardError::Storage(failure.clone()));
        }
        Ok(())
    }

    /// Proposes an entry; with `wait`, returns a receiver of what applying it did, once
    /// it is committed.
    pub fn submit(&self, data: Vec<u8>, wait: bool) -> Result<Option<Pending>, ShardError> {
        self.check_writable()?;
        if self.waiters.borrow().len() >= MAX_WAITING_PROPOSALS {
            return Err(ShardError::Overloaded);
        }
        let index = self
            .group
            .borrow_mut()
            .propose(data)
            .map_err(|error| match error {
                GroupError::NotLeader { .. } => ShardError::NotLeader,
                other => ShardError::Rejected(other.to_string()),
            })?;
        let pending = if wait {
            let (sender, receiver) = local_channel::new_bounded(1);
            let term = self.group.borrow().term();
            self.waiters.borrow_mut().insert(index, (term, sender));
            Some(Pending(receiver))
        } else {
            None
        };
        self.poke();
        Ok(pending)
    }

    /// Proposes an entry; with `wait`, returns what applying it did once it is committed.
    pub async fn propose(&self, data: Vec<u8>, wait: bool) -> Result<Option<Applied>, ShardError> {
        match self.submit(data, wait)? {
            None => Ok(None),
            Some(pending) => pending.wait().await.map(Some),
        }
    }

    /// A receiver that fires when the next batch is applied (fetch long-polls).
    pub fn data_arrival(&self) -> LocalReceiver<()> {
        let (sender, receiver) = local_channel::new_bounded(1);
        self.data_waiters.borrow_mut().push(sender);
        receiver
    }

    /// Reserves the id of a topic being created (ids are never reused, even when two
    /// creates race before either is applied).
    pub fn reserve_topic_id(&self) -> u32 {
        let next = self
            .state
            .borrow()
            .topics
            .next_id()
            .max(self.reserved_topic_id.get());
        self.reserved_topic_id.set(next + 1);
        next
    }

    /// Hands this group's leadership to an up-to-date follower, if leading, and waits
    /// (bounded) until it has taken over: a planned stop then causes no election timeout.
    pub async fn hand_over_leadership(&self) {
        self.handing_over.set(true);
        let target = self.group.borrow_mut().transfer_leadership();
        let Some(target) = target else { return };
        self.poke();
        let deadline = std::time::Instant::now() + LEADERSHIP_TRANSFER_WAIT;
        while self.is_leader() && std::time::Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        let handed = !self.is_leader();
        tracing::info!(
            shard = self.shard_id,
            target,
            handed,
            "leadership transfer before shutdown"
        );
    }

    /// Leader balancing, once per tick: when this replica leads but the group prefers
    /// another node, and that node has been current for `leader_balance_delay`, hand it
    /// the group (a leadership transfer: no election timeout, no lost write).
    fn balance_leadership(&self) {
        let Some(delay) = self.config.leader_balance_delay else {
            return;
        };
        if self.handing_over.get() || self.stopping.get() {
            return;
        }
        let mut group = self.group.borrow_mut();
        let preferred = group
            .preferred_leader(self.shard_id)
            .filter(|&p| p != group.replica_id() && group.follower_is_current(p));
        let Some(preferred) = preferred else {
            self.preferred_current_since.set(None);
            return;
        };
        let since = match self.preferred_current_since.get() {
            Some(since) => since,
            None => {
                let now = Instant::now();
                self.preferred_current_since.set(Some(now));
                now
            }
        };
        if since.elapsed() < delay {
            return;
        }
        self.preferred_current_since.set(None);
        tracing::info!(
            shard = self.shard_id,
            target = preferred,
            "handing leadership to the group's preferred leader"
        );
        group.transfer_to(preferred);
        drop(group);
        self.poke();
    }

    /// Stops taking writes, waits for in-flight flushes, closes the log.
    pub async fn shut_down(&self) -> Result<(), LogError> {
        self.hand_over_leadership().await;
        self.stopping.set(true);
        self.log.flush().await?;
        self.log.persist_commit_index().await
    }

    fn apply(&self, committed: Vec<Entry>) {
        let mut any_batch = false;
        for entry in committed {
            let applied = self.state.borrow_mut().apply(entry.index, &entry.data);
            let applied = match applied {
                Ok(applied) => applied,
                Err(error) => {
                    tracing::error!(shard = self.shard_id, index = entry.index, %error, "undecodable entry; skipped");
                    Applied::Nothing
                }
            };
            match &applied {
                Applied::Batch { .. } => any_batch = true,
                Applied::TopicsChanged => self.announce_topics(),
                Applied::Duplicate { .. } | Applied::OutOfSequence { .. } | Applied::Nothing => {}
            }
            if let Some((term, waiter)) = self.waiters.borrow_mut().remove(&entry.index) {
                // Another leader's entry took this index: ours was never committed.
                let answer = if entry.term == term {
                    Ok(applied)
                } else {
                    Err(ShardError::NotLeader)
                };
                let _ = waiter.try_send(answer);
            }
        }
        if any_batch {
            for waiter in self.data_waiters.borrow_mut().drain(..) {
                let _ = waiter.try_send(());
            }
        }
        self.maybe_take_snapshot();
    }

    /// With retention on: once the applied index passes the end of a newly sealed
    /// segment, writes a snapshot of the applied state there. Retention later cuts the log
    /// at such a snapshot, so the data kept starts just after a segment boundary.
    fn maybe_take_snapshot(&self) {
        if self.config.retention_bytes.is_none() && self.config.retention_age.is_none() {
            return;
        }
        let sealed = self.log.last_sealed_index();
        let applied = self.state.borrow().applied_index();
        if sealed <= self.last_snapshot_index.get() || applied < sealed {
            return;
        }
        let Ok(term) = self.log.term(applied) else {
            return;
        };
        let mut snapshot = Snapshot {
            data: encode_state(&self.state.borrow(), false).into(),
            ..Default::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = applied;
        metadata.term = term;
        metadata.set_conf_state(to_conf_state(&self.log.conf_state()));
        match self.snapshots.write(&snapshot) {
            Ok(()) => {
                self.last_snapshot_index.set(applied);
                tracing::debug!(shard = self.shard_id, index = applied, "snapshot taken");
            }
            Err(error) => {
                tracing::warn!(shard = self.shard_id, %error, "snapshot not written; retention waits")
            }
        }
    }

    /// With retention on: removes the oldest segments — as many as bring the log within
    /// `retention_bytes`, and every sealed one older than `retention_age` — up to the
    /// first snapshot at or after the last of them (the snapshot becomes the one a
    /// follower behind the new compaction point is sent).
    async fn enforce_retention(&self) -> Result<(), LogError> {
        if self.config.retention_bytes.is_none() && self.config.retention_age.is_none() {
            return Ok(());
        }
        let layout = self.log.segment_layout();
        let sealed = &layout[..layout.len().saturating_sub(1)];
        let mut cut = 0;
        if let Some(budget) = self.config.retention_bytes {
            let mut remaining: u64 = layout.iter().map(|s| s.bytes).sum();
            for segment in sealed {
                if remaining <= budget {
                    break;
                }
                remaining -= segment.bytes;
                cut = segment.last_index;
            }
        }
        if let Some(age) = self.config.retention_age {
            for segment in sealed {
                let written = std::fs::metadata(&segment.path).and_then(|m| m.modified());
                let old = written
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|elapsed| elapsed > age);
                if !old {
                    break;
                }
                cut = cut.max(segment.last_index);
            }
        }
        if cut == 0 {
            return Ok(());
        }
        let durable = self.log.durable_index();
        let compaction = self.log.compaction_point().0;
        let indexes = self.snapshots.indexes().map_err(storage_error)?;
        let Some(at) = indexes
            .into_iter()
            .find(|&i| i >= cut && i <= durable && i > compaction)
        else {
            return Ok(());
        };
        let snapshot = self.snapshots.read(at).map_err(storage_error)?;
        self.log.remove_prefix(at).await?;
        self.log.set_snapshot(snapshot);
        self.state.borrow_mut().forget_below(at + 1);
        self.snapshots.remove_below(at).map_err(storage_error)?;
        tracing::info!(
            shard = self.shard_id,
            up_to = at,
            bytes_kept = self.log.size_bytes(),
            "retention removed the log's oldest segments"
        );
        Ok(())
    }

    /// Installs a snapshot from the leader: written to disk first, then the log restarts
    /// after it and the applied state is replaced (a crash in between restarts from the
    /// snapshot that matches the log's compaction point).
    async fn install_snapshot(&self, snapshot: Snapshot) -> Result<(), LogError> {
        let metadata = snapshot.get_metadata();
        let (index, term) = (metadata.index, metadata.term);
        let mut state = decode_state(&snapshot.data)
            .map_err(|e| LogError::InvalidRequest(format!("snapshot at {index}: {e}")))?;
        self.snapshots.write(&snapshot).map_err(storage_error)?;
        self.log.reset_to(index, term).await?;
        self.log
            .set_conf_state(from_conf_state(metadata.get_conf_state()))?;
        state.forget_below(index + 1);
        *self.state.borrow_mut() = state;
        self.last_snapshot_index.set(index);
        self.log.set_snapshot(snapshot);
        self.snapshots.remove_below(index).map_err(storage_error)?;
        self.announce_topics();
        tracing::info!(
            shard = self.shard_id,
            index,
            term,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    fn announce_topics(&self) {
        let topics: Vec<TopicInfo> = self.state.borrow().topics.list().cloned().collect();
        if let Some(hook) = self.topics_changed.borrow().as_ref() {
            hook(topics);
        }
    }

    fn fail(&self, error: &LogError) {
        tracing::error!(shard = self.shard_id, %error, "storage failed: this shard takes no more writes");
        *self.failure.borrow_mut() = Some(error.to_string());
        for (_, (_, waiter)) in std::mem::take(&mut *self.waiters.borrow_mut()) {
            let _ = waiter.try_send(Err(ShardError::Storage(error.to_string())));
        }
    }

    /// Steps messages that the peer port admitted from `from_node`'s connection (the
    /// hello, each message's from/to and type already checked by `transport::ingress`).
    pub fn step_peer_messages(&self, from_node: u64, messages: Vec<Message>) {
        let _ = from_node;
        self.step_messages(messages)
    }
}

/// How often a shard checks its log against the retention budget.
const RETENTION_CHECK: Duration = Duration::from_secs(1);

/// A snapshot file error, as the log error the Ready loop reports.
fn storage_error(error: SnapshotFileError) -> LogError {
    LogError::InvalidRequest(error.to_string())
}

/// A Ready pass longer than this is logged: it delays every message of the group.
const READY_PASS_WARNING: Duration = Duration::from_millis(100);

/// The Ready loop: whenever woken, do every Ready pass there is.
async fn ready_loop(core: Rc<ShardCore>, woken: LocalReceiver<()>) {
    while woken.recv().await.is_some() {
        let started = std::time::Instant::now();
        if let Err(error) = process_ready(&core).await {
            core.fail(&error);
        }
        let took = started.elapsed();
        if took > READY_PASS_WARNING {
            tracing::warn!(shard = core.shard_id, ?took, "a Ready pass stalled");
        }
    }
}

async fn process_ready(core: &Rc<ShardCore>) -> Result<(), LogError> {
    loop {
        let work = core.group.borrow_mut().take_ready();
        core.note_leader();
        let Some(work) = work else { return Ok(()) };
        if let Some(snapshot) = work.snapshot {
            core.install_snapshot(snapshot).await?;
        }
        core.peers.send(work.messages);
        core.apply(work.committed);
        if !work.persisted_messages.is_empty() {
            core.persisted_outbox
                .borrow_mut()
                .push_back((work.number, work.persisted_messages));
        }
        if let Some(first) = work.entries.first() {
            if first.index <= core.log.last_index() {
                core.log.truncate_suffix(first.index).await?;
            }
            while let Err(error) = core.log.append(&work.entries) {
                match error {
                    LogError::WriteBufferFull { .. } => {
                        core.log.flush().await?;
                    }
                    other => return Err(other),
                }
            }
        }
        if let Some(hard_state) = work.hard_state {
            core.log.set_hard_state(hard_state);
        }
        core.appended_ready.set(work.number);
        maybe_flush(core);
    }
}

/// Starts a flush of everything appended so far, unless `MAX_FLUSHES_IN_FLIGHT` are
/// running or the newest append is already being flushed. This is the group commit:
/// entries appended while flushes run wait for the next one, which takes them all.
fn maybe_flush(core: &Rc<ShardCore>) {
    let number = core.appended_ready.get();
    if core.flushes_in_flight.get() >= MAX_FLUSHES_IN_FLIGHT || number <= core.flushing_ready.get()
    {
        return;
    }
    core.flushing_ready.set(number);
    core.flushes_in_flight.set(core.flushes_in_flight.get() + 1);
    let flusher = core.clone();
    glommio::spawn_local(async move {
        let result = flusher.log.flush().await;
        flusher
            .flushes_in_flight
            .set(flusher.flushes_in_flight.get() - 1);
        match result {
            Ok(_) => {
                // Flushes end in the order they started, so numbers never go back.
                flusher.group.borrow_mut().on_persisted(number);
                let ready: Vec<Message> = {
                    let mut outbox = flusher.persisted_outbox.borrow_mut();
                    let mut ready = Vec::new();
                    while outbox.front().is_some_and(|(n, _)| *n <= number) {
                        if let Some((_, messages)) = outbox.pop_front() {
                            ready.extend(messages);
                        }
                    }
                    ready
                };
                flusher.peers.send(ready);
                flusher.poke();
                maybe_flush(&flusher);
            }
            Err(error) => flusher.fail(&error),
        }
    })
    .detach();
}

/// Ticks the group's logical clock.
async fn tick_loop(core: Rc<ShardCore>) {
    let interval = Duration::from_millis(core.config.tick_ms.max(1));
    let retention_every = (RETENTION_CHECK.as_millis() as u64 / core.config.tick_ms.max(1)).max(1);
    let mut ticks: u64 = 0;
    while !core.stopping.get() {
        glommio::timer::sleep(interval).await;
        ticks += 1;
        if ticks.is_multiple_of(retention_every) {
            if let Err(error) = core.enforce_retention().await {
                tracing::warn!(shard = core.shard_id, %error, "retention failed; will retry");
            }
        }
        {
            let mut group = core.group.borrow_mut();
            group.tick();
            for peer in core.peers.take_unreachable() {
                group.report_unreachable(peer);
            }
        }
        core.balance_leadership();
        core.poke();
    }
}
