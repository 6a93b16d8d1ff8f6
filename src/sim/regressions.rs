//! Seeds that once failed, kept as named tests (each note says what it found).

use crate::sim::{run_seed, RunOptions};

fn passes(seed: u64) {
    let report = run_seed(seed, RunOptions::default());
    if let Some(v) = report.violation {
        panic!("seed {seed:#x}: {}: {}", v.property, v.detail);
    }
}

/// A flush result that waited behind a snapshot install was older than the install:
/// the durable index must come from the store, not from the stale result (A2).
#[test]
fn seed_0x3_a_flush_result_older_than_a_snapshot_install() {
    passes(0x3);
}

/// A planned stop crashed the node in the middle of carrying out its effects: a flush
/// started after the crash belonged to the new life (the world now crashes after the step).
#[test]
fn seed_0x9c_a_planned_stop_between_effects() {
    passes(0x9c);
}

/// A follower's commit index ran ahead of a parked Ready's entries: the checker reads the
/// store only once the Ready is appended.
#[test]
fn seed_0xd_commit_ahead_of_a_parked_ready() {
    passes(0xd);
}

/// Batches larger than half the unflushed bound were refused forever as overloaded.
#[test]
fn seed_0x5_batches_fit_the_unflushed_bound() {
    passes(0x5);
}

/// raft-rs 0.7's `batch_append` merged a follower's entries (from 38) into an empty
/// MsgAppend already queued for it (index 63) without fixing the index: the follower
/// acknowledged entries up to 89 holding 63 (A3 fired). `batch_append` is off now.
#[test]
fn seed_0x23e_an_append_merged_into_an_empty_probe() {
    passes(0x23e);
}

/// A new leader served a partition's high watermark before applying what its
/// predecessor committed: a consumer saw it go back (S6). Leaders now serve reads once
/// an entry of their own term is applied.
#[test]
fn seed_0x2_a_new_leader_reads_only_after_applying_its_predecessors_commits() {
    passes(0x2);
}
