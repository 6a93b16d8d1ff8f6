//! Every bound of the system in one place.
//!
//! A bound that a user may want to change lives in a config struct with its default taken
//! from here; a bound that is part of a format (and so must never change) says so.

/// Size of one I/O block. Every O_DIRECT offset and length is a multiple of it.
/// Part of the on-disk format: segment layout and the meta file slots depend on it.
pub const BLOCK_SIZE_BYTES: u64 = 4096;

/// Entries start at offsets that are multiples of this inside a segment.
/// Part of the on-disk format (recovery scans for headers at this alignment).
pub const ENTRY_ALIGNMENT_BYTES: u64 = 8;

/// Default largest entry payload accepted by the CommitLog.
pub const DEFAULT_MAX_ENTRY_PAYLOAD_BYTES: u32 = 1024 * 1024;

/// Hard upper limit for the configurable payload maximum (the header stores a `u32`; we
/// keep far below that so one entry always fits in a segment with room to spare).
pub const MAX_ENTRY_PAYLOAD_LIMIT_BYTES: u32 = 64 * 1024 * 1024;

/// Default size of one preallocated segment file.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 128 * 1024 * 1024;

/// Smallest segment size accepted (tests use small segments to exercise rolling).
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 64 * 1024;

/// Adaptive segment preparation zero-fills the next segment only while the active one
/// fills slower than this.
pub const ADAPTIVE_ZERO_FILL_MAX_BYTES_PER_SECOND: u64 = 64 * 1024 * 1024;

/// Slowest pace of the background zero-fill of the next segment.
pub const MIN_ZERO_FILL_BYTES_PER_SECOND: u64 = 16 * 1024 * 1024;

/// Size of each write of the background zero-fill (small, so a foreground flush never
/// queues behind a big one).
pub const ZERO_FILL_CHUNK_BYTES: usize = 128 * 1024;

/// Default bound of the in-memory tail cache of recent entries.
pub const DEFAULT_TAIL_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// glibc's mmap threshold in a broker process: blocks below it (answers and frames, up
/// to the largest frame) come from the heap and are reused, not mapped fresh each time.
pub const MALLOC_MMAP_THRESHOLD_BYTES: i32 = 32 * 1024 * 1024;

/// Free memory at the top of a broker's heap beyond which glibc returns it to the kernel:
/// several answers' worth, so their churn does not trim and regrow the heap.
pub const MALLOC_TRIM_THRESHOLD_BYTES: i32 = 128 * 1024 * 1024;

/// Default bound of appended but not yet durable bytes; `append` refuses beyond it.
pub const DEFAULT_MAX_UNFLUSHED_BYTES: u64 = 64 * 1024 * 1024;

/// A sparse index point is recorded at least every this many bytes of a segment.
pub const SPARSE_INDEX_INTERVAL_BYTES: u64 = 4096;

/// Size of one write buffer of the append path; also the largest single write a flush issues.
pub const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// Size of the first write buffer after a flush (most flushes under a latency-bound load
/// carry a few KiB; a small buffer keeps their allocation cheap).
pub const FIRST_WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// How many large write buffers are kept for reuse after their writes complete.
pub const MAX_POOLED_WRITE_CHUNKS: usize = 32;

/// How many chunk writes a flush keeps in flight at once.
pub const MAX_WRITES_IN_FLIGHT: usize = 4;

/// Largest read issued at once when reading old entries back from a segment.
pub const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// Bound on the members listed in each list of a stored Raft configuration.
/// Part of the meta file format.
pub const MAX_CONF_MEMBERS: usize = 64;

/// Largest AppendEntries message raft-rs builds (a soft limit: one entry always goes).
/// A follower must hold a leader's whole window of these unflushed, so the number in
/// flight per follower is the log's unflushed bound divided by this.
pub const RAFT_MAX_MESSAGE_BYTES: u64 = 1024 * 1024;

/// Appends a leader keeps in flight to one follower (raft-rs `max_inflight_msgs`): with
/// 1 MiB messages, a follower catching up is sent at most 4 MiB per Ready pass. At 64 (the
/// unflushed bound's worth) one pass encoded and sent 64 MiB, and a steady producer's p99
/// rose to 75-155 ms while a follower caught up 300 MB; at 4 it stays at 9-19 ms and the
/// catch-up is as fast (about 2 s).
pub const MAX_INFLIGHT_APPENDS: u64 = 4;

