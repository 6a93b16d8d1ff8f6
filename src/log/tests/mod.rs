//! Tests of the CommitLog against real files in temporary directories.

mod boundaries;
mod full_disk;
mod model;
mod raft_cluster;
mod read_budget;
mod recovery;
mod round_trip;
mod sim_store_agrees;
mod storage_contract;
mod support;
mod truncation;
