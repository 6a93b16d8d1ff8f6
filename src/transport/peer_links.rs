//! Outgoing links from one shard to the same shard of every peer node, on their peer
//! ports: each connection opens with the receiver's challenge and this node's hello
//! proving the cluster's secret over it (`security`), then carries frames of messages,
//! each below the receiver's frame limit (`frame_split`).
//!
//! A frame that is still over the limit once split (only a message that cannot be cut: a
//! snapshot of a large applied state) takes one slot of the link's queue like any frame,
//! whole, and the link task writes it as consecutive chunk frames (`chunks`), each within
//! the limit, with nothing in between: the frame arrives whole or, if the connection
//! breaks, not at all. Such a frame is bounded twice: at most
//! `MAX_CHUNKED_PEER_FRAME_BYTES` (a larger one is dropped with an error) and at most
//! `MAX_CHUNKED_FRAMES_PER_PEER` queued or being written per link (another is dropped and
//! reported as a failed snapshot, which raft-rs sends again later). A snapshot whose connection
//! fails while it is written is reported lost (`take_lost_snapshots`), so raft-rs sends it
//! again without waiting for the resend timeout.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use raft::eraftpb::Message;

use crate::config::NodeConfig;
use crate::constants::{
    MAX_CHUNKED_FRAMES_PER_PEER, MAX_CHUNKED_PEER_FRAME_BYTES, MAX_PEER_CHALLENGE_FRAME_BYTES,
    PEER_HELLO_TIMEOUT,
};
use crate::protocol::frame::{append_frame, FrameDecoder};
use crate::protocol::peer_codec::{
    decode_peer_frame, encode_peer_hello, encode_prefixed_peer_frame, PeerHello, PrefixedFrame,
};
use crate::security::stream::Stream;
use crate::security::tls::{node_name, NodeTls};
use crate::security::PeerSecret;
use crate::transport::chunks::chunk_frame;
use crate::transport::frame_split::{
    encoded_size_estimate, split_into_frames, PEER_FRAME_FIXED_BYTES,
};
use rustls_pki_types::ServerName;
use std::sync::Arc;

/// Frames queued per peer before new ones are dropped.
pub const PEER_QUEUE_FRAMES: usize = 256;

/// Queued frames are written together up to about this many bytes.
const COALESCE_BYTES: usize = 1 << 20;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What was lost when a frame could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The frames held a snapshot.
    pub snapshot: bool,
}

/// A frame in a link's queue.
struct Outgoing {
    /// The encoded peer frame.
    frame: PrefixedFrame,
    /// It holds a snapshot (reported lost if its write fails).
    snapshot: bool,
    /// Held by a frame over the limit until it is written or dropped.
    _chunked_slot: Option<ChunkedSlot>,
}

/// One of a link's `MAX_CHUNKED_FRAMES_PER_PEER` places for a frame sent in chunks, free
/// again when dropped.
struct ChunkedSlot(Rc<Cell<usize>>);

impl ChunkedSlot {
    /// A place among the `taken` ones, if one is free.
    fn take(taken: &Rc<Cell<usize>>) -> Option<ChunkedSlot> {
        if taken.get() >= MAX_CHUNKED_FRAMES_PER_PEER {
            return None;
        }
        taken.set(taken.get() + 1);
        Some(ChunkedSlot(taken.clone()))
    }
}

