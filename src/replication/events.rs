//! What goes into a replica (`Input`) and what comes out of it (`Effect`).
//!
//! The driver (or the simulated world) turns sockets, timers and disk completions into
//! inputs, and carries out the effects: it decides nothing itself.

use raft::eraftpb::{Message, Snapshot};

use crate::broker::state::{Applied, Topics};
use crate::replication::log_store::StorageFailure;

/// Identifies a client request waiting for its answer (chosen by the driver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Identifies a flush the replica asked for (increasing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlushId(pub u64);

/// Identifies a disk operation the replica asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Why a request was not served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// This replica does not lead the group (nothing was proposed): go to the leader.
    #[error("not the leader of this group")]
    NotLeader,
    /// Proposed, but this replica lost the leadership or its storage before the entry
    /// was committed: it may or may not be stored. Retry (an idempotent producer's retry
    /// is stored once).
    #[error("leadership changed before the write was committed: it may or may not be stored")]
    Indeterminate,
    /// The shard's storage failed; it takes no more writes.
    #[error("storage failed: {0}")]
    Storage(String),
    /// Too many requests or bytes are waiting: back off and retry.
    #[error("too many requests in flight")]
    Overloaded,
    /// The shard is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A membership change was refused (nothing was proposed).
    #[error("membership change refused: {0}")]
    MembershipRefused(String),
    /// Another membership change is proposed and not applied yet (nothing was
    /// proposed): ask again shortly.
    #[error("another membership change is not applied yet: ask again shortly")]
    MembershipPending,
}

/// A client's entry to propose; with `wait`, answered once applied, else once accepted.
#[derive(Debug)]
pub struct Proposal {
    /// Who waits.
    pub request: RequestId,
    /// The encoded `BrokerEntry`.
    pub data: Vec<u8>,
    /// Answer after apply (acks quorum/leader) rather than at once (acks none).
    pub wait: bool,
}

/// One input to the replica.
#[derive(Debug)]
pub enum Input {
    /// One logical tick; `now_ms` is the wall clock (for segment ages only).
    Tick {
        /// Milliseconds of the wall clock.
        now_ms: u64,
    },
    /// Raft messages from peer node `from` (already decoded).
    Peer {
        /// The node the connection belongs to.
        from: u64,
        /// Its messages, in order.
        messages: Vec<Message>,
    },
    /// Clients' entries to propose, in order: one raft-rs proposal for all of them, so
    /// the followers get them in one append and the disk in one flush.
    Propose {
        /// At least one.
        proposals: Vec<Proposal>,
    },
    /// A membership change to propose (`replication::membership`); answered once applied.
    ChangeMembership {
        /// Who waits.
        request: RequestId,
        /// The change.
        change: crate::replication::membership::MembershipChange,
    },
    /// The node is stopping: hand leadership over, take no more writes.
    HandOver,
    /// The controller group's topics (for the other shards of the node), with the id
    /// the next topic will get: an id below it missing from the list was deleted.
    ControllerTopics {
        /// Every topic, and the next id.
        topics: Topics,
    },
    /// A flush ended: the durable index, or why it failed.
    FlushDone {
        /// Which one.
        flush: FlushId,
        /// Durable index after it.
        outcome: Result<u64, StorageFailure>,
    },
    /// A catch-up read ended.
    ReadDone {
        /// Which one.
        op: OpId,
        /// The entries read (from the read's `low` on), or why not.
        outcome: Result<Vec<raft::eraftpb::Entry>, StorageFailure>,
    },
    /// A disk operation ended.
    DiskDone {
        /// Which one.
        op: OpId,
        /// Whether it worked.
        outcome: Result<(), StorageFailure>,
    },
    /// Messages for `peer` were dropped (queue full, connection reset).
    SendFailed {
        /// The peer.
        peer: u64,
        /// Whether a snapshot was among them.
        dropped_snapshot: bool,
    },
    /// `peer` could not be reached: a send to it failed, or its connection to this node
    /// ended (a killed process's connections close at once).
    PeerUnreachable {
        /// The peer.
        peer: u64,
    },
    /// The disk is short of space (`low`: records are refused, retention goes on) or has
    /// enough again (`replication::low_space`).
    SpaceLow {
        /// Short of space.
        low: bool,
    },
    /// The node that should lead the group changed (the controller recorded another:
    /// leader balancing hands it the group once it is current).
    PreferredLeader {
        /// The node (`None`: the default spread over the voters).
        node: Option<u64>,
    },
}

