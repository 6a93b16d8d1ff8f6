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
