//! The replica group as a deterministic state machine: a raft-rs `RawNode` over a log
//! store, driven by inputs and returning effects.
//!
//! `Replica` decides everything (the Ready cycle's order, the outbox of acknowledgements
//! waiting for durability, group commit, apply and waiters, snapshots and retention cuts,
//! leader balancing and hand-over, ingress checks and back-pressure) and does nothing:
//! no socket, file, clock, executor, channel or unseeded randomness. The glommio driver
//! (`shard/`) and the simulator (`sim/`) carry out its effects and feed back completions,
//! so the simulator tests the code production runs. A test guards that this module
//! names none of those (see `tests` below).

pub mod apply;
pub mod bounds;
pub mod catch_up;
pub mod events;
pub mod leadership;
pub mod log_store;
pub mod low_space;
pub mod membership;
pub mod prng;
pub mod proposals;
pub mod raft_logging;
pub mod ready_cycle;
pub mod replica;
pub mod retention;
pub mod topic_mirror;

pub use events::{
    Defects, DiskWork, Effect, FlushId, Input, OpId, Proposal, RequestId, ShardError,
};
pub use log_store::{LogStore, SegmentSummary, StorageFailure};
pub use membership::{Membership, MembershipChange};
pub use prng::Prng;
pub use replica::{
    preferred_leader_of, Replica, ReplicaConfig, ReplicaCounts, ReplicaError, RetentionPolicy,
};

#[cfg(test)]
mod tests_membership;
#[cfg(test)]
mod tests_proposals;
#[cfg(test)]
mod tests_replica;

#[cfg(test)]
mod tests {
    /// The guard rail: the replica decides, it never does I/O or reads a clock. A file of
    /// this module that names any of these is a design error (the simulator could no
    /// longer run it deterministically).
    #[test]
    fn the_replica_names_no_io_clock_or_executor() {
        let forbidden = [
            "glommio",
            "Instant",
            "SystemTime",
            "std::fs",
            "thread_rng",
            "spawn",
            "std::net",
            "sleep(",
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/replication");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("mod.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for word in forbidden {
                assert!(
                    !text.contains(word),
                    "{} names {word:?}: the replica must stay free of I/O and clocks",
                    path.display()
                );
            }
            checked += 1;
        }
        assert!(checked >= 8, "the guard read the replica's files");
    }
}