impl Input {
    /// One client's entry to propose.
    pub fn propose(request: RequestId, data: Vec<u8>, wait: bool) -> Input {
        Input::Propose {
            proposals: vec![Proposal {
                request,
                data,
                wait,
            }],
        }
    }
}

/// Disk work the replica needs done before it can go on (or, for retention, eventually).
#[derive(Clone, Debug)]
pub enum DiskWork {
    /// Remove entries from `from_index` on, some of them already written to a segment.
    TruncateSuffix {
        /// First index removed.
        from_index: u64,
    },
    /// Write the snapshot's file durably, then restart the log after it (`reset_to`) and
    /// store its configuration; the store's view then hands it out.
    InstallSnapshot {
        /// The leader's snapshot.
        snapshot: Snapshot,
    },
    /// Write a snapshot of the applied state to its file (a future retention point).
    WriteSnapshotFile {
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// Remove every entry up to `up_to_index` (retention) and delete older snapshot files.
    RemovePrefix {
        /// Last index removed: the snapshot's index.
        up_to_index: u64,
    },
    /// Write the hard state's commit index to the meta file (it changed alone).
    PersistCommitIndex,
}

/// One thing the driver must do.
#[derive(Debug)]
pub enum Effect {
    /// Send messages to a peer, in order.
    Send {
        /// The peer node.
        to: u64,
        /// Its messages.
        messages: Vec<Message>,
    },
    /// Flush everything appended so far; report `FlushDone`.
    Flush {
        /// Which one.
        flush: FlushId,
    },
    /// Read entries `[low, high)`, at most about `max_bytes` (at least one), for a
    /// follower catching up; report `ReadDone`.
    ReadEntries {
        /// Which one.
        op: OpId,
        /// First index.
        low: u64,
        /// One past the last index.
        high: u64,
        /// Payload bytes at most.
        max_bytes: u64,
    },
    /// Do disk work; report `DiskDone`.
    Disk {
        /// Which one.
        op: OpId,
        /// What.
        work: DiskWork,
    },
    /// A request's answer.
    Answer {
        /// Who waits.
        request: RequestId,
        /// What happened.
        outcome: Result<Applied, ShardError>,
    },
    /// New batches were applied (long polls may wake).
    DataArrived,
    /// The applied topics changed.
    TopicsChanged {
        /// Every topic, and the next id.
        topics: Topics,
    },
    /// The group's leader changed (0: unknown).
    LeaderChanged {
        /// The leader node.
        leader: u64,
        /// Its term.
        term: u64,
    },
    /// The hand-over asked by `HandOver` is over.
    HandOverDone {
        /// The node that took over, if one did.
        handed_to: Option<u64>,
    },
    /// The group's configuration in force changed: a committed change was applied, or a
    /// snapshot installed brought one (`from_snapshot`). One that leaves this replica out
    /// is not the end of it: a replica catching up may be replaying its own removal from
    /// an earlier time in the group, before the change that added it again. Whether a
    /// replica is done with its group is the controller's to say, never the replica's.
    MembershipChanged {
        /// The configuration now.
        membership: crate::replication::membership::Membership,
        /// It came with a snapshot (changes in between were not seen one by one).
        from_snapshot: bool,
    },
    /// The storage failed: the replica is silent from now on (it neither leads nor
    /// votes nor acknowledges); reads of what was stored go on.
    Failed {
        /// Why.
        failure: StorageFailure,
    },
}

/// Known defects that can be switched back on, to prove the simulator finds them. Every
/// switch is off in production; only the simulator's proof sets them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Defects {
    /// Mark a Ready's entries stable before they are in the log, and accept proposals
    /// while an append waits for room (hazard H1).
    pub advance_before_append: bool,
    /// After an append fails, carry on and release its acknowledgements with the next
    /// flush (hazard H2).
    pub ack_failed_append: bool,
    /// Never tell raft-rs that a snapshot was lost (hazard H5).
    pub never_report_snapshot: bool,
    /// A leader whose storage failed keeps heartbeating and leading (hazard H6).
    pub failed_leader_keeps_leading: bool,
}
