//! Observability: a node's metrics in the Prometheus text format.
//!
//! ```text
//! shard threads ── ShardMetrics / GroupMetrics (atomics) ──▶ NodeMetrics' families
//!                                                                  │
//! GET /metrics ◀── endpoint threads (never a shard's executor) ◀───┘
//! ```
//!
//! `families` names every metric once; `shard_metrics` holds each shard's handles and
//! counts on the shard's own thread (an atomic add, no lookup on the hot path); the
//! driver writes its groups' state every `METRICS_PUBLISH_TICKS`; `endpoint` serves
//! scrapes. Owns no decision of the broker and never blocks a shard: a shard only adds to
//! or sets atomics (a histogram takes an uncontended lock).

pub mod endpoint;
pub mod families;
pub mod shard_metrics;

pub use families::NodeMetrics;
pub use shard_metrics::{GroupMetrics, GroupSnapshot, ShardMetrics};
