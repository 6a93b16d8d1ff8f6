//! A run's profile, drawn from its seed (swarm testing: every seed its own mix of cluster
//! size, sizes and fault rates, so rare combinations get their turn).

use crate::replication::prng::Prng;

/// PRNG domain of the profile.
const PROFILE_DOMAIN: u64 = 10;

/// PRNG domain of the large-state choice (its own: the other draws stay as they were).
const LARGE_STATE_DOMAIN: u64 = 11;

/// One seed in this many grows a large state.
const LARGE_STATE_ONE_IN: u64 = 8;

/// PRNG domain of the membership-change choice (its own, like the large state's).
const MOVES_DOMAIN: u64 = 12;

/// One seed in this many (of groups of three or more) moves replicas between nodes.
const MOVES_ONE_IN: u64 = 3;

/// Bytes a large-state topic adds to the encoded state: its name
/// (`world::LARGE_STATE_TOPIC_NAME_BYTES`), id, partition count and name length.
const LARGE_STATE_BYTES_PER_TOPIC: u64 = 210;

/// How links behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// FIFO per connection; loss only through a reset (frames in flight are lost).
    Tcp,
    /// Independent loss, duplication and reordering.
    Datagram,
}

/// Everything a run's world and replicas are set up with.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Replicas in the group.
    pub nodes: u64,
    /// Raft ticks before an election.
    pub election_ticks: usize,
    /// Raft ticks between heartbeats.
    pub heartbeat_ticks: usize,
    /// Nanoseconds per tick.
    pub tick_ns: u64,
    /// raft-rs's message size limit.
    pub max_message_bytes: u64,
    /// Appends in flight per follower.
    pub max_inflight_messages: usize,
    /// A store's unflushed bound.
    pub max_unflushed_bytes: u64,
    /// Largest peer frame a node accepts.
    pub max_frame_bytes: u64,
    /// Largest record value.
    pub max_value_bytes: u64,
    /// Link mode.
    pub link_mode: LinkMode,
    /// Smallest one-way delay, ns.
    pub min_delay_ns: u64,
    /// Mean of the exponential extra delay, ns.
    pub mean_delay_ns: u64,
    /// Datagram loss, per mille.
    pub drop_per_mille: u64,
    /// Datagram duplication, per mille.
    pub duplicate_per_mille: u64,
    /// Mean time between faults, ns (0: no faults).
    pub fault_every_ns: u64,
    /// Fault kinds enabled (bit per `FaultKind`).
    pub fault_kinds: u32,
    /// Flush latency range, ns.
    pub flush_ns: (u64, u64),
    /// Chance of a latency spike per flush, per mille.
    pub spike_per_mille: u64,
    /// Length of the safety phase, ns.
    pub safety_ns: u64,
    /// Producers.
    pub producers: u64,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Retention on (small segments, tight budget).
    pub retention: bool,
    /// Entries per simulated segment.
    pub segment_entries: u64,
    /// Retention budget, bytes.
    pub retention_bytes: u64,
    /// Ticks a preferred leader must be current before a transfer.
    pub balance_ticks: Option<u64>,
    /// Entries a store keeps in memory for followers (0: all); older ones are read off
    /// the Ready path.
    pub cache_entries: u64,
    /// Topics with long names the admin creates once the main topic exists (0: none), so
    /// that the applied state, which a snapshot carries, outgrows the frame limit: 1.2 to
    /// 2.5 frames of it. Such seeds always run retention (snapshots are sent).
    pub large_state_topics: u32,
    /// Replicas move between nodes during the run (`world::membership`): spare nodes
    /// join as learners, are promoted by joint consensus, and the replicas they replace
    /// leave.
    pub moves: bool,
}

/// The kinds of fault a run may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FaultKind {
    /// kill -9 and restart later.
    Crash = 0,
    /// SIGSTOP and SIGCONT.
    Pause = 1,
    /// Partitions: one node isolated, halves, one-way.
    Partition = 2,
    /// Connection resets.
    Reset = 3,
    /// A flush fails (no space, I/O error).
    DiskFailure = 4,
    /// An append is refused without failing the log.
    AppendRefusal = 5,
    /// A planned stop: hand-over first.
    HandOver = 6,
    /// A path holds everything for a while.
    Clog = 7,
}

