//! Peer transport: the Raft messages of one replica group between nodes.
//!
//! Per peer node and group there is one outgoing connection (to the peer's shard with the
//! same index), fed by a bounded queue: every message of one Ready pass for that peer goes
//! out as one frame (batched AppendEntries, heartbeats coalesced), frames are written back
//! to back without waiting for answers (pipelined; Raft's own `max_inflight_msgs` bounds
//! them), and a dead or slow peer only fills its own queue: when full, frames for it are
//! dropped and it is reported unreachable to Raft, which retries. Connections are made
//! again with exponential backoff. Incoming peer frames arrive on the shard's client port
//! (told apart by their file identifier) and are stepped into the group.

pub mod frame_split;
pub mod ingress;
pub mod peer_links;

pub use peer_links::PeerLinks;
