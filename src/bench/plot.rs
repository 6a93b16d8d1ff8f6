//! Pictures of benchmark results as SVG files (plotters' SVG backend): percentile plots
//! of latency histograms (HdrHistogram's standard view: latency against a log-scaled
//! 1/(1-percentile) axis, so the tail gets room) and fail-over timelines.
//!
//! Owns drawing and reading `.hgrm` files back. Never measures anything: the benchmarks
//! hand it their histograms and counts.

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// A picture could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// An `.hgrm` file could not be read.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The drawing failed (the SVG file could not be written).
    #[error("cannot draw {path}: {reason}")]
    Draw {
        /// The SVG file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One line of a percentile plot: (1/(1-percentile), latency in ms) points, increasing.
#[derive(Clone, Debug)]
pub struct Series {
    /// Its name in the legend.
    pub label: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

/// Largest 1/(1-percentile) drawn: the 99.9999th percentile (points beyond are drawn
/// there). The 100th percentile, which has no x, is drawn at the last percentile's x, so
/// the maximum shows as the curve's last step.
const MAX_INVERSE: f64 = 1e6;

/// (1/(1-p), value) of (percentile, value) rows: the 100th percentile at the x before it.
fn to_points(rows: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (percentile, value) in rows {
        let x = if percentile < 1.0 {
            (1.0 / (1.0 - percentile)).min(MAX_INVERSE)
        } else {
            points.last().map_or(1.0, |p| p.0)
        };
        points.push((x, value));
    }
    points
}

/// Picture size in pixels.
const SIZE: (u32, u32) = (1000, 600);

/// A histogram of microseconds as plot points (ms against 1/(1-percentile)).
pub fn points_of(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    to_points(histogram.iter_quantiles(5).map(|step| {
        (
            step.quantile_iterated_to(),
            step.value_iterated_to() as f64 / 1000.0,
        )
    }))
}

/// The points of an `.hgrm` file (HdrHistogram's percentile distribution, values in ms:
/// what `hgrm::write_hgrm` writes and HdrHistogram's own tools read).
pub fn read_hgrm(path: &Path) -> Result<Vec<(f64, f64)>, PlotError> {
    let failed = |reason: String| PlotError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let mut rows = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(value), Some(percentile)) = (fields.first(), fields.get(1)) else {
            continue;
        };
        let (Ok(value), Ok(percentile)) = (value.parse::<f64>(), percentile.parse::<f64>()) else {
            continue; // the header, the footer
        };
        if !(0.0..=1.0).contains(&percentile) || !value.is_finite() || value < 0.0 {
            return Err(failed(format!("not a percentile distribution: {line:?}")));
        }
        rows.push((percentile, value));
    }
    if rows.is_empty() {
        return Err(failed(
            "no percentile rows (not an .hgrm file of HdrHistogram's percentile \
             distribution)"
                .into(),
        ));
    }
    Ok(to_points(rows.into_iter()))
}

/// "99.9%" for the x of a decade (1/(1-p) = 10^k); nothing between decades.
fn percentile_label(x: &f64) -> String {
    let decade = x.log10();
    if (decade - decade.round()).abs() > 1e-6 {
        return String::new();
    }
    let nines = decade.round() as i32;
    match nines {
        n if n <= 0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)),
    }
}

fn draw_failed(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |reason| PlotError::Draw {
        path: path.to_path_buf(),
        reason,
    }
}

/// Draws `series` as a percentile plot titled `title` into the SVG file `path`.
pub fn percentile_plot(series: &[Series], title: &str, path: &Path) -> Result<(), PlotError> {
    let failed = draw_failed(path);
    let max_x = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(10.0_f64, f64::max);
    let max_x = 10f64.powf(max_x.log10().ceil()).min(MAX_INVERSE);
    let max_ms = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.001_f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((1.0..max_x).log_scale(), 0.0..max_ms * 1.05)
        .map_err(|e| failed(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&percentile_label)
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    for (i, line) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // A single point (one sample) is drawn as a level line across the plot.
        let points: Vec<(f64, f64)> = match line.points.as_slice() {
            [(_, value)] => vec![(1.0, *value), (max_x, *value)],
            points => points.to_vec(),
        };
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| failed(e.to_string()))?
            .label(line.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    root.present().map_err(|e| failed(e.to_string()))
}

/// The SVG file next to an `.hgrm` file (same name, `.svg`).
pub fn svg_beside(hgrm: &Path) -> PathBuf {
    hgrm.with_extension("svg")
}

/// One kill of a fail-over run: acknowledged writes per bin around it.
#[derive(Clone, Debug)]
pub struct KillTimeline {
    /// Its name in the legend.
    pub label: String,
    /// Acknowledged writes per bin, the first bin starting `before_ms` before the kill.
    pub counts: Vec<u32>,
}

/// Draws fail-over timelines: acknowledged writes per `bin_ms` against the time from the
/// kill, one line per kill, into the SVG file `path`.
pub fn timeline_plot(
    kills: &[KillTimeline],
    (before_ms, bin_ms): (u64, u64),
    title: &str,
    path: &Path,
) -> Result<(), PlotError> {
    let failed = draw_failed(path);
    let bins = kills
        .iter()
        .map(|k| k.counts.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let start = -(before_ms as f64);
    let end = start + (bins as u64 * bin_ms) as f64;
    let top = kills
        .iter()
        .flat_map(|k| k.counts.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(start..end, 0.0..f64::from(top) * 1.1)
        .map_err(|e| failed(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("ms from the leader's kill (SIGKILL at 0)")
        .y_desc(format!("acknowledged writes per {bin_ms} ms"))
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    for (i, kill) in kills.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = kill
            .counts
            .iter()
            .enumerate()
            .map(|(bin, &count)| (start + (bin as u64 * bin_ms) as f64, f64::from(count)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(1)))
            .map_err(|e| failed(e.to_string()))?
            .label(kill.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (0.0, f64::from(top) * 1.1)],
            BLACK.stroke_width(2),
        ))
        .map_err(|e| failed(e.to_string()))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    root.present().map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::hgrm;

    #[test]
    fn the_percentile_axis_is_labelled_at_its_decades_only() {
        assert_eq!(percentile_label(&1.0), "0%");
        assert_eq!(percentile_label(&10.0), "90%");
        assert_eq!(percentile_label(&100.0), "99%");
        assert_eq!(percentile_label(&1000.0), "99.9%");
        assert_eq!(percentile_label(&20.0), "");
    }

    #[test]
    fn an_hgrm_file_reads_back_as_the_histogram_it_was_written_from() {
        let dir = tempfile::tempdir().unwrap();
        let mut histogram = hgrm::new_histogram();
        for micros in 1..=10_000 {
            hgrm::record(&mut histogram, micros);
        }
        let path = dir.path().join("run.hgrm");
        hgrm::write_hgrm(&histogram, &path).unwrap();
        let read = read_hgrm(&path).unwrap();
        let written = points_of(&histogram);
        assert_eq!(read.last().map(|p| p.1), Some(10.007));
        let median = read.iter().find(|p| p.0 >= 2.0).unwrap();
        assert!((median.1 - 5.0).abs() < 0.01, "{median:?}");
        assert!((written.len() as i64 - read.len() as i64).abs() <= 1);
        std::fs::write(dir.path().join("bad.hgrm"), "Value Percentile\n").unwrap();
        assert!(read_hgrm(&dir.path().join("bad.hgrm")).is_err());
    }
}
