//! The deterministic simulator: a whole replica group in one thread, from one seed.
//!
//! ```text
//! seed ─▶ Profile (cluster size, sizes, fault rates) ─▶ World
//!   World: event queue (ns) ─▶ Replica<SimLogStore> of every node (the production code)
//!          network (delays, resets, partitions, loss), disks (latency, spikes, failures,
//!          crashes that keep only what was durable), clients (idempotent producers, a
//!          consumer group client)
//!   after every step: S1 one leader per term, S2 one entry per committed index,
//!                     S3 commits held durably by a majority, S4 no early acknowledgement
//!   safety phase ─▶ faults off ─▶ liveness: one leader, every client answered, every
//!   replica at the same applied state; then P1 (acknowledged batches stored), P4, P5,
//!   S10 (consumer groups: fencing from the answers, acknowledged commits at the end)
//! ```
//!
//! A run is a function of its seed: no threads, no clocks, no hash-ordered iteration.
//! A failing seed prints a one-line replay command and the trace around the violation.
//! Known defects come back behind `Defects` switches to prove the checkers find them.
//! Tests also run scripted worlds (`scenarios`: a profile and faults chosen by hand, run
//! with `run_world`), and replay the seeds that once failed (`regressions`).

pub mod checkers;
pub mod faults;
pub mod liveness;
pub mod network;
pub mod profile;
pub mod sim_store;
pub mod trace;
pub mod workload;
pub mod world;

use crate::replication::events::Defects;
use crate::sim::checkers::Violation;
use crate::sim::world::{Stats, World};

/// How to run a seed.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Defects switched back on.
    pub defects: Defects,
    /// Split peer frames below the limit (off: the H10 defect).
    pub split_frames: bool,
    /// Keep the whole trace.
    pub full_trace: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            defects: Defects::default(),
            split_frames: true,
            full_trace: false,
        }
    }
}

/// What one run did.
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The first broken property, if any (a panic counts as one).
    pub violation: Option<Violation>,
    /// Counts.
    pub stats: Stats,
    /// Hash of the whole trace.
    pub trace_hash: u64,
    /// The last trace lines (all of them with `full_trace`).
    pub trace: Vec<String>,
    /// The profile, for the report.
    pub profile: String,
}

thread_local! {
    /// The seed running on this thread, for a panic hook (release builds abort on panic).
    pub static CURRENT_SEED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Runs one seed. A panic inside the replica (a broken assertion) is a violation.
pub fn run_seed(seed: u64, options: RunOptions) -> RunReport {
    run_world(
        World::new(seed, options.defects, options.split_frames),
        options,
    )
}

/// Runs a world set up by hand (its defects and frame splitting are the world's own;
/// `options` only says how much trace to keep).
pub fn run_world(mut world: World, options: RunOptions) -> RunReport {
    let seed = world.seed;
    CURRENT_SEED.with(|current| current.set(seed));
    world.trace.full = options.full_trace;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run()));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".to_string());
        world.violation = Some(Violation {
            property: "panic",
            detail: message,
        });
    }
    let trace = if options.full_trace {
        world.trace.all.clone()
    } else {
        world.trace.tail().map(str::to_string).collect()
    };
    RunReport {
        seed,
        violation: world.violation.take(),
        stats: world.stats.clone(),
        trace_hash: world.trace.hash(),
        trace,
        profile: format!("{:?}", world.profile),
    }
}

/// The command that replays `seed` bit for bit.
pub fn replay_command(seed: u64, options: &RunOptions) -> String {
    let mut command =
        format!("cargo run --profile sim --bin keel-sim -- --seed {seed:#x} --trace full");
    for (on, name) in defect_names(options) {
        if on {
            command.push_str(&format!(" --defect {name}"));
        }
    }
    command
}

/// Each defect switch with its command-line name.
pub fn defect_names(options: &RunOptions) -> [(bool, &'static str); 5] {
    let d = options.defects;
    [
        (d.advance_before_append, "advance-before-append"),
        (d.ack_failed_append, "ack-failed-append"),
        (!options.split_frames, "unsplit-frames"),
        (d.never_report_snapshot, "never-report-snapshot"),
        (d.failed_leader_keeps_leading, "failed-leader-keeps-leading"),
    ]
}

/// Options with the defect named `name` switched on.
pub fn with_defect(mut options: RunOptions, name: &str) -> Option<RunOptions> {
    match name {
        "advance-before-append" => options.defects.advance_before_append = true,
        "ack-failed-append" => options.defects.ack_failed_append = true,
        "unsplit-frames" => options.split_frames = false,
        "never-report-snapshot" => options.defects.never_report_snapshot = true,
        "failed-leader-keeps-leading" => options.defects.failed_leader_keeps_leading = true,
        _ => return None,
    }
    Some(options)
}

#[cfg(test)]
mod ci;
#[cfg(test)]
mod regressions;
#[cfg(test)]
mod scenarios;
