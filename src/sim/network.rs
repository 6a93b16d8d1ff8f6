//! The simulated network between replicas: per directed path a delay, a connection
//! generation (a reset loses every frame in flight), partitions and clogging; in
//! datagram mode independent loss, duplication and reordering.
//!
//! Frames are what the driver's `PeerLinks` sends: the messages for one peer split below
//! the frame limit by the same function (`transport::frame_split`). A frame still over
//! the limit (a snapshot of a large state) is encoded, cut into chunks and joined back by
//! the same pure code as on a real connection (`transport::chunks`): each chunk is checked
//! against the limit (S8), the joined bytes must decode into the same messages, and the
//! frame is delivered as a unit or lost as a unit, as the faults decide (the chunks of a
//! frame are consecutive on one connection). One larger than
//! `MAX_CHUNKED_PEER_FRAME_BYTES` is dropped at the sender, as `PeerLinks` does. Without
//! splitting (the H10 defect) nothing is chunked either: a frame over the limit would
//! make the receiver drop the connection, and the checker counts it (S8).

use std::collections::BTreeMap;

use raft::eraftpb::{Message, MessageType};

use crate::constants::MAX_CHUNKED_PEER_FRAME_BYTES;
use crate::protocol::peer_codec::{decode_peer_frame, encode_peer_frame};
use crate::replication::prng::Prng;
use crate::sim::profile::{LinkMode, Profile};
use crate::transport::chunks::{chunk_frame, ChunkAssembler, ChunkError};
use crate::transport::frame_split::{
    encoded_size_estimate, split_into_frames, PEER_FRAME_FIXED_BYTES,
};

/// PRNG domain of the network.
const NETWORK_DOMAIN: u64 = 20;

/// First reconnect delay after a reset, ns (as `PeerLinks`).
const FIRST_BACKOFF_NS: u64 = 10_000_000;

/// One directed path.
#[derive(Clone, Debug, Default)]
pub struct Path {
    /// Connection generation: deliveries of an older one are lost.
    pub epoch: u64,
    /// FIFO: no delivery before this time.
    pub fifo_until: u64,
    /// Cut by a partition.
    pub blocked: bool,
    /// Holds everything until then.
    pub clogged_until: u64,
    /// Reconnecting until then (frames are dropped and reported).
    pub down_until: u64,
}

/// A frame on its way.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// When it arrives, ns.
    pub at: u64,
    /// Sender node.
    pub from: u64,
    /// Receiver node.
    pub to: u64,
    /// Connection generation it was sent on.
    pub epoch: u64,
    /// Its messages.
    pub messages: Vec<Message>,
}

/// What a send did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Frames on their way.
    pub deliveries: Vec<Delivery>,
    /// Frames dropped at the sender (connection down): the replica is told.
    pub dropped: Option<bool>,
    /// Frames (or chunks) over the receiver's limit: a violation (S8).
    pub oversized: usize,
    /// Frames over the limit sent as chunks.
    pub chunked: usize,
    /// A chunked frame whose chunks did not join back into its messages (S8).
    pub broken_chunks: Option<String>,
}

/// How a frame estimated over the limit travels.
enum Carried {
    /// It fits after all (the estimate is an upper bound): one frame.
    Whole(Vec<Message>),
    /// Cut into chunks and joined back into these messages.
    Chunked(Vec<Message>),
    /// Larger than a chunked frame may be: not sent.
    OverBound,
}

/// The network.
pub struct Network {
    paths: BTreeMap<(u64, u64), Path>,
    rng: Prng,
    mode: LinkMode,
    min_delay_ns: u64,
    mean_delay_ns: u64,
    drop_per_mille: u64,
    duplicate_per_mille: u64,
    max_frame_bytes: u64,
}

impl Network {
    /// A network as the profile describes.
    pub fn new(seed: u64, profile: &Profile) -> Network {
        Network {
            paths: BTreeMap::new(),
            rng: Prng::derive(seed, NETWORK_DOMAIN, 0),
            mode: profile.link_mode,
            min_delay_ns: profile.min_delay_ns,
            mean_delay_ns: profile.mean_delay_ns,
            drop_per_mille: profile.drop_per_mille,
            duplicate_per_mille: profile.duplicate_per_mille,
            max_frame_bytes: profile.max_frame_bytes,
        }
    }

    /// The path from `from` to `to`.
    pub fn path(&mut self, from: u64, to: u64) -> &mut Path {
        self.paths.entry((from, to)).or_default()
    }

    /// Whether a delivery still belongs to its connection.
    pub fn current(&mut self, delivery: &Delivery) -> bool {
        self.path(delivery.from, delivery.to).epoch == delivery.epoch
    }

    fn delay(&mut self) -> u64 {
        let unit = self.rng.unit().max(1e-12);
        self.min_delay_ns + (-unit.ln() * self.mean_delay_ns as f64) as u64
    }

    /// Sends one peer's messages; `split` packs them into frames below the limit as the
    /// driver does (off: one frame, as the H10 defect did).
    pub fn send(
        &mut self,
        now: u64,
        from: u64,
        to: u64,
        messages: Vec<Message>,
        split: bool,
    ) -> Sent {
        let mut sent = Sent::default();
        let frames = if split {
            split_into_frames(messages, self.max_frame_bytes as usize)
        } else {
            vec![messages]
        };
        for frame in frames {
            self.send_frame(now, from, to, frame, split, &mut sent);
        }
        sent
    }

