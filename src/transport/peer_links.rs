//! Outgoing links from one shard to the same shard of every peer node.

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
use crate::protocol::peer_codec::encode_peer_frame;

/// Frames queued per peer before new ones are dropped.
pub const PEER_QUEUE_FRAMES: usize = 256;

/// Queued frames are written together up to about this many bytes.
const COALESCE_BYTES: usize = 1 << 20;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What was lost when a frame could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The frame held a snapshot.
    pub snapshot: bool,
}

/// The links of one shard's replica group.
pub struct PeerLinks {
    node_id: u32,
    group: u32,
    links: BTreeMap<u64, LocalSender<Vec<u8>>>,
    unreachable: Rc<RefCell<Vec<u64>>>,
}

impl PeerLinks {
    /// Starts a link task for every other node of the cluster.
    pub fn start(config: &NodeConfig, group: u32) -> PeerLinks {
        let unreachable = Rc::new(RefCell::new(Vec::new()));
        let mut links = BTreeMap::new();
        for peer in config.peers.iter().filter(|p| p.node_id != config.node_id) {
            let Some(address) = config.peer_shard_address(peer.node_id, group) else {
                continue;
            };
            let (sender, receiver) = local_channel::new_bounded(PEER_QUEUE_FRAMES);
            let node = u64::from(peer.node_id);
            glommio::spawn_local(link_task(address, node, receiver, unreachable.clone())).detach();
            links.insert(node, sender);
        }
        PeerLinks {
            node_id: config.node_id,
            group,
            links,
            unreachable,
        }
    }

    /// Sends one peer's messages in one frame. `Some` when the frame was dropped (the
    /// peer's queue is full, or the peer is unknown): the replica reports it to Raft.
    pub fn send(&self, peer: u64, messages: Vec<Message>) -> Option<Dropped> {
        let snapshot = messages
            .iter()
            .any(|m| m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot);
        let Some(link) = self.links.get(&peer) else {
            tracing::warn!(peer, "message for an unknown peer dropped");
            return Some(Dropped { snapshot });
        };
        let frame = encode_peer_frame(self.node_id, self.group, &messages);
        if link.try_send(frame).is_err() {
            return Some(Dropped { snapshot });
        }
        None
    }

    /// Peers whose frames could not be delivered since the last call.
    pub fn take_unreachable(&self) -> Vec<u64> {
        let mut peers = std::mem::take(&mut *self.unreachable.borrow_mut());
        peers.sort_unstable();
        peers.dedup();
        peers
    }
}

async fn link_task(
    address: String,
    peer: u64,
    frames: LocalReceiver<Vec<u8>>,
    unreachable: Rc<RefCell<Vec<u64>>>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut stream = match TcpStream::connect(address.as_str()).await {
            Ok(stream) => stream,
            Err(_) => {
                unreachable.borrow_mut().push(peer);
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
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