/// Every kind, for reports.
pub const FAULT_KINDS: [FaultKind; 8] = [
    FaultKind::Crash,
    FaultKind::Pause,
    FaultKind::Partition,
    FaultKind::Reset,
    FaultKind::DiskFailure,
    FaultKind::AppendRefusal,
    FaultKind::HandOver,
    FaultKind::Clog,
];

impl Profile {
    /// The profile of `seed`.
    pub fn draw(seed: u64) -> Profile {
        let mut profile = Profile::draw_without_large_state(seed);
        // Drawn last, from its own generator: every other draw stays as it was.
        profile.large_state_topics = large_state_topics(seed, profile.max_frame_bytes);
        profile.retention |= profile.large_state_topics > 0;
        let mut rng = Prng::derive(seed, MOVES_DOMAIN, 0);
        profile.moves = profile.nodes >= 3 && rng.chance(1, MOVES_ONE_IN);
        profile
    }

    /// The profile of `seed` as drawn before large-state seeds existed: regression seeds
    /// found before then replay with it, exactly as they were found.
    pub fn draw_without_large_state(seed: u64) -> Profile {
        let mut rng = Prng::derive(seed, PROFILE_DOMAIN, 0);
        let nodes = [3, 3, 3, 3, 5, 5, 1][rng.range(0, 7) as usize];
        let max_message_bytes = [4096, 16 * 1024, 64 * 1024][rng.range(0, 3) as usize];
        let max_inflight_messages = rng.range(2, 17) as usize;
        let window = max_message_bytes * max_inflight_messages as u64;
        let fault_kinds = if rng.chance(1, 10) {
            0
        } else {
            (rng.next_u64() as u32 & 0xff) | 1 << rng.range(0, 8)
        };
        let retention = rng.chance(3, 10);
        Profile {
            nodes,
            election_ticks: 10,
            heartbeat_ticks: 2,
            tick_ns: 10_000_000,
            max_message_bytes,
            max_inflight_messages,
            // Room for the whole window, and for several of the largest batches.
            max_unflushed_bytes: (window * rng.range(1, 3)).max(64 * 1024),
            max_frame_bytes: (max_message_bytes * rng.range(2, 5)).max(32 * 1024),
            max_value_bytes: [64, 512, 2048][rng.range(0, 3) as usize],
            link_mode: if rng.chance(1, 5) {
                LinkMode::Datagram
            } else {
                LinkMode::Tcp
            },
            min_delay_ns: rng.range(20_000, 200_000),
            mean_delay_ns: rng.range(50_000, 2_000_000),
            drop_per_mille: rng.range(0, 50),
            duplicate_per_mille: rng.range(0, 20),
            fault_every_ns: if fault_kinds == 0 {
                0
            } else {
                rng.range(100_000_000, 1_000_000_000)
            },
            fault_kinds,
            flush_ns: (rng.range(50_000, 300_000), rng.range(300_000, 3_000_000)),
            spike_per_mille: rng.range(0, 5),
            safety_ns: rng.range(2_000_000_000, 6_000_000_000),
            producers: rng.range(1, 4),
            partitions: rng.range(1, 4) as u32,
            retention,
            segment_entries: rng.range(16, 128),
            retention_bytes: rng.range(16 * 1024, 256 * 1024),
            balance_ticks: rng.chance(1, 2).then(|| rng.range(20, 200)),
            cache_entries: if rng.chance(3, 10) {
                0
            } else {
                rng.range(4, 256)
            },
            large_state_topics: 0,
            moves: false,
        }
    }

    /// Whether a fault kind is on.
    pub fn has(&self, kind: FaultKind) -> bool {
        self.fault_kinds & (1 << kind as u32) != 0
    }
}

/// The large-state topics of `seed` (its own generator), for a frame limit of
/// `max_frame_bytes`.
fn large_state_topics(seed: u64, max_frame_bytes: u64) -> u32 {
    let mut rng = Prng::derive(seed, LARGE_STATE_DOMAIN, 0);
    if !rng.chance(1, LARGE_STATE_ONE_IN) {
        return 0;
    }
    let state_bytes = max_frame_bytes * rng.range(12, 26) / 10;
    (state_bytes / LARGE_STATE_BYTES_PER_TOPIC) as u32 + 1
}