/// Bytes of proposals a leader holds uncommitted (raft-rs `max_uncommitted_size`):
/// beyond, proposals are refused as overloaded (acks=none floods included).
pub const MAX_UNCOMMITTED_BYTES: u64 = 32 * 1024 * 1024;

/// Committed bytes one Ready hands out to apply: a restart re-applies its log in slices
/// of this, never in one pass.
pub const MAX_COMMITTED_BYTES_PER_READY: u64 = 8 * 1024 * 1024;

/// Clients' proposals a shard gathers into one replica input (one raft-rs step, one
/// append per follower, one flush) before it hands them over: what one executor pass of
/// requests brings, at most this many or `MAX_GATHERED_PROPOSAL_BYTES`.
pub const MAX_GATHERED_PROPOSALS: usize = 1024;

/// Bytes of gathered proposals (see `MAX_GATHERED_PROPOSALS`): one raft-rs message's worth.
pub const MAX_GATHERED_PROPOSAL_BYTES: usize = RAFT_MAX_MESSAGE_BYTES as usize;

/// Proposals waiting for their answer, per shard.
pub const MAX_WAITING_PROPOSALS: usize = 100_000;

/// Fetch long-polls waiting for new data, per shard (at the bound all are woken, which
/// frees those whose fetch already ended).
pub const MAX_FETCH_WAITERS: usize = 4096;

/// An idempotent producer's entry on a partition (its last batch, for duplicate detection
/// and ordering) is forgotten once the log's clock — the leaders' wall clock written into
/// each record batch entry — is this far past its last stored batch: 7 days. Long enough
/// for a producer whose spill journal holds batches through a long outage (its replay is
/// still recognised), short enough that producers that went away (every process start of
/// a producer without a journal is a new id) do not pile up. A batch of a forgotten
/// producer must start an epoch at sequence 0 (`UnknownProducer` otherwise).
pub const PRODUCER_IDLE_EXPIRY_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Most idempotent producer entries (one per producer and partition) a replica group
/// keeps; a new one beyond evicts the least recently used at apply. 50,000 entries take
/// about 3 MB in a snapshot (62 bytes each), which a follower is sent in one peer frame
/// (8 MiB by default; in chunks beyond the frame limit, `MAX_CHUNKED_PEER_FRAME_BYTES`),
/// and about 6 MB of memory per shard.
pub const MAX_PRODUCER_ENTRIES: usize = 50_000;

/// What a peer frame holding one log entry needs beyond the entry's payload (its data and
/// context): the frame's, the message's and the entry's own fields, under 1 KiB (see
/// `transport::frame_split`), with room to spare. Config validation keeps
/// `max_entry_payload_bytes + PEER_FRAME_HEADROOM_BYTES <= max_frame_bytes`, so every
/// entry can travel to a peer in some frame.
pub const PEER_FRAME_HEADROOM_BYTES: u32 = 64 * 1024;

/// Largest peer frame sent in chunks (`transport::chunks`): 256 MiB. Only a message that
/// cannot be cut outgrows the frame limit: a Raft snapshot, whose data is the applied
/// state (topics, whose count has no bound, each partition's next offset, up to
/// `MAX_PRODUCER_ENTRIES` producers, about 3 MB). 256 MiB is about a million topics with
/// 200-byte names, far above any state expected, and bounds what a receiving connection
/// holds while it joins a frame's chunks (its buffer grows only as chunks arrive). A
/// snapshot larger than this is not sent (logged as an error; the follower behind the
/// leader's compacted log cannot catch up until the state shrinks); a chunk sequence that
/// announces more is refused and its connection closed.
pub const MAX_CHUNKED_PEER_FRAME_BYTES: u64 = 256 * 1024 * 1024;

/// Frames over the frame limit (sent in chunks) queued or being written on one peer link:
/// one. Each is a whole snapshot (up to `MAX_CHUNKED_PEER_FRAME_BYTES` encoded) taking one
/// slot of the link's queue; while one is queued or being written, another for the same
/// peer is dropped and reported as a failed snapshot (raft-rs sends one again after a
/// heartbeat interval), so a link holds at most one snapshot beside its small frames.
pub const MAX_CHUNKED_FRAMES_PER_PEER: usize = 1;

