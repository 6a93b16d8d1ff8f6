//! The `keel` command line: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use keel::bench::hgrm;
use keel::bench::log_bench::{run_log_bench, LogBenchOptions};
use keel::constants::{DEFAULT_MAX_ENTRY_PAYLOAD_BYTES, DEFAULT_SEGMENT_SIZE_BYTES};
use keel::log::check::check_log_directory;
use keel::log::Preallocation;
use keel::runtime::{run_on_executor, DEFAULT_IO_MEMORY_BYTES};
use keel::units::{parse_duration, parse_size};

/// Keel: a Raft-replicated message broker for latency-sensitive producers.
#[derive(Parser)]
#[command(name = "keel", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect CommitLog directories.
    #[command(subcommand)]
    Log(LogCommand),
    /// Measure Keel's speed on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum LogCommand {
    /// Report what opening a log directory would find and do, without changing it.
    ///
    /// Exit status: 0 clean, 1 recovery would repair something (a torn tail, leftovers),
    /// 2 corrupt (the log would refuse to open), 3 unreadable.
    Check {
        /// The log directory (one replica group's CommitLog).
        dir: PathBuf,
        /// Largest entry payload the log was configured with.
        #[arg(long, value_parser = parse_size, default_value_t = u64::from(DEFAULT_MAX_ENTRY_PAYLOAD_BYTES))]
        max_entry_bytes: u64,
        /// Read and check every entry of every segment (opening the log trusts the index
        /// files of sealed segments and scans only the newest one).
        #[arg(long)]
        deep: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// CommitLog append throughput and append-to-durable latency on a real disk.
    ///
    /// Writes to --dir (on the disk to measure) and removes what it wrote. The latency run
    /// is open-loop: each entry's latency counts from its intended send time.
    Log(LogBenchArgs),
}

#[derive(Args)]
struct LogBenchArgs {
    /// Directory on the disk to measure (created; the benchmark's files are removed after).
    #[arg(long, default_value = "keel-bench-data")]
    dir: PathBuf,
    /// Payload to write in the throughput run (0 skips it).
    #[arg(long, value_parser = parse_size, default_value = "2GiB")]
    throughput_bytes: u64,
    /// Entry payload in the throughput run.
    #[arg(long, value_parser = parse_size, default_value = "256KiB")]
    throughput_entry_bytes: u64,
    /// Entries per batch (one flush each) in the throughput run.
    #[arg(long, default_value_t = 16)]
    batch_entries: u32,
    /// Entries per second in the latency run (0 skips it).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the latency run.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Entry payload in the latency run.
    #[arg(long, value_parser = parse_size, default_value = "1KiB")]
    entry_bytes: u64,
    /// How new segments are prepared: adaptive, zero-fill (fastest fdatasync) or fallocate.
    #[arg(long, default_value = "adaptive")]
    preallocation: Preallocation,
    /// Segment file size.
    #[arg(long, value_parser = parse_size, default_value_t = DEFAULT_SEGMENT_SIZE_BYTES)]
    segment_size: u64,
    /// Where to write the latency histogram.
    #[arg(long, default_value = "bench-results/log-latency.hgrm")]
    hgrm: PathBuf,
    /// Registered I/O memory of the executor.
    #[arg(long, value_parser = parse_size, default_value_t = DEFAULT_IO_MEMORY_BYTES as u64)]
    io_memory: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Log(LogCommand::Check {
            dir,
            max_entry_bytes,
            deep,
        }) => {
            let max = u32::try_from(max_entry_bytes).unwrap_or(u32::MAX);
            let (report, verdict) = check_log_directory(&dir, max, deep);
            print!("{report}");
            ExitCode::from(verdict as u8)
        }
        Command::Bench(BenchCommand::Log(args)) => bench_log(args),
    }
}

fn to_u32(value: u64, what: &str) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("{what} {value} is too large"))
}

fn bench_log(args: LogBenchArgs) -> ExitCode {
    let options = match log_bench_options(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("keel bench log: {message}");
            return ExitCode::from(2);
        }
    };
    let io_memory = usize::try_from(args.io_memory).unwrap_or(DEFAULT_IO_MEMORY_BYTES);
    let run_options = options.clone();
    let outcome = run_on_executor("keel-bench-log", io_memory, move || async move {
        run_log_bench(&run_options).await
    });
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(error)) => {
            eprintln!("keel bench log: {error}");
            return ExitCode::from(1);
        }
        Err(error) => {
            eprintln!("keel bench log: {error}");
            return ExitCode::from(1);
        }
    };
    println!(
        "keel bench log (fsync: fdatasync per flush, preallocation: {:?})",
        options.preallocation
    );
    if let Some(throughput) = report.throughput_megabytes_per_second {
        println!(
            "throughput: {throughput:.0} MB/s durable ({} KiB entries, {} per flush, four flushes in flight)",
            options.throughput_entry_bytes / 1024,
            options.throughput_batch_entries
        );
        println!("result throughput_mb_per_s={throughput:.1}");
    }
    if let Some(histogram) = &report.latency {
        println!(
            "append-to-durable, open loop at {}/s of {} B entries for {:?}: {}",
            options.latency_rate_per_second,
            options.latency_entry_bytes,
            options.latency_duration,
            hgrm::summary_line(histogram)
        );
        println!(
            "flushes: {} ({:.2} entries per flush)",
            report.latency_flushes,
            histogram.len() as f64 / report.latency_flushes.max(1) as f64
        );
        if let Some(flush_time) = &report.flush_time {
            println!(
                "flush time (write + fdatasync): {}",
                hgrm::summary_line(flush_time)
            );
        }
        if let Some(lateness) = &report.generator_lateness {
            println!(
                "generator lateness (timer and scheduling): {}",
                hgrm::summary_line(lateness)
            );
        }
        println!(
            "result latency_p50_us={} latency_p99_us={} latency_p999_us={} latency_max_us={}",
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max()
        );
        if let Err(error) = hgrm::write_hgrm(histogram, &options.hgrm_path) {
            eprintln!(
                "keel bench log: cannot write {}: {error}",
                options.hgrm_path.display()
            );
            return ExitCode::from(1);
        }
        println!("histogram: {}", options.hgrm_path.display());
    }
    ExitCode::SUCCESS
}

fn log_bench_options(args: &LogBenchArgs) -> Result<LogBenchOptions, String> {
    if args.rate > 1_000_000 {
        return Err(format!(
            "--rate {} is above the supported 1000000 per second",
            args.rate
        ));
    }
    Ok(LogBenchOptions {
        dir: args.dir.clone(),
        throughput_total_bytes: args.throughput_bytes,
        throughput_entry_bytes: to_u32(args.throughput_entry_bytes, "--throughput-entry-bytes")?
            .max(1),
        throughput_batch_entries: args.batch_entries.max(1),
        latency_rate_per_second: args.rate,
        latency_duration: args.duration,
        latency_entry_bytes: to_u32(args.entry_bytes, "--entry-bytes")?,
        preallocation: args.preallocation,
        segment_size_bytes: args.segment_size,
        hgrm_path: args.hgrm.clone(),
    })
}
