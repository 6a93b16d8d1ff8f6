//! The cluster's metadata: which replica groups exist, where each one's replicas run,
//! and which group holds each partition and coordinates each consumer group (DESIGN §2:
//! placement is data, not arithmetic).
//!
//! - `placement`: the answers every other module asks for (`Placement`): a partition's
//!   group, a consumer group's coordinator, a group's replicas, preferred leader and the
//!   shard it runs on at a node. Today it holds the bootstrap placement only (group *i*
//!   on shard *i* of every node of `--peers`); nothing outside this module computes
//!   those answers itself, so a placement recorded in the controller's log can take its
//!   place.
//! - `placer`: where a new group's replicas and preferred leader go, and the moves that
//!   drain a node or even a cluster out (replicas per shard, leaderships per node);
//!   rack-aware. Not used by the running broker yet: placement as data comes next.
//!
//! Pure: no I/O, no clock.

pub mod placement;
pub mod placer;

pub use placement::{GroupId, Placement, PlannedChange, CONTROLLER_GROUP};