impl Drop for ChunkedSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A replica a group links to: (node, the shard running the group there, that shard's
/// peer address).
pub type LinkTarget = (u64, u32, String);

/// The sending end of one link.
struct LinkQueue {
    frames: LocalSender<Outgoing>,
    /// Frames over the limit queued or being written.
    chunked_taken: Rc<Cell<usize>>,
    /// The shard of the peer it goes to, and its peer address.
    target: (u32, String),
    /// Set when the peer left the group: the link task ends (it also ends once this
    /// queue is dropped and drained).
    closed: Rc<Cell<bool>>,
    /// Bytes per second this link may write (0: as fast as it goes).
    pace: Rc<Cell<u64>>,
}

impl Drop for LinkQueue {
    fn drop(&mut self) {
        self.closed.set(true);
    }
}

/// The links of one shard's replica group.
pub struct PeerLinks {
    config: NodeConfig,
    group: u32,
    /// What opens each connection.
    opener: Rc<Opener>,
    /// The receivers' frame limit (every node runs with the same `max_frame_bytes`).
    max_frame_bytes: usize,
    links: RefCell<BTreeMap<u64, LinkQueue>>,
    /// The peers whose links are paced, and at how many bytes per second.
    paced: RefCell<(Vec<u64>, u64)>,
    unreachable: Rc<RefCell<Vec<u64>>>,
    /// Peers a snapshot was being written to when their connection failed.
    lost_snapshots: Rc<RefCell<Vec<u64>>>,
}

impl PeerLinks {
    /// Starts a link task to each of `group`'s other replicas: (node, the shard running
    /// the group there, that shard's peer address).
    pub fn start(config: &NodeConfig, group: u32, replicas: &[LinkTarget]) -> PeerLinks {
        let links = PeerLinks {
            config: config.clone(),
            group,
            opener: Rc::new(Opener {
                node_id: config.node_id,
                group,
                secret: config.peer_secret.clone(),
                tls: config.tls.clone().filter(|_| config.peer_tls()),
            }),
            max_frame_bytes: config.max_frame_bytes as usize,
            links: RefCell::new(BTreeMap::new()),
            paced: RefCell::new((Vec::new(), 0)),
            unreachable: Rc::new(RefCell::new(Vec::new())),
            lost_snapshots: Rc::new(RefCell::new(Vec::new())),
        };
        links.follow(replicas, &[]);
        links
    }

    /// Links to exactly `replicas` (the group's members now), and keeps those to `keep`
    /// (members of the replica's configuration the placement no longer names: a node
    /// being removed still gets the entry that removes it): a link to a new member
    /// starts, one to a member that left (or moved to another address) ends (its queued
    /// frames are dropped).
    pub fn follow(&self, replicas: &[LinkTarget], keep: &[u64]) {
        let wanted: BTreeMap<u64, (u32, String)> = replicas
            .iter()
            .filter(|(node, _, _)| *node != u64::from(self.config.node_id))
            .map(|(node, shard, address)| (*node, (*shard, address.clone())))
            .collect();
        let mut links = self.links.borrow_mut();
        links.retain(|node, link| {
            wanted.get(node) == Some(&link.target)
                || (!wanted.contains_key(node) && keep.contains(node))
        });
        for (&node, (shard, address)) in &wanted {
            if links.contains_key(&node) {
                continue;
            }
            links.insert(node, self.start_link(node, *shard, address.clone()));
        }
    }

    /// Starts the link task to `node`'s shard `shard` at `address`.
    fn start_link(&self, node: u64, shard: u32, address: String) -> LinkQueue {
        let (sender, receiver) = local_channel::new_bounded(PEER_QUEUE_FRAMES);
        let closed = Rc::new(Cell::new(false));
        let pace = {
            let (peers, rate) = &*self.paced.borrow();
            Rc::new(Cell::new(if peers.contains(&node) { *rate } else { 0 }))
        };
        let link = Link {
            address: address.clone(),
            peer: node,
            opener: self.opener.clone(),
            unreachable: self.unreachable.clone(),
            lost_snapshots: self.lost_snapshots.clone(),
            max_frame_bytes: self.max_frame_bytes,
            closed: closed.clone(),
            pace: pace.clone(),
        };
        glommio::spawn_local(link_task(link, receiver)).detach();
        LinkQueue {
            frames: sender,
            chunked_taken: Rc::new(Cell::new(0)),
            target: (shard, address),
            closed,
            pace,
        }
    }

    /// Paces the links to `peers` at `bytes_per_second` (0: unpaced), the others not: a
    /// learner catching up a large log takes the disk and network at a bounded rate,
    /// while the group's voters get theirs at once.
    pub fn pace(&self, peers: &[u64], bytes_per_second: u64) {
        *self.paced.borrow_mut() = (peers.to_vec(), bytes_per_second);
        for (node, link) in self.links.borrow().iter() {
            let rate = if peers.contains(node) {
                bytes_per_second
            } else {
                0
            };
            link.pace.set(rate);
        }
    }

    /// Ends every link (the group stopped on this node).
    pub fn close(&self) {
        self.links.borrow_mut().clear();
    }

    /// Sends one peer's messages, in order, in frames each below the frame limit (one
    /// over it, a snapshot, in chunks). `Some` when any frame was dropped (the peer's
    /// queue is full, the peer is unknown, or a snapshot over the bounds of chunked
    /// frames): the replica reports it to Raft.
    pub fn send(&self, peer: u64, messages: Vec<Message>) -> Option<Dropped> {
        let snapshot = messages
            .iter()
            .any(|m| m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot);
        let links = self.links.borrow();
        let Some(link) = links.get(&peer) else {
            tracing::warn!(peer, "message for an unknown peer dropped");
            return Some(Dropped { snapshot });
        };
        let mut dropped = None;
        for messages in split_into_frames(messages, self.max_frame_bytes) {
            if !self.queue_frame(peer, link, &messages) {
                dropped = Some(Dropped { snapshot });
            }
        }
        dropped
    }

    /// Encodes one frame into the link's queue; false when it was dropped. A frame that
    /// may be over the limit (by the upper bound of its size) takes the link's chunked
    /// slot first: while it is taken, a snapshot is dropped without being encoded.
    fn queue_frame(&self, peer: u64, link: &LinkQueue, messages: &[Message]) -> bool {
        let estimate: usize =
            PEER_FRAME_FIXED_BYTES + messages.iter().map(encoded_size_estimate).sum::<usize>();
        let kind = messages.first().map(Message::get_msg_type);
        let mut chunked_slot = None;
        if estimate > self.max_frame_bytes {
            chunked_slot = ChunkedSlot::take(&link.chunked_taken);
            if chunked_slot.is_none() {
                tracing::debug!(
                    peer,
                    ?kind,
                    "a frame over the limit is already queued for the peer: dropped"
                );
                return false;
            }
        }
        let frame = encode_prefixed_peer_frame(self.config.node_id, self.group, messages);
        let length = frame.payload().len();
        if length as u64 > MAX_CHUNKED_PEER_FRAME_BYTES {
            // Only a message that cannot be cut: a snapshot of a very large state.
            tracing::error!(
                peer,
                bytes = length,
                bound = MAX_CHUNKED_PEER_FRAME_BYTES,
                ?kind,
                "a message larger than MAX_CHUNKED_PEER_FRAME_BYTES was not sent"
            );
            return false;
        }
        if length <= self.max_frame_bytes {
            chunked_slot = None;
        }
        let snapshot = messages
            .iter()
            .any(|m| m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot);
        let outgoing = Outgoing {
            frame,
            snapshot,
            _chunked_slot: chunked_slot,
        };
        link.frames.try_send(outgoing).is_ok()
    }

    /// Peers whose frames could not be delivered since the last call.
    pub fn take_unreachable(&self) -> Vec<u64> {
        sorted_once(std::mem::take(&mut *self.unreachable.borrow_mut()))
    }

    /// Peers a snapshot was lost to (its connection failed while it was written) since the
    /// last call: the replica reports it failed and raft-rs sends it again, rather than
    /// waiting for its resend timeout.
    pub fn take_lost_snapshots(&self) -> Vec<u64> {
        sorted_once(std::mem::take(&mut *self.lost_snapshots.borrow_mut()))
    }
}

/// One outgoing link: where it goes and what opens each connection.
struct Link {
    /// The peer's peer port for this group.
    address: String,
    peer: u64,
    /// What opens each connection.
    opener: Rc<Opener>,
    unreachable: Rc<RefCell<Vec<u64>>>,
    lost_snapshots: Rc<RefCell<Vec<u64>>>,
    /// The peer's frame limit: a larger frame is written as chunks.
    max_frame_bytes: usize,
    /// Set once the peer left the group.
    closed: Rc<Cell<bool>>,
    /// Bytes per second the link may write (0: unpaced).
    pace: Rc<Cell<u64>>,
}

/// Connects (again, with backoff, after any failure), sends the hello, then the queued
/// frames.
async fn link_task(link: Link, frames: LocalReceiver<Outgoing>) {
    let Link {
        address,
        peer,
        opener,
        unreachable,
        lost_snapshots,
        max_frame_bytes,
        closed,
        pace,
    } = link;
    let mut backoff = FIRST_BACKOFF;
    let mut pacer = Pacer::default();
    loop {
        if closed.get() {
            return;
        }
        let mut stream = match opener.connect(&address, peer).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::trace!(peer, %address, %error, "peer link not up");
                unreachable.borrow_mut().push(peer);
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        tracing::debug!(peer, %address, "peer link up");
        let mut out = Vec::new();
        loop {
            let Some(first) = frames.recv().await else {
                return;
            };
            let mut snapshot = false;
            let written = write_queued(
                &mut stream,
                &frames,
                first,
                &mut out,
                (max_frame_bytes, &mut snapshot),
            );
            match written.await {
                Ok(bytes) => pacer.wait(bytes, pace.get()).await,
                Err(_) => {
                    unreachable.borrow_mut().push(peer);
                    if snapshot {
                        lost_snapshots.borrow_mut().push(peer);
                    }
                    break;
                }
            }
            glommio::yield_if_needed().await;
        }
    }
}

/// Keeps a paced link's writes at its rate, averaged over windows of `PACE_WINDOW`.
#[derive(Default)]
struct Pacer {
    window_start: Option<std::time::Instant>,
    window_bytes: u64,
}

/// The span a paced link's rate is averaged over.
const PACE_WINDOW: Duration = Duration::from_secs(1);

impl Pacer {
    /// After `bytes` were written: waits until they fit `bytes_per_second` (0: at once).
    async fn wait(&mut self, bytes: usize, bytes_per_second: u64) {
        if bytes_per_second == 0 {
            self.window_start = None;
            return;
        }
        let now = std::time::Instant::now();
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) > PACE_WINDOW {
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
        self.window_bytes += bytes as u64;
        let due = Duration::from_secs_f64(self.window_bytes as f64 / bytes_per_second as f64);
        let elapsed = now.duration_since(self.window_start.unwrap_or(now));
        if due > elapsed {
            glommio::timer::sleep(due - elapsed).await;
        }
    }
}

/// Writes `first` and the frames queued while the last write ran, together (in writes of
/// about `COALESCE_BYTES`); a frame over `max_frame_bytes` as its chunks. Sets `snapshot`
/// when any of them held a snapshot. Answers the bytes of the frames written.
async fn write_queued(
    stream: &mut Stream,
    frames: &LocalReceiver<Outgoing>,
    first: Outgoing,
    out: &mut Vec<u8>,
    (max_frame_bytes, snapshot): (usize, &mut bool),
) -> std::io::Result<usize> {
    out.clear();
    let mut bytes = 0;
    // A lone frame is written from its own buffer; frames that coalesce are copied into
    // `out` (in order: a held frame goes in before anything after it).
    let mut held: Option<Outgoing> = None;
    let mut next = Some(first);
    while let Some(outgoing) = next.take() {
        *snapshot |= outgoing.snapshot;
        bytes += outgoing.frame.payload().len();
        let chunked = outgoing.frame.payload().len() > max_frame_bytes;
        if out.is_empty() && held.is_none() && !chunked {
            held = Some(outgoing);
        } else {
            if let Some(held) = held.take() {
                out.extend_from_slice(held.frame.with_prefix());
            }
            if chunked {
                append_chunks(stream, out, outgoing.frame.payload(), max_frame_bytes).await?;
            } else {
                out.extend_from_slice(outgoing.frame.with_prefix());
            }
        }
        let pending = out.len() + held.as_ref().map_or(0, |h| h.frame.with_prefix().len());
        if pending < COALESCE_BYTES {
            if let Some(Some(queued)) = futures_lite::future::poll_once(frames.recv()).await {
                next = Some(queued);
            }
        }
    }
    match held {
        Some(held) => write_out(stream, held.frame.with_prefix()).await?,
        None => write_out(stream, out).await?,
    }
    Ok(bytes)
}

/// Appends the chunks of `frame` to `out`, writing `out` whenever it holds about
/// `COALESCE_BYTES` (a large frame is never copied whole into `out`).
async fn append_chunks(
    stream: &mut Stream,
    out: &mut Vec<u8>,
    frame: &[u8],
    max_frame_bytes: usize,
) -> std::io::Result<()> {
    let chunks = match chunk_frame(frame, max_frame_bytes, MAX_CHUNKED_PEER_FRAME_BYTES) {
        Ok(chunks) => chunks,
        Err(error) => {
            // `send` checked the bound and config validation keeps the limit far above
            // a chunk's own bytes: not expected.
            tracing::error!(%error, "a frame over the limit was not sent");
            return Ok(());
        }
    };
    for chunk in chunks {
        let _ = append_frame(out, &chunk);
        if out.len() >= COALESCE_BYTES {
            write_out(stream, out).await?;
            out.clear();
        }
    }
    Ok(())
}

async fn write_out(stream: &mut Stream, out: &[u8]) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    stream.write_all(out).await?;
    stream.flush().await
}

