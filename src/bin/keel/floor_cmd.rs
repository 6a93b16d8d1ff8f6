//! `keel bench quorum-floor`: the command's arguments and report; the measurement is
//! `keel::bench::quorum_floor`'s.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use keel::bench::hgrm;
use keel::bench::quorum_floor::{run_quorum_floor, Load};
use keel::bench::quorum_floor_roles::{serve_follower, serve_leader, MAX_BATCH_REQUESTS};

#[derive(Args)]
pub struct QuorumFloorArgs {
    /// Requests per second, open loop (the cluster benchmark's cost run uses 2,000); 0:
    /// closed loop with --window requests in flight (the most the floor can do).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Requests in flight when --rate is 0 (at most 256: a leader's largest batch).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH_REQUESTS as u64))]
    window: u64,
    /// Requests in the measured window.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Where the three processes keep their files (removed afterwards).
    #[arg(long, default_value = "keel-quorum-floor")]
    dir: PathBuf,
    /// A role process: serve on this address (started by the benchmark itself).
    #[arg(long, hide = true)]
    listen: Option<String>,
    /// A role process: its file.
    #[arg(long, hide = true)]
    file: Option<PathBuf>,
    /// The leader role: its two followers' addresses.
    #[arg(long, hide = true, value_delimiter = ',')]
    followers: Vec<SocketAddr>,
}

/// Runs the benchmark, or one of its role processes.
pub fn quorum_floor(args: QuorumFloorArgs) -> ExitCode {
    if let (Some(listen), Some(file)) = (&args.listen, &args.file) {
        let served = TcpListener::bind(listen).and_then(|listener| match args.followers[..] {
            [first, second] => serve_leader(listener, [first, second], file),
            [] => serve_follower(listener, file),
            _ => Err(std::io::Error::other("a leader takes two followers")),
        });
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            // The benchmark ended and closed (or its other roles were stopped first).
            Err(error) if peer_gone(&error) => ExitCode::SUCCESS,
            Err(error) => crate::fail("bench quorum-floor role", error),
        };
    }
    let executable = match std::env::current_exe() {
        Ok(path) => path,
        Err(error) => return crate::fail("bench quorum-floor", error),
    };
    let load = match args.rate {
        0 => Load::Window(args.window as usize),
        rate => Load::Rate(rate),
    };
    let report = match run_quorum_floor(&executable, &args.dir, load, args.count.max(1)) {
        Ok(report) => report,
        Err(error) => return crate::fail("bench quorum-floor", error),
    };
    let how = match load {
        Load::Rate(rate) => format!("at {rate}/s"),
        Load::Window(window) => format!("closed loop, {window} in flight"),
    };
    println!(
        "keel bench quorum-floor: 3 processes on loopback, blocking calls, 1 KiB requests, \
         one O_DIRECT+O_DSYNC write per batch on each process, {} requests {how}",
        report.requests
    );
    println!("latency: {}", hgrm::summary_line(&report.latency));
    let [leader, first, second] = report.role_cpu_us_per_request;
    println!("CPU per request: leader {leader:.0} us, followers {first:.0} and {second:.0} us");
    println!(
        "result floor_cpu_us_per_request={:.0} floor_ctx_per_request={:.2} floor_p50_us={} \
         floor_requests_per_s={:.0}",
        report.cpu_us_per_request,
        report.switches_per_request,
        report.latency.value_at_quantile(0.5),
        report.requests_per_s
    );
    ExitCode::SUCCESS
}

/// Whether a role's error is its peer going away (the end of a run).
fn peer_gone(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionReset | BrokenPipe | UnexpectedEof | ConnectionAborted
    )
}
