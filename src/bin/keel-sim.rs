//! `keel-sim`: runs the deterministic simulator over many seeds, or replays one.
//!
//! ```sh
//! keel-sim --seeds 10000                 # seeds 0..10000, summary and coverage
//! keel-sim --seeds 1000 --first 5000     # seeds 5000..6000
//! keel-sim --seed 0x2a --trace full      # one seed, its whole trace
//! keel-sim --seeds 2000 --defect advance-before-append   # prove a checker finds it
//! ```

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use keel::sim::profile::FAULT_KINDS;
use keel::sim::{replay_command, run_seed, with_defect, RunOptions, RunReport};

/// Runs the deterministic cluster simulator.
#[derive(Parser, Debug)]
#[command(name = "keel-sim", version, about)]
struct Args {
    /// How many seeds to run (from --first).
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0, value_parser = parse_seed)]
    first: u64,
    /// Run this one seed (decimal or 0x hex) and print its trace.
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Trace to print for a single seed: full or short.
    #[arg(long, default_value = "short")]
    trace: String,
    /// Switch a known defect back on (advance-before-append, ack-failed-append,
    /// unsplit-frames, never-report-snapshot, failed-leader-keeps-leading).
    #[arg(long)]
    defect: Vec<String>,
    /// Keep going after a failing seed (count them all).
    #[arg(long)]
    keep_going: bool,
}

fn parse_seed(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).map_err(|e| e.to_string()),
        None => text
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut options = RunOptions::default();
    for name in &args.defect {
        match with_defect(options, name) {
            Some(o) => options = o,
            None => {
                eprintln!("keel-sim: unknown defect {name:?}");
                return ExitCode::from(2);
            }
        }
    }
    // Release builds abort on a panic: name the seed first.
    let hook_options = options;
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let seed = keel::sim::CURRENT_SEED.with(|s| s.get());
        eprintln!("seed {seed:#x}: VIOLATION panic: {info}");
        eprintln!("reproduce: {}", replay_command(seed, &hook_options));
        default_hook(info);
    }));
    if let Some(seed) = args.seed {
        options.full_trace = args.trace == "full";
        let report = run_seed(seed, options);
        for line in &report.trace {
            println!("{line}");
        }
        println!("profile: {}", report.profile);
        return finish_one(&report, &options);
    }
    run_many(&args, options)
}

fn finish_one(report: &RunReport, options: &RunOptions) -> ExitCode {
    println!(
        "seed {:#x}: {} events, {:.1} s simulated, {} batches acknowledged, trace hash {:#018x}",
        report.seed,
        report.stats.events,
        report.stats.simulated_ns as f64 / 1e9,
        report.stats.acked,
        report.trace_hash
    );
    match &report.violation {
        None => ExitCode::SUCCESS,
        Some(v) => {
            println!("VIOLATION {}: {}", v.property, v.detail);
            println!("reproduce: {}", replay_command(report.seed, options));
            ExitCode::FAILURE
        }
    }
}

fn run_many(args: &Args, options: RunOptions) -> ExitCode {
    let started = Instant::now();
    let (mut events, mut simulated_ns, mut failures) = (0u64, 0u64, 0u64);
    let mut seeds_with_fault = [0u64; 8];
    // Seeds that saw a catch-up read, a snapshot install, a parked Ready, topic churn, a
    // data group, a replica short of space, a frame sent in chunks, several proposals
    // in one replica input, an acknowledged consumer group commit, a group commit refused
    // for a stale generation.
    let mut seeds_with = [0u64; 13];
    let mut first_failure = None;
    let (mut ran, mut max_outbox) = (0, 0);
    for seed in args.first..args.first + args.seeds {
        let report = run_seed(seed, options);
        ran += 1;
        events += report.stats.events;
        simulated_ns += report.stats.simulated_ns;
        for (kind, count) in report.stats.faults.iter().enumerate() {
            seeds_with_fault[kind] += u64::from(*count > 0);
        }
        let stats = &report.stats;
        max_outbox = max_outbox.max(stats.max_outbox);
        for (slot, count) in [
            stats.catch_up_reads,
            stats.snapshot_installs,
            stats.parked_readies,
            stats.topic_churn,
            stats.data_group,
            stats.space_short,
            stats.chunked_frames,
            stats.gathered_inputs,
            stats.group_commits,
            stats.stale_group_commits,
            stats.moves_done,
            stats.moves_rolled_back,
            stats.vote_moves,
        ]
        .into_iter()
        .enumerate()
        {
            seeds_with[slot] += u64::from(count > 0);
        }
        if let Some(v) = &report.violation {
            failures += 1;
            println!("seed {seed:#x}: VIOLATION {}: {}", v.property, v.detail);
            println!("reproduce: {}", replay_command(seed, &options));
            first_failure.get_or_insert(seed);
            if !args.keep_going {
                break;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let coverage: Vec<String> = FAULT_KINDS
        .iter()
        .map(|k| {
            format!(
                "{k:?} {:.0}%",
                100.0 * seeds_with_fault[*k as usize] as f64 / ran as f64
            )
        })
        .collect();
    println!("seeds with each fault: {}", coverage.join(", "));
    let share = |n: u64| 100.0 * n as f64 / ran as f64;
    println!(
        "seeds with: catch-up reads {:.0}%, snapshot installs {:.0}%, Readies parked for disk work {:.0}%, topic churn {:.0}%, a data group {:.0}%, a replica short of space {:.0}%, frames sent in chunks {:.1}%, gathered proposals {:.0}%, acknowledged group commits {:.0}%, stale group commits refused {:.0}%, replicas moved {:.0}%, moves rolled back {:.0}%, votes moved {:.0}%; largest outbox {max_outbox} Readies",
        share(seeds_with[0]),
        share(seeds_with[1]),
        share(seeds_with[2]),
        share(seeds_with[3]),
        share(seeds_with[4]),
        share(seeds_with[5]),
        share(seeds_with[6]),
        share(seeds_with[7]),
        share(seeds_with[8]),
        share(seeds_with[9]),
        share(seeds_with[10]),
        share(seeds_with[11]),
        share(seeds_with[12])
    );
    println!(
        "{ran} seeds, {failures} failed{}; {:.0} events/seed; {:.1} seeds/s; {:.0} simulated s per real s",
        first_failure.map_or(String::new(), |s| format!(" (first: {s:#x}, after {} seeds)", s - args.first + 1)),
        events as f64 / ran as f64,
        ran as f64 / seconds,
        simulated_ns as f64 / 1e9 / seconds
    );
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