/// What opens a connection of this node's links for one group.
struct Opener {
    node_id: u32,
    group: u32,
    /// The cluster's secret the hello proves (without it the receiver refuses the hello
    /// but over mutual TLS).
    secret: Option<PeerSecret>,
    /// With a CA: connections are mutual TLS (the peer's certificate must name it).
    tls: Option<Arc<NodeTls>>,
}

impl Opener {
    /// A connection to `peer`'s peer port at `address` that has read the receiver's
    /// challenge and sent this node's hello, proven over it, as its first frame.
    async fn connect(&self, address: &str, peer: u64) -> std::io::Result<Stream> {
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let mut stream = match self.tls.as_ref().and_then(|tls| tls.peer_connector()) {
            Some(config) => {
                let name = ServerName::try_from(node_name(peer)).map_err(invalid)?;
                let handshake = futures_rustls::TlsConnector::from(config).connect(name, tcp);
                let timeout = async {
                    glommio::timer::sleep(PEER_HELLO_TIMEOUT).await;
                    Err(invalid("no TLS handshake in time"))
                };
                let tls = futures_lite::future::or(handshake, timeout)
                    .await
                    .map_err(|e| invalid(format!("TLS with node {peer}: {e}")))?;
                Stream::Client(Box::new(tls))
            }
            None => Stream::Plain(tcp),
        };
        let nonce = futures_lite::future::or(read_challenge(&mut stream, peer), async {
            glommio::timer::sleep(PEER_HELLO_TIMEOUT).await;
            Err(invalid(format!(
                "no challenge from node {peer} within {PEER_HELLO_TIMEOUT:?}"
            )))
        })
        .await?;
        let hello = match &self.secret {
            Some(secret) => {
                let receiver = u32::try_from(peer).unwrap_or(u32::MAX);
                let proof = secret.hello_proof(&nonce, receiver, self.node_id, self.group);
                PeerHello::proven(self.node_id, self.group, proof)
            }
            None => PeerHello::over_tls(self.node_id, self.group),
        };
        let mut frame = Vec::new();
        append_frame(&mut frame, &encode_peer_hello(&hello)).map_err(invalid)?;
        stream.write_all(&frame).await?;
        stream.flush().await?;
        Ok(stream)
    }
}

