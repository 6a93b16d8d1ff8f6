//! Outgoing links from one shard to the same shard of every peer node, on their peer
//! ports: each connection opens with this node's hello, then carries frames of messages,
//! each below the receiver's frame limit (`frame_split`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use raft::eraftpb::Message;

use crate::config::NodeConfig;
use crate::protocol::frame::append_frame;
use crate::protocol::peer_codec::{encode_peer_frame, encode_peer_hello, PeerHello};
use crate::transport::frame_split::split_into_frames;

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

/// The links of one shard's replica group.
pub struct PeerLinks {
    node_id: u32,
    group: u32,
    /// The receivers' frame limit (every node runs with the same `max_frame_bytes`).
    max_frame_bytes: usize,
    links: BTreeMap<u64, LocalSender<Vec<u8>>>,
    unreachable: Rc<RefCell<Vec<u64>>>,
}

impl PeerLinks {
    /// Starts a link task for every other node of the cluster.
    pub fn start(config: &NodeConfig, group: u32) -> PeerLinks {
        let unreachable = Rc::new(RefCell::new(Vec::new()));
        let mut links = BTreeMap::new();
        let hello = Rc::new(encode_peer_hello(&PeerHello::new(config.node_id, group)));
        for peer in config.peers.iter().filter(|p| p.node_id != config.node_id) {
            let Some(address) = config.peer_link_address(peer.node_id, group) else {
                continue;
            };
            let (sender, receiver) = local_channel::new_bounded(PEER_QUEUE_FRAMES);
            let node = u64::from(peer.node_id);
            let link = Link {
                address,
                peer: node,
                hello: hello.clone(),
                unreachable: unreachable.clone(),
            };
            glommio::spawn_local(link_task(link, receiver)).detach();
            links.insert(node, sender);
        }
        PeerLinks {
            node_id: config.node_id,
            group,
            max_frame_bytes: config.max_frame_bytes as usize,
            links,
            unreachable,
        }
    }

    /// Sends one peer's messages, in order, in frames each below the frame limit. `Some`
    /// when any frame was dropped (the peer's queue is full, the peer is unknown, or a
    /// message cannot fit a frame): the replica reports it to Raft.
    pub fn send(&self, peer: u64, messages: Vec<Message>) -> Option<Dropped> {
        let snapshot = messages
            .iter()
            .any(|m| m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot);
        let Some(link) = self.links.get(&peer) else {
            tracing::warn!(peer, "message for an unknown peer dropped");
            return Some(Dropped { snapshot });
        };
        let mut dropped = None;
        for messages in split_into_frames(messages, self.max_frame_bytes) {
            let frame = encode_peer_frame(self.node_id, self.group, &messages);
            if frame.len() > self.max_frame_bytes {
                // Only a message that cannot be cut: a snapshot above the limit.
                tracing::error!(
                    peer,
                    bytes = frame.len(),
                    limit = self.max_frame_bytes,
                    kind = ?messages.first().map(Message::get_msg_type),
                    "a message too large for any frame was not sent"
                );
                dropped = Some(Dropped { snapshot });
                continue;
            }
            if link.try_send(frame).is_err() {
                dropped = Some(Dropped { snapshot });
            }
        }
        dropped
    }

    /// Peers whose frames could not be delivered since the last call.
    pub fn take_unreachable(&self) -> Vec<u64> {
        let mut peers = std::mem::take(&mut *self.unreachable.borrow_mut());
        peers.sort_unstable();
        peers.dedup();
        peers
    }
}

/// One outgoing link: where it goes and what opens each connection.
struct Link {
    /// The peer's peer port for this group.
    address: String,
    peer: u64,
    /// This node's hello for this group, encoded.
    hello: Rc<Vec<u8>>,
    unreachable: Rc<RefCell<Vec<u64>>>,
}

/// Connects (again, with backoff, after any failure), sends the hello, then the queued
/// frames.
async fn link_task(link: Link, frames: LocalReceiver<Vec<u8>>) {
    let Link {
        address,
        peer,
        hello,
        unreachable,
    } = link;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut stream = match connect_with_hello(&address, &hello).await {
            Ok(stream) => stream,
            Err(_) => {
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
            let Some(payload) = frames.recv().await else {
                return;
            };
            // Frames queued while the last write ran leave together, in one write.
            out.clear();
            let _ = append_frame(&mut out, &payload);
            while out.len() < COALESCE_BYTES {
                match futures_lite::future::poll_once(frames.recv()).await {
                    Some(Some(payload)) => {
                        let _ = append_frame(&mut out, &payload);
                    }
                    _ => break,
                }
            }
            let written = async {
                stream.write_all(&out).await?;
                stream.flush().await
            }
            .await;
            if written.is_err() {
                unreachable.borrow_mut().push(peer);
                break;
            }
        }
    }
}

/// A connection to `address` that has sent `hello` as its first frame.
async fn connect_with_hello(address: &str, hello: &[u8]) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut frame = Vec::with_capacity(hello.len() + 4);
    append_frame(&mut frame, hello)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(stream)
}
