//! A full disk: the flush that cannot write fails with a clear error, the log stops
//! reporting durability, and what was durable before comes back after a restart.
//!
//! Needs root (it mounts a small tmpfs, which accepts O_DIRECT and returns ENOSPC when
//! full); without root it says so and passes without checking anything.

use std::path::Path;
use std::process::Command;

use super::support::{append_range, assert_entries, entry, run, small_config};
use crate::log::{CommitLog, LogConfig, LogError, Preallocation};

/// Unmounts the test's tmpfs even when an assertion fails.
struct Mount<'a>(&'a Path);

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| {
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn a_full_disk_fails_the_flush_and_poisons_the_log_without_losing_durable_entries() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mount_point = root.path().join("small");
    std::fs::create_dir(&mount_point).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount_point)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    let _mount = Mount(&mount_point);
    let dir = mount_point.join("log");
    let config = LogConfig {
        preallocation: Preallocation::Fallocate,
        ..small_config()
    };
    run(move || async move {
        let log = CommitLog::open(&dir, config.clone()).await.unwrap();
        append_range(&log, 1, 100, 1).await;
        let durable = log.durable_index();
        // Keep writing until the disk is full.
        let mut index = durable + 1;
        let error = loop {
            let batch: Vec<_> = (index..index + 50).map(|i| entry(i, 1)).collect();
            if let Err(error) = log.append(&batch) {
                break error;
            }
            index += 50;
            if let Err(error) = log.flush().await {
                break error;
            }
            assert!(index < 100_000, "a 1 MiB file system never filled up");
        };
        match &error {
            LogError::Io { source, .. } => {
                assert_eq!(
                    source.raw_os_error(),
                    Some(28),
                    "ENOSPC expected, got {error}"
                )
            }
            other => panic!("expected an I/O error, got {other}"),
        }
        let durable = log.durable_index();
        assert!(matches!(log.flush().await, Err(LogError::Poisoned)));
        assert!(matches!(
            log.append(&[entry(index, 1)]),
            Err(LogError::Poisoned)
        ));
        drop(log);
        // After a restart everything that was reported durable is there.
        let log = CommitLog::open(&dir, config).await.unwrap();
        assert!(log.last_index() >= durable);
        let expected: Vec<(u64, u64)> = (1..=durable).map(|i| (i, 1)).collect();
        log.truncate_suffix(durable + 1).await.unwrap();
        assert_entries(&log, &expected).await;
    });
}