fn invalid(error: impl ToString) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())
}

/// The nonce of the challenge `peer` opens the connection with (its one frame).
async fn read_challenge(stream: &mut Stream, peer: u64) -> std::io::Result<Vec<u8>> {
    let mut decoder = FrameDecoder::new(MAX_PEER_CHALLENGE_FRAME_BYTES);
    let mut buffer = [0u8; 256];
    let frame = loop {
        if let Some(frame) = decoder.next_frame().map_err(invalid)? {
            break frame;
        }
        let count = stream.read(&mut buffer).await?;
        if count == 0 {
            return Err(invalid(format!("node {peer} closed before its challenge")));
        }
        decoder.push(&buffer[..count]);
    };
    let challenge = decode_peer_frame(&frame)
        .map_err(invalid)?
        .challenge
        .ok_or_else(|| invalid(format!("node {peer}'s first frame is not a challenge")))?;
    if u64::from(challenge.node_id) != peer {
        return Err(invalid(format!(
            "the peer port of node {peer} answers as node {}",
            challenge.node_id
        )));
    }
    Ok(challenge.nonce)
}

fn sorted_once(mut peers: Vec<u64>) -> Vec<u64> {
    peers.sort_unstable();
    peers.dedup();
    peers
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Pacer;

    /// A paced link waits until what it wrote fits its rate; an unpaced one does not.
    #[test]
    fn a_paced_link_keeps_to_its_rate() {
        let run = crate::runtime::run_on_executor("pacer-test", 512 * 1024, || async {
            let mut pacer = Pacer::default();
            let started = Instant::now();
            for _ in 0..4 {
                pacer.wait(256 << 10, 10 << 20).await;
            }
            // 1 MiB at 10 MiB/s: at least 100 ms (less a first write's own share).
            assert!(started.elapsed() >= Duration::from_millis(90));
            let unpaced = Instant::now();
            pacer.wait(64 << 20, 0).await;
            assert!(unpaced.elapsed() < Duration::from_millis(50));
        });
        run.expect("the executor ran");
    }
}