/// Refused peer connections, frames and messages logged per shard in one
/// `PEER_REFUSAL_LOG_WINDOW`; the rest are counted and the count logged with the next
/// line (a flood of bad frames must not flood the log).
pub const PEER_REFUSAL_LOGS_PER_WINDOW: u32 = 20;

/// The window of `PEER_REFUSAL_LOGS_PER_WINDOW`.
pub const PEER_REFUSAL_LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Peer connections of one shard that have not sent their hello yet; a new one beyond
/// evicts the oldest (`transport::opening`: a peer sends its hello as soon as it reads
/// the challenge; anything slower is a stranger).
pub const MAX_PEER_CONNECTIONS_AWAITING_HELLO: usize = 64;

/// Admitted peer connections of one shard: one per other node normally, briefly two
/// while a link is made again; far above any cluster's size.
pub const MAX_PEER_CONNECTIONS_PER_SHARD: usize = 256;

/// A peer connection whose first frame (the hello) has not arrived by then is closed;
/// a connecting node waits as long for the receiver's challenge.
pub const PEER_HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A client connection whose TLS handshake has not ended by then is closed: a stalled
/// or slow handshake holds a slot of `MAX_TLS_HANDSHAKES_PER_SHARD` (a peer connection's
/// handshake counts in its `PEER_HELLO_TIMEOUT`).
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// TLS handshakes a shard's client port runs at once; a connection beyond evicts the
/// oldest unfinished one (`transport::opening`). Each costs a signature and a key
/// exchange (about a millisecond of CPU): a flood of handshakes takes a bounded share of
/// the shard, and served connections go on.
pub const MAX_TLS_HANDSHAKES_PER_SHARD: usize = 64;

/// How long a client connection of a broker with `client_auth` may take to authenticate
/// (TLS handshake done): a client authenticates at once (two round trips), a stranger
/// holding connections open without doing so is closed.
pub const AUTHENTICATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Client connections of one shard that may be authenticating at once; one beyond evicts
/// the oldest (`transport::opening`): unauthenticated connections never keep
/// authenticated clients out, and each costs at most two SCRAM steps of work.
pub const MAX_AUTHENTICATING_PER_SHARD: usize = 64;

/// The largest frame a client connection may send before it authenticated (an
/// authentication step, a node's join): until then the shard holds no more for it.
pub const MAX_UNAUTHENTICATED_FRAME_BYTES: u32 = 16 * 1024;

/// A SCRAM message (either side's) is a user name, nonces, a salt and a proof: one longer
/// than this is refused unread.
pub const MAX_SCRAM_MESSAGE_BYTES: usize = 1024;

/// The fewest PBKDF2 iterations a SCRAM credential may have (RFC 7677's minimum).
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;

/// The most PBKDF2 iterations a client computes for a server: more is a server making a
/// client burn CPU (about 0.3 s at this count), not protecting a password.
pub const MAX_SCRAM_ITERATIONS: u32 = 1_000_000;

/// PBKDF2 iterations of a credential made for a new user: each authentication costs
/// the server one HMAC chain this long (about 3 ms of a core).
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 8192;

/// The largest first frame (the hello) a peer connection may send: a hello is a node
/// id, a group, a version and a 32-byte proof; until it is checked, a connection makes
/// the shard hold no more than this.
pub const MAX_PEER_HELLO_FRAME_BYTES: u32 = 4096;

/// The longest topic or group name (or prefix) an access rule names: a topic name is at
/// most 200 characters (`shard::requests::valid_topic_name`), with room for group names.
pub const MAX_ACL_NAME_BYTES: usize = 255;

/// Access rules a cluster keeps: every request is checked against them on every shard,
/// so they stay a short list (prefixes cover families of topics).
pub const MAX_ACL_RULES: usize = 4096;

/// Users the controller keeps (SCRAM credentials, about 100 bytes each): every shard
/// holds the table, so it stays small.
pub const MAX_USERS: usize = 4096;

