//! The simulator's share of `cargo test`: 2,000 seeds with no violation, the proof that
//! each reverted fix is found within that budget, and bit-for-bit replay.
//!
//! Seeds run on two threads (each run is single-threaded and deterministic). A failure
//! prints the seed, the one-line replay command and the trace around the violation.

use std::time::Instant;

use crate::sim::{replay_command, run_seed, with_defect, RunOptions, RunReport};

/// Seeds every `cargo test` runs.
pub const CI_SEEDS: u64 = 2000;

fn explain(report: &RunReport, options: &RunOptions) -> String {
    let mut text = String::new();
    for line in report.trace.iter().rev().take(60).rev() {
        text.push_str(line);
        text.push('\n');
    }
    if let Some(v) = &report.violation {
        text.push_str(&format!(
            "seed {:#x}: VIOLATION {}: {}\nreproduce: {}\n",
            report.seed,
            v.property,
            v.detail,
            replay_command(report.seed, options)
        ));
    }
    text
}

/// Runs seeds `range` on two threads; the first failing report, if any.
fn run_range(seeds: std::ops::Range<u64>, options: RunOptions) -> Option<RunReport> {
    let middle = seeds.start + (seeds.end - seeds.start) / 2;
    let halves = [seeds.start..middle, middle..seeds.end];
    std::thread::scope(|scope| {
        let handles: Vec<_> = halves
            .into_iter()
            .map(|half| {
                scope.spawn(move || {
                    half.map(|seed| run_seed(seed, options))
                        .find(|report| report.violation.is_some())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .min_by_key(|r| r.seed)
    })
}

#[test]
fn two_thousand_seeds_find_no_violation() {
    let options = RunOptions::default();
    let started = Instant::now();
    if let Some(report) = run_range(0..CI_SEEDS, options) {
        panic!("{}", explain(&report, &options));
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "simulator: {CI_SEEDS} seeds in {seconds:.1} s ({:.0} seeds/s)",
        CI_SEEDS as f64 / seconds
    );
}

/// The first seed that finds the defect, searching in order (one thread: the count of
/// seeds it took is the proof's measure).
fn first_finding(defect: &str) -> (u64, String) {
    let options = with_defect(RunOptions::default(), defect).expect("known defect");
    for seed in 0..CI_SEEDS {
        let report = run_seed(seed, options);
        if let Some(v) = report.violation {
            return (seed, format!("{}: {}", v.property, v.detail));
        }
    }
    panic!("no seed of {CI_SEEDS} finds the {defect} defect: the fault profile is too weak");
}

macro_rules! proves {
    ($name:ident, $defect:literal) => {
        #[test]
        fn $name() {
            let (seed, violation) = first_finding($defect);
            eprintln!(
                "defect {}: found by seed {seed:#x} after {} seeds: {violation}",
                $defect,
                seed + 1
            );
        }
    };
}

proves!(
    finds_entries_marked_stable_before_the_log_has_them,
    "advance-before-append"
);
proves!(
    finds_an_acknowledged_append_that_failed,
    "ack-failed-append"
);
proves!(finds_peer_frames_over_the_limit, "unsplit-frames");
proves!(
    finds_a_lost_snapshot_never_sent_again,
    "never-report-snapshot"
);
proves!(
    finds_a_failed_leader_that_keeps_leading,
    "failed-leader-keeps-leading"
);

#[test]
fn a_seed_replays_bit_for_bit() {
    for seed in [1u64, 7, 42, 0x1f2e, 0xdead_beef] {
        let first = run_seed(seed, RunOptions::default());
        let second = run_seed(seed, RunOptions::default());
        assert_eq!(
            (first.trace_hash, first.stats.events),
            (second.trace_hash, second.stats.events),
            "seed {seed:#x} ran differently twice"
        );
        assert!(first.stats.events > 100, "seed {seed:#x} ran");
    }
}
