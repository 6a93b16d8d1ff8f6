//! The `keel` binary's log commands, run as real processes against real log directories.

use std::path::Path;
use std::process::Command;

use keel::log::segment::list_segments;
use keel::log::{CommitLog, LogConfig, Preallocation};
use raft::eraftpb::Entry;

fn keel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keel"))
}

fn make_log(dir: &Path, entries: u64) {
    let dir = dir.to_path_buf();
    keel::runtime::run_on_executor("cli-test", 512 * 1024, move || async move {
        let config = LogConfig {
            segment_size_bytes: 64 * 1024,
            max_entry_payload_bytes: 8 * 1024,
            preallocation: Preallocation::Fallocate,
            ..LogConfig::default()
        };
        let log = CommitLog::open(&dir, config).await.expect("open");
        let batch: Vec<Entry> = (1..=entries)
            .map(|index| Entry {
                index,
                term: 1,
                data: vec![index as u8; 300].into(),
                ..Default::default()
            })
            .collect();
        log.append(&batch).expect("append");
        log.flush().await.expect("flush");
        log.close().await.expect("close");
    })
    .expect("executor");
}

#[test]
fn log_check_reports_clean_torn_and_corrupt_logs_with_distinct_exit_codes() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("group-0");
    make_log(&dir, 500);

    let clean = keel().args(["log", "check"]).arg(&dir).output().unwrap();
    let text = String::from_utf8_lossy(&clean.stdout);
    assert_eq!(clean.status.code(), Some(0), "{text}");
    assert!(
        text.contains("last index 500") && text.contains("clean"),
        "{text}"
    );

    // Tear the last entry of the last segment.
    let (_, last) = list_segments(&dir).unwrap().pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(end as u64 - 100)
        .unwrap();
    let torn = keel().args(["log", "check"]).arg(&dir).output().unwrap();
    let text = String::from_utf8_lossy(&torn.stdout);
    assert_eq!(torn.status.code(), Some(1), "{text}");
    assert!(
        text.contains("would cut the tail") && text.contains("last index 499"),
        "{text}"
    );

    // Flip a bit in the first segment: damage in the middle.
    let (_, first) = list_segments(&dir).unwrap().remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();
    // Opening trusts the sealed segment's index file; a deep check reads every entry.
    let shallow = keel().args(["log", "check"]).arg(&dir).output().unwrap();
    let text = String::from_utf8_lossy(&shallow.stdout);
    assert_eq!(shallow.status.code(), Some(1), "only the torn tail: {text}");
    let corrupt = keel()
        .args(["log", "check", "--deep"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&corrupt.stdout);
    assert_eq!(corrupt.status.code(), Some(2), "{text}");
    assert!(
        text.contains("CORRUPT") && text.contains(&first.display().to_string()),
        "{text}"
    );
}

#[test]
fn log_check_of_a_missing_directory_says_so() {
    let output = keel()
        .args(["log", "check", "/nonexistent/keel/log"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stdout).contains("not a directory"));
}

#[test]
fn bench_log_runs_end_to_end_and_writes_a_histogram() {
    let root = tempfile::tempdir().unwrap();
    let hgrm = root.path().join("out/latency.hgrm");
    let output = keel()
        .args([
            "bench",
            "log",
            "--throughput-bytes",
            "8MiB",
            "--rate",
            "500",
            "--duration",
            "1s",
        ])
        .args(["--segment-size", "4MiB", "--io-memory", "512KiB"])
        .arg("--dir")
        .arg(root.path().join("data"))
        .arg("--hgrm")
        .arg(&hgrm)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("result throughput_mb_per_s="), "{text}");
    assert!(
        text.contains("(500 samples)"),
        "every intended send is counted: {text}"
    );
    let histogram = std::fs::read_to_string(&hgrm).unwrap();
    assert!(
        histogram.contains("Total count    =          500"),
        "{histogram}"
    );
    assert!(
        !root.path().join("data/latency").exists(),
        "benchmark data is removed"
    );
}

#[test]
fn bad_arguments_are_explained() {
    let output = keel()
        .args(["bench", "log", "--duration", "10"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs a unit"));
    let help = keel().args(["log", "check", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit status"));
}
