//! A full disk: the flush that cannot write fails with a clear error, the log stops
//! reporting durability, and what was durable before comes back after a restart.
//!
//! Needs root (it mounts a small tmpfs, which accepts O_DIRECT and returns ENOSPC when
//! full); without root it says so and passes without checking anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::{append_range, assert_entries, entry, run, small_config};
use crate::log::{CommitLog, LogConfig, LogError, Preallocation};

/// A tmpfs mounted under a temporary directory, unmounted when dropped (even when an
/// assertion fails).
struct SmallDisk {
    _root: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size`; `None` (and a note) without root.
    fn mount(size: &str) -> Option<SmallDisk> {
        if !is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("small");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
        Some(SmallDisk { _root: root, path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Small segments, reserved with fallocate (tmpfs refuses it when full).
fn fallocate_config() -> LogConfig {
    LogConfig {
        preallocation: Preallocation::Fallocate,
        ..small_config()
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
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let (dir, config) = (disk.path.join("log"), fallocate_config());
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

/// Fills the file system holding `dir` with a file, until ENOSPC.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![7u8; 4096];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    path
}

/// A node whose disk filled up must start again: the log opens for reads although its
/// active segment cannot be extended, and takes writes once space is free. (Before, the
/// open failed with `fallocate: No space left on device`.)
#[test]
fn a_log_opens_on_a_full_disk_and_writes_once_space_is_free() {
    let Some(disk) = SmallDisk::mount("2m") else {
        return;
    };
    let (dir, config) = (disk.path.join("log"), fallocate_config());
    let filler_dir = disk.path.clone();
    run(move || async move {
        let log = CommitLog::open(&dir, config.clone()).await.unwrap();
        append_range(&log, 1, 20, 1).await;
        let layout = log.segment_layout();
        let last = layout.last().expect("an active segment");
        let (active, data_end) = (last.path.clone(), last.bytes);
        log.close().await.unwrap();
        // The active segment as a segment just created looks (not extended yet).
        let data = std::fs::metadata(&active).unwrap().len();
        let keep = data_end.div_ceil(4096) * 4096;
        assert!(keep < data, "the segment is preallocated ({data} bytes)");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&active)
            .unwrap()
            .set_len(keep)
            .unwrap();
        let filler = fill(&filler_dir);
        let log = CommitLog::open(&dir, config.clone())
            .await
            .expect("a log opens on a full disk");
        let expected: Vec<(u64, u64)> = (1..=20).map(|i| (i, 1)).collect();
        assert_entries(&log, &expected).await;
        std::fs::remove_file(&filler).unwrap();
        append_range(&log, 21, 40, 1).await;
        let expected: Vec<(u64, u64)> = (1..=40).map(|i| (i, 1)).collect();
        assert_entries(&log, &expected).await;
    });
}

/// A log poisoned by a full disk comes back in place once space is free: `reopen` finds
/// what a restart would, and writes go on.
#[test]
fn a_poisoned_log_reopens_in_place_once_space_is_free() {
    let Some(disk) = SmallDisk::mount("1m") else {
        return;
    };
    let (dir, config) = (disk.path.join("log"), fallocate_config());
    let filler_dir = disk.path.clone();
    run(move || async move {
        let log = CommitLog::open(&dir, config.clone()).await.unwrap();
        append_range(&log, 1, 10, 1).await;
        let filler = fill(&filler_dir);
        let mut index = 11;
        loop {
            let batch: Vec<_> = (index..index + 50).map(|i| entry(i, 1)).collect();
            if log.append(&batch).is_err() || log.flush().await.is_err() {
                break;
            }
            index += 50;
            assert!(index < 100_000, "the disk never filled up");
        }
        let durable = log.durable_index();
        assert!(matches!(log.flush().await, Err(LogError::Poisoned)));
        std::fs::remove_file(&filler).unwrap();
        log.reopen().await.expect("reopen once space is free");
        assert!(log.last_index() >= durable, "nothing durable was lost");
        let last = log.last_index();
        log.append(&[entry(last + 1, 1)]).expect("appends go on");
        assert_eq!(log.flush().await.expect("flushes go on"), last + 1);
        let expected: Vec<(u64, u64)> = (1..=last + 1).map(|i| (i, 1)).collect();
        assert_entries(&log, &expected).await;
    });
}
