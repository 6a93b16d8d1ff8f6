//! Load generators and HdrHistogram output used by `keel bench`.
pub mod bench_stream;
pub mod catchup_bench;
pub mod consume_bench;
pub mod failover_bench;
pub mod hgrm;
pub mod local_cluster;
pub mod log_bench;
pub mod pacer;
pub mod plot;
pub mod produce_bench;
pub mod quorum_floor;
pub mod quorum_floor_roles;
pub mod rtt_bench;
