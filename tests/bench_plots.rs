//! Benchmarks draw their histograms: `keel bench log` writes a percentile plot (SVG)
//! beside its `.hgrm`, and `keel bench plot` overlays several histograms with a legend.
//! The SVG files are parsed as XML and must name what they draw.

mod support;

use std::path::Path;
use std::process::Command;

/// The texts of an SVG file, once it parses as well-formed XML with an `svg` root.
fn svg_texts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let document = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
    assert_eq!(document.root_element().tag_name().name(), "svg");
    document
        .descendants()
        .filter(|node| node.has_tag_name("text"))
        .filter_map(|node| node.text().map(|t| t.trim().to_string()))
        .collect()
}

fn keel(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(support::keel_binary())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn a_benchmark_plots_its_histogram_and_the_plot_command_overlays_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut histograms = Vec::new();
    for (name, rate) in [("slow", "200"), ("fast", "400")] {
        let hgrm = root.join(format!("{name}.hgrm"));
        let out = keel(
            &[
                "bench",
                "log",
                "--dir",
                root.join(format!("log-{name}")).to_str().unwrap(),
                "--throughput-bytes",
                "0",
                "--rate",
                rate,
                "--duration",
                "1s",
                "--hgrm",
                hgrm.to_str().unwrap(),
            ],
            root,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let svg = hgrm.with_extension("svg");
        assert!(
            stdout.contains(&format!("plot: {}", svg.display())),
            "{stdout}"
        );
        let texts = svg_texts(&svg);
        assert!(
            texts
                .iter()
                .any(|t| t.contains("keel bench log") && t.contains(&format!("at {rate}/s"))),
            "the run's parameters in the title: {texts:?}"
        );
        assert!(
            texts.iter().any(|t| t == "99%"),
            "a percentile axis: {texts:?}"
        );
        histograms.push(hgrm);
    }
    let compared = root.join("cmp.svg");
    let out = keel(
        &[
            "bench",
            "plot",
            &format!("before={}", histograms[0].display()),
            histograms[1].to_str().unwrap(),
            "-o",
            compared.to_str().unwrap(),
        ],
        root,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let texts = svg_texts(&compared);
    for series in ["before", "fast"] {
        assert!(
            texts.iter().any(|t| t == series),
            "the legend names {series}: {texts:?}"
        );
    }
    // Not a histogram: refused with the file's name, nothing written.
    std::fs::write(root.join("notes.hgrm"), "no percentiles here\n").unwrap();
    let out = keel(&["bench", "plot", "notes.hgrm", "-o", "bad.svg"], root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("notes.hgrm") && stderr.contains("percentile"),
        "{stderr}"
    );
    assert!(!root.join("bad.svg").exists());
}
