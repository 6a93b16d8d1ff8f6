//! `keel bench quorum-floor` measures three real processes doing a quorum write's
//! unavoidable work (loopback TCP, one O_DIRECT + O_DSYNC page each) and reports their
//! CPU and context switches per request; it leaves neither processes nor files behind,
//! and removes nothing else from the directory it is given.

mod support;

use std::process::Command;

fn result_value(stdout: &str, key: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("result "))
        .unwrap_or_else(|| panic!("no result line in:\n{stdout}"));
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn the_quorum_floor_measures_three_processes_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("floor");
    // The directory given may hold anything: only the benchmark's own part of it goes.
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("keep-me"), b"not the benchmark's").unwrap();
    let output = Command::new(support::keel_binary())
        .args([
            "bench",
            "quorum-floor",
            "--rate",
            "2000",
            "--count",
            "2000",
            "--dir",
        ])
        .arg(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("2000 requests at 2000/s"), "{stdout}");
    assert!(stdout.contains("(2000 samples)"), "{stdout}");
    // Each request costs the three processes a synced write and three socket exchanges:
    // some CPU (2,000 requests take tens of milliseconds at least) and sleeps.
    let cpu = result_value(&stdout, "floor_cpu_us_per_request");
    assert!(cpu > 0.0, "no CPU measured: {stdout}");
    let switches = result_value(&stdout, "floor_ctx_per_request");
    assert!(
        switches >= 1.0,
        "fewer than one sleep per request: {stdout}"
    );
    let p50 = result_value(&stdout, "floor_p50_us");
    assert!(p50 > 0.0, "{stdout}");
    let left: Vec<String> = std::fs::read_dir(&files)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["keep-me".to_string()],
        "the benchmark's files were left behind, or what was there removed"
    );
    // Closed loop with requests in flight: the roles take them in batches.
    let output = Command::new(support::keel_binary())
        .args(["bench", "quorum-floor", "--rate", "0", "--window", "16"])
        .args(["--count", "4000", "--dir"])
        .arg(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("closed loop, 16 in flight"), "{stdout}");
    assert!(stdout.contains("(4000 samples)"), "{stdout}");
    assert!(
        result_value(&stdout, "floor_requests_per_s") > 0.0,
        "{stdout}"
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let leftover = Command::new("pgrep")
        .args([
            "-f",
            &format!("quorum-floor --listen .* --file {}", files.display()),
        ])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "role processes still running: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}