/// The shortest peer secret accepted: 32 bytes (256 bits from a random source, or their
/// hex or base64 text), the HMAC-SHA256 key's full strength.
pub const MIN_PEER_SECRET_BYTES: usize = 32;

/// The longest peer secret accepted: a secret file is a key, not a document.
pub const MAX_PEER_SECRET_BYTES: usize = 4096;

/// A challenge frame (the receiver's one frame on a peer connection) is a nonce and a
/// node id: a connecting node reads no more than this while waiting for it.
pub const MAX_PEER_CHALLENGE_FRAME_BYTES: u32 = 1024;

/// A join request's proof must be made within this long of the controller leader's
/// clock (either way): a join seen on the wire cannot be replayed later to add the node
/// back after it was removed.
pub const JOIN_PROOF_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// Catch-up reads (entries for followers behind the tail cache) in flight per shard: they
/// run off the Ready path, and raft-rs asks for more only as a follower's window frees, so
/// a follower far behind is caught up at the pace it acknowledges, never in one pass.
pub const MAX_CATCH_UP_READS: usize = 4;

/// Bytes of catch-up reads in flight per shard (each at most one AppendEntries message).
pub const MAX_CATCH_UP_READ_BYTES: u64 = 16 * 1024 * 1024;

/// Batch locations a fetch takes from its partition's index at most: a fetch costs a
/// binary search plus this bounded copy, never a copy of the partition from the requested
/// offset to its end (which made each poll O(partition)). 4,096 locations are 96 KiB; a
/// fetch of many small batches that reaches the bound before its `max_bytes` answers
/// fewer bytes, and the consumer's next poll goes on from there.
pub const MAX_BATCHES_PER_FETCH: usize = 4096;

/// What a fetch answer needs beyond its batches' bytes, per batch (its offset, crc32c
/// and vector header in the answer's flatbuffer, with room to spare): a fetch answer is
/// kept within the frame limit by counting it.
pub const FETCH_ANSWER_BYTES_PER_BATCH: usize = 64;

/// What a fetch answer needs beyond its batches, once (frame, response and topic name):
/// the answer's batches stop at the frame limit minus this.
pub const FETCH_ANSWER_HEADROOM_BYTES: usize = 1024;

/// Bytes of client requests one connection may hold, counted from the moment a request's
/// frame is read until its answer has been written back: 32 MiB, four frames of the
/// default 8 MiB limit. Reading from the connection pauses at the bound, so a client that
/// sends faster than it is answered, or never reads its answers, holds at most this much
/// of the broker (before: up to 1,024 requests of 8 MiB each, 8 GiB).
pub const MAX_REQUEST_BYTES_PER_CONNECTION: u64 = 32 * 1024 * 1024;

/// Bytes of client requests a shard holds while answering them, across all its
/// connections (a request's frame counts until its answer is ready): 256 MiB. At the
/// bound, reading pauses on every connection of the shard until answers free room, so
/// many connections together cannot take more than this either.
pub const MAX_REQUEST_BYTES_PER_SHARD: u64 = 256 * 1024 * 1024;

/// Words in every answer whose write may or may not have been stored: proposed, then the
/// leader changed or the request timed out before it was committed. Such an answer keeps
/// its retriable code (NotLeader, RequestTimedOut) and the client reports it as
/// unacknowledged: a plain retry could store it twice; an idempotent producer's retry
/// (same sequence numbers) is stored once. Part of the client protocol until it has a
/// code of its own: never reword.
pub const INDETERMINATE_WRITE_WORDS: &str = "may or may not be stored";

/// How often a shard whose disk filled up checks for free space to take writes again
/// (a statvfs call; the reopen itself happens once, when a segment's worth is free).
pub const NO_SPACE_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a topic change may take to commit before the client is told it timed out
/// (the proposal's fate is then unknown; creating or deleting again is safe).
pub const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Ticks between a data group leader's comparisons of its log's topics with the
/// controller's copy (`replication::topic_mirror`), besides the one when a copy arrives:
/// catches a change it could not propose then (not yet leader, back-pressure, an entry
/// lost with a leader change). Ten ticks (100 ms): a deleted topic's partitions go within
/// a commit of that; the comparison is a walk over the topics.
pub const TOPIC_MIRROR_TICKS: u64 = 10;

