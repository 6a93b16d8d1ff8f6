//! `keel bench plot` and the pictures every benchmark writes beside its histograms:
//! percentile plots (SVG) of `.hgrm` files and the fail-over timeline.
//!
//! Owns the command's arguments and file names; the drawing is `keel::bench::plot`'s.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use hdrhistogram::Histogram;
use keel::bench::failover_bench::{FailoverReport, TIMELINE_BEFORE, TIMELINE_BIN};
use keel::bench::hgrm;
use keel::bench::plot::{self, KillTimeline, Series};

#[derive(Args)]
pub struct PlotArgs {
    /// Histograms to draw, each `PATH.hgrm` (named by its file name) or `NAME=PATH.hgrm`
    /// (HdrHistogram percentile distributions: what every `keel bench` writes).
    #[arg(required = true)]
    inputs: Vec<String>,
    /// The SVG file to write.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// The plot's title [default: the series' names].
    #[arg(long)]
    title: Option<String>,
}

/// (name, path) of an input: `NAME=PATH` or a path named by its file stem.
fn named_input(input: &str) -> (String, PathBuf) {
    match input.split_once('=') {
        Some((name, path)) if !name.is_empty() && !Path::new(input).exists() => {
            (name.to_string(), PathBuf::from(path))
        }
        _ => {
            let path = PathBuf::from(input);
            let name = path
                .file_stem()
                .map_or_else(|| input.to_string(), |s| s.to_string_lossy().to_string());
            (name, path)
        }
    }
}

/// `keel bench plot`: overlays the histograms' percentile curves in one SVG.
pub fn plot_command(args: PlotArgs) -> ExitCode {
    let mut series = Vec::with_capacity(args.inputs.len());
    for input in &args.inputs {
        let (label, path) = named_input(input);
        match plot::read_hgrm(&path) {
            Ok(points) => series.push(Series { label, points }),
            Err(error) => return crate::fail("bench plot", error),
        }
    }
    let names: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
    let title = args
        .title
        .unwrap_or_else(|| format!("latency by percentile: {}", names.join(", ")));
    if let Err(error) = plot::percentile_plot(&series, &title, &args.output) {
        return crate::fail("bench plot", error);
    }
    println!("plot: {}", args.output.display());
    ExitCode::SUCCESS
}

/// Writes `histogram` to `path` (.hgrm) and its percentile plot beside it (.svg) titled
/// with the run's parameters; prints both paths.
pub fn write_histogram(histogram: &Histogram<u64>, path: &Path, title: &str) -> Result<(), String> {
    hgrm::write_hgrm(histogram, path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let svg = plot::svg_beside(path);
    let series = [Series {
        label: format!("{} samples", histogram.len()),
        points: plot::points_of(histogram),
    }];
    plot::percentile_plot(&series, title, &svg).map_err(|e| e.to_string())?;
    println!("histogram: {} (plot: {})", path.display(), svg.display());
    Ok(())
}

/// Writes the fail-over run's timeline (acknowledged writes per 10 ms around each kill).
pub fn write_failover_timeline(report: &FailoverReport, path: &Path) -> Result<(), String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let kills: Vec<KillTimeline> = report
        .timelines
        .iter()
        .zip(&report.times)
        .enumerate()
        .map(|(i, (counts, time))| KillTimeline {
            label: format!("kill {}: {} ms", i + 1, time.as_millis()),
            counts: counts.clone(),
        })
        .collect();
    let title = format!(
        "keel bench failover: 3 nodes, acks=quorum, {} leader kills (SIGKILL)",
        kills.len()
    );
    plot::timeline_plot(
        &kills,
        (
            TIMELINE_BEFORE.as_millis() as u64,
            TIMELINE_BIN.as_millis() as u64,
        ),
        &title,
        path,
    )
    .map_err(|e| e.to_string())?;
    println!("timeline: {}", path.display());
    Ok(())
}
