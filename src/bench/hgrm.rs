//! Latency histograms: recording in microseconds and writing HdrHistogram's `.hgrm` text
//! format (the "percentile distribution" that HdrHistogram's plotter reads).

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;

/// Highest latency the histograms track: one minute, in microseconds.
pub const MAX_TRACKED_MICROS: u64 = 60_000_000;

/// A new histogram of microseconds with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3)
        .unwrap_or_else(|_| unreachable!("static bounds are valid"))
}

/// Records `micros`, saturating at the tracked maximum.
pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.clamp(1, MAX_TRACKED_MICROS));
}

/// Renders the percentile distribution in HdrHistogram's `.hgrm` format, values in
/// milliseconds (the unit HdrHistogram's plotter expects by default).
pub fn render_hgrm(histogram: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for step in histogram.iter_quantiles(5) {
        let value_ms = step.value_iterated_to() as f64 / 1000.0;
        let quantile = step.quantile_iterated_to();
        if quantile < 1.0 {
            let _ = writeln!(
                out,
                "{value_ms:>12.3} {quantile:>2.12} {:>10} {:>14.2}",
                step.count_since_last_iteration(),
                1.0 / (1.0 - quantile)
            );
        } else {
            let _ = writeln!(
                out,
                "{value_ms:>12.3} {quantile:>2.12} {:>10}",
                step.count_since_last_iteration()
            );
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        histogram.mean() / 1000.0,
        histogram.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        histogram.max() as f64 / 1000.0,
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        histogram.distinct_values()
    );
    out
}

/// Writes the `.hgrm` file.
pub fn write_hgrm(histogram: &Histogram<u64>, path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    std::fs::write(path, render_hgrm(histogram))
}

/// One line with the usual percentiles, in microseconds.
pub fn summary_line(histogram: &Histogram<u64>) -> String {
    format!(
        "p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us ({} samples)",
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        histogram.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_has_the_header_rows_and_footer_hdrhistogram_tools_expect() {
        let mut histogram = new_histogram();
        for micros in 1..=10_000 {
            record(&mut histogram, micros);
        }
        let text = render_hgrm(&histogram);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(
            text.contains("#[Max     =       10.007, Total count    =        10000]"),
            "{text}"
        );
        let last_row = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap();
        assert!(last_row.contains("1.000000000000"), "{last_row}");
        let median: f64 = text
            .lines()
            .find(|l| l.contains(" 0.500000000000 "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((median - 5.0).abs() < 0.01, "median {median} ms");
    }
}