/// Readies of one replica whose messages wait in its outbox for their flush. At the
/// bound no Ready is taken until a flush completes: inputs that arrive meanwhile merge
/// into the next Ready (raft-rs keeps them: proposals are bounded at admission, a
/// leader's appends by its in-flight window), so a slow disk cannot grow the outbox with
/// every message that arrives during one sync. 64: one per input for a flush's worth of
/// inputs at ordinary rates (the simulator saw up to 139 unbounded in 100,000 seeds).
pub const MAX_OUTBOX_READIES: usize = 64;

/// Ticks within which a follower whose leader became unreachable (its connection closed:
/// a killed process) stands for election, drawn from 1 to this (seeded), instead of
/// waiting out its election timeout (10-20 ticks). Up to 3 ticks (30 ms): followers that
/// lose the leader together spread their campaigns over a few ticks, so one usually
/// stands alone and wins its first election.
pub const LEADER_LOST_ELECTION_TICKS: u64 = 3;

/// Segments' worth of space each shard keeps allocated in a reserve file next to its
/// log (`shard::no_space`). When the disk fills, the reserve is released so the shard can
/// restart at once and run retention (snapshot files, the meta file, topic changes need
/// a little room) while records are refused; it is taken back once there is room for it
/// and a segment more. One segment: what a log in that state writes needs no new segment.
pub const SPACE_RESERVE_SEGMENTS: u64 = 1;

/// Bytes of chunked peer frames being joined across all the peer connections of one
/// shard: two of the largest (a snapshot from the leader, and one from a connection that
/// is being replaced). Each connection may join one frame of up to
/// `MAX_CHUNKED_PEER_FRAME_BYTES`, and up to `MAX_PEER_CONNECTIONS_PER_SHARD` connections
/// may be admitted: without this bound they could hold 64 GiB together. A chunk that
/// would pass it closes its connection; the sender sends the snapshot again later.
pub const MAX_JOINING_PEER_BYTES_PER_SHARD: u64 = 2 * MAX_CHUNKED_PEER_FRAME_BYTES;

/// The longest a shard's replication work (its ticks and heartbeats, peer messages, disk
/// completions) waits for the CPU while its clients' requests keep it busy: the
/// replication task queue's glommio latency, which preempts the clients' queue this soon
/// after replication work becomes runnable (client loops yield between frames). Far below
/// the 100 ms election timeout: without the split, a leader flooded with 1 MiB produce
/// batches went 200-660 ms without a tick and lost its group. One tick (10 ms), not less:
/// the next tick's timer preempts as soon anyway, and at 5 ms the executor armed its
/// preemption timer again on most passes (io_uring_enter per request 1.0 -> 1.9).
pub const REPLICATION_QUEUE_LATENCY: std::time::Duration = std::time::Duration::from_millis(10);

/// How long a starting shard tries again to listen on a port that is in use. A process
/// killed a moment ago can hold its listening sockets for a while after it is gone: the
/// kernel tears its io_uring down later, and an accept still queued there keeps the socket
/// listening (and completing handshakes). A node restarted at once after a crash found
/// its port in use that way ("Address already in use"), in a test one restart in three.
/// A port another program really holds fails the start after this wait.
pub const LISTEN_IN_USE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Pause between two tries to listen on a port in use.
pub const LISTEN_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Consumer groups one replica group coordinates: a new group beyond is refused. Each
/// costs its members and offsets in the applied state and in every snapshot.
pub const MAX_CONSUMER_GROUPS: usize = 10_000;

/// Members of one consumer group: a join beyond is refused.
pub const MAX_GROUP_MEMBERS: usize = 1_000;

/// Committed offsets one replica group holds over all its consumer groups (one per group,
/// partition and, in broadcasting mode, instance): about 100 bytes each in a snapshot.
pub const MAX_COMMITTED_OFFSETS: usize = 1_000_000;

/// Topics one consumer group member may subscribe to.
pub const MAX_GROUP_SUBSCRIPTIONS: usize = 1_000;

/// Longest consumer group name, member id, client or instance name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 255;

