//! Peer transport: the Raft messages of one replica group between nodes, on the nodes'
//! peer ports (shard i of a node listens for peers on `peer_port + i`, never on its
//! client port).
//!
//! ```text
//! shard i, node A                                  shard i, node B (peer port + i)
//!   PeerLinks ──hello, frames──▶ TCP ──▶ peer_listener ─ ingress::admit ─▶ ShardCore
//!   (frame_split: each frame below B's frame limit;    (chunks joined back into their
//!    a snapshot still above it: chunks)                 frame; hello, from/to/type)
//! ```
//!
//! Per peer node and group there is one outgoing connection, fed by a bounded queue: the
//! messages of one Ready pass for that peer share frames (batched AppendEntries,
//! heartbeats coalesced), split below the receiver's frame limit (`frame_split`), written
//! back to back without waiting for answers (pipelined; Raft's own `max_inflight_msgs`
//! bounds them); a dead or slow peer only fills its own queue: when full, frames for it
//! are dropped and it is reported unreachable to Raft, which retries. Connections are
//! made again with exponential backoff; each opens with this node's hello. A message that
//! cannot be cut and is larger than a frame (a snapshot of a large applied state) goes as
//! consecutive chunk frames, each within the limit, and the receiving connection joins
//! them back into the frame (`chunks`, bounded by `MAX_CHUNKED_PEER_FRAME_BYTES`). The
//! receiving side (`peer_listener`) admits a connection only after a valid hello and
//! checks every frame and message against it (`ingress`).

pub mod chunks;
pub mod frame_split;
pub mod ingress;
pub mod opening;
pub mod peer_links;
pub mod peer_listener;

pub use peer_links::PeerLinks;

#[cfg(test)]
mod tests_chunked;