    fn send_frame(
        &mut self,
        now: u64,
        from: u64,
        to: u64,
        mut frame: Vec<Message>,
        chunking: bool,
        sent: &mut Sent,
    ) {
        let snapshot = frame
            .iter()
            .any(|m| m.get_msg_type() == MessageType::MsgSnapshot);
        let size: usize =
            PEER_FRAME_FIXED_BYTES + frame.iter().map(encoded_size_estimate).sum::<usize>();
        let path = self.path(from, to).clone();
        if path.down_until > now {
            sent.dropped = Some(sent.dropped.unwrap_or(false) || snapshot);
            return;
        }
        if size as u64 > self.max_frame_bytes && !chunking {
            // The receiver refuses the frame and closes the connection.
            sent.oversized += 1;
            self.reset(now, from, to);
            sent.dropped = Some(sent.dropped.unwrap_or(false) || snapshot);
            return;
        }
        if size as u64 > self.max_frame_bytes {
            frame = match self.carry(from, frame, sent) {
                Carried::Whole(frame) => frame,
                Carried::Chunked(frame) => {
                    sent.chunked += 1;
                    frame
                }
                Carried::OverBound => {
                    sent.dropped = Some(sent.dropped.unwrap_or(false) || snapshot);
                    return;
                }
            };
        }
        if path.blocked {
            return;
        }
        match self.mode {
            LinkMode::Tcp => {
                let at = (now + self.delay())
                    .max(path.fifo_until)
                    .max(path.clogged_until);
                self.path(from, to).fifo_until = at;
                sent.deliveries.push(Delivery {
                    at,
                    from,
                    to,
                    epoch: path.epoch,
                    messages: frame,
                });
            }
            LinkMode::Datagram => {
                if self.rng.chance(self.drop_per_mille, 1000) {
                    return;
                }
                let copies = if self.rng.chance(self.duplicate_per_mille, 1000) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let at = (now + self.delay()).max(path.clogged_until);
                    sent.deliveries.push(Delivery {
                        at,
                        from,
                        to,
                        epoch: path.epoch,
                        messages: frame.clone(),
                    });
                }
            }
        }
    }

    /// Encodes a frame estimated over the limit and, if it is, cuts it into chunks and
    /// joins them as the receiving connection does: a chunk over the limit counts in
    /// `oversized`, a join that fails or changes the messages in `broken_chunks`.
    fn carry(&self, from: u64, frame: Vec<Message>, sent: &mut Sent) -> Carried {
        let limit = self.max_frame_bytes as usize;
        let bytes = encode_peer_frame(from as u32, 0, &frame);
        if bytes.len() <= limit {
            return Carried::Whole(frame);
        }
        let chunks = match chunk_frame(&bytes, limit, MAX_CHUNKED_PEER_FRAME_BYTES) {
            Ok(chunks) => chunks,
            Err(ChunkError::OverBound { .. }) => return Carried::OverBound,
            Err(error) => {
                sent.broken_chunks = Some(format!("a frame not cut into chunks: {error}"));
                return Carried::OverBound;
            }
        };
        let mut assembler = ChunkAssembler::new(MAX_CHUNKED_PEER_FRAME_BYTES);
        let mut joined = None;
        for chunk in chunks {
            if chunk.len() > limit {
                sent.oversized += 1;
            }
            match assembler.accept(chunk) {
                Ok(Some(whole)) => joined = Some(whole),
                Ok(None) => {}
                Err(error) => sent.broken_chunks = Some(format!("chunks refused: {error}")),
            }
        }
        let decoded = joined.map(|whole| decode_peer_frame(&whole).map(|f| f.messages));
        match decoded {
            Some(Ok(messages)) if messages == frame => {}
            Some(Ok(_)) => sent.broken_chunks = Some("joined chunks changed the messages".into()),
            Some(Err(error)) => sent.broken_chunks = Some(format!("joined chunks: {error}")),
            None => sent.broken_chunks = Some("the chunks never made a whole frame".into()),
        }
        Carried::Chunked(frame)
    }

    /// Resets the connection `from → to`: frames in flight are lost; it reconnects after
    /// a backoff.
    pub fn reset(&mut self, now: u64, from: u64, to: u64) {
        let backoff = FIRST_BACKOFF_NS * self.rng.range(1, 8);
        let path = self.path(from, to);
        path.epoch += 1;
        path.fifo_until = 0;
        path.down_until = now + backoff;
    }

    /// Heals every partition; cut TCP connections are made again (a reset).
    pub fn heal(&mut self, now: u64) {
        let blocked: Vec<(u64, u64)> = self
            .paths
            .iter()
            .filter(|(_, p)| p.blocked)
            .map(|(k, _)| *k)
            .collect();
        for (from, to) in blocked {
            self.path(from, to).blocked = false;
            if self.mode == LinkMode::Tcp {
                self.reset(now, from, to);
            }
        }
    }
}