/// Longest client name of a consumer group member, in bytes: a new member's id is the
/// name, '-' and a log index (up to 20 digits), within `MAX_GROUP_NAME_BYTES`.
pub const MAX_CLIENT_NAME_BYTES: usize = MAX_GROUP_NAME_BYTES - 21;

/// Longest metadata a commit may attach to an offset, in bytes.
pub const MAX_OFFSET_METADATA_BYTES: usize = 1024;

/// How often a coordinator checks its consumer group members' sessions: a member is
/// removed at most this long after its session timeout.
pub const SESSION_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a shard asked for a partition's bounds (a commit's check) waits for its
/// replica's end to reach the offset committed: a follower trails its leader by a
/// heartbeat or two; an offset still past the end after this is refused.
pub const BOUNDS_CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a controller request waits at a new leader still applying what its
/// predecessors committed (a restart's replay) before it is refused as "not leader": the
/// replay of a controller's log takes a few Ready passes, and clients do not retry a
/// refusal that names the node they asked.
pub const CONTROLLER_CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often a request waiting for a new leader to catch up (a controller request, a
/// partition's bounds) looks again: one tick.
pub const CATCH_UP_RECHECK: std::time::Duration = std::time::Duration::from_millis(10);

/// Bounds questions a shard keeps waiting for its end to catch up; beyond them it answers
/// at once (an offset its replica has not yet applied is then refused).
pub const MAX_BOUNDS_WAITS: usize = 1024;

/// Shortest session timeout a member may ask for (heartbeats every third of it).
pub const MIN_SESSION_TIMEOUT_MS: u32 = 1_000;

/// A consumer's session timeout unless it asks otherwise: a crashed member's partitions
/// move to the others within this plus one check.
pub const DEFAULT_SESSION_TIMEOUT_MS: u32 = 10_000;

/// Longest session timeout a member may ask for: a dead member's partitions wait this
/// long at most.
pub const MAX_SESSION_TIMEOUT_MS: u32 = 300_000;

/// Most bytes a consumer asks one fetch for (the broker returns at least one batch).
pub const CLIENT_FETCH_MAX_BYTES: u32 = 1024 * 1024;

/// How long a group consumer's fetch waits at the broker for data (long poll): an idle
/// partition costs one request per this.
pub const FETCH_LONG_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Longest pause between a group member's heartbeats (a third of its session timeout when
/// that is shorter). A member hears of a rebalance at its next heartbeat: until then it
/// reads on partitions that moved (records read twice) and leaves new ones unread, so a
/// crashed member's partitions are read again at most this long after its removal. A
/// heartbeat is a read of the coordinator's state (no log entry): 4 per second per member.
pub const MAX_HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a group consumer waits before placing again a partition whose fetch failed
/// (its leader moved, its node is down).
pub const FETCH_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Threads serving a node's metrics endpoint, each one connection at a time: scrapes
/// never run on a shard's executor, and a flood of connections to the metrics port
/// costs a fixed number of threads (the rest wait in the kernel's accept queue).
pub const METRICS_HTTP_THREADS: usize = 2;

/// How long the metrics endpoint gives a connection to send its request's head and take
/// its answer, in all (one deadline, not per read): a silent or slow connection holds one
/// of its threads this long, plus `METRICS_DRAIN_TIME`, at most.
pub const METRICS_HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// After its answer, how long the metrics endpoint reads what a client left unread (an
/// oversized request: closing with unread bytes would reset the connection and lose the
/// answer), and in at most how many reads.
pub const METRICS_DRAIN_TIME: std::time::Duration = std::time::Duration::from_millis(200);
/// See `METRICS_DRAIN_TIME`.
pub const METRICS_DRAIN_READS: usize = 16;

/// Headers a metrics request may carry (more: 400; a scrape sends about five).
pub const METRICS_MAX_HEADERS: usize = 32;

/// Largest request head the metrics endpoint reads (a scrape's is a few hundred bytes).
pub const METRICS_MAX_REQUEST_BYTES: usize = 8 * 1024;

/// How often a shard writes its groups' state (role, term, indexes, follower lag, log
/// size) into the metrics, in ticks of the group: the gauges a scrape reads are at most
/// this old (with 10 ms ticks: 100 ms); counters and histograms are counted as events
/// happen.
pub const METRICS_PUBLISH_TICKS: u64 = 10;
