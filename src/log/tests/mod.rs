//! Tests of the CommitLog against real files in temporary directories.

mod boundaries;
mod full_disk;
mod model;
mod raft_cluster;
mod recovery;
mod round_trip;
mod storage_contract;
mod support;
mod truncation;
