//! Crash recovery: torn tails are cut, damage in the middle is refused, interrupted
//! truncations are finished, and `check` reports each case without changing anything.

use std::path::{Path, PathBuf};

use super::support::{append_range, assert_entries, copy_dir, entry, run, small_config};
use crate::log::check::{check_log_directory, CheckVerdict};
use crate::log::entry::{stored_size_bytes, HEADER_SIZE_BYTES};
use crate::log::meta::{MetaFile, TruncationFence};
use crate::log::segment::{list_segments, scan_segment};
use crate::log::{CommitLog, HardStateRecord, LogConfig, LogError};

fn last_segment(dir: &Path) -> PathBuf {
    list_segments(dir).unwrap().pop().unwrap().1
}

/// Offsets of the entries of a segment file.
fn entry_offsets(path: &Path, first_index: u64) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    scan_segment(&bytes, first_index, 0, 1 << 20, None)
        .entries
        .iter()
        .map(|&(index, _, offset)| (index, offset))
        .collect()
}

#[test]
fn a_tail_torn_at_every_byte_of_the_last_entry_is_cut_and_the_rest_survives() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let original = root.path().join("original");
        let log = CommitLog::open(&original, small_config()).await.unwrap();
        append_range(&log, 1, 120, 1).await;
        log.set_hard_state(HardStateRecord {
            term: 1,
            vote: 1,
            commit: 110,
        });
        log.close().await.unwrap();
        let (first_index, segment_path) = list_segments(&original).unwrap().pop().unwrap();
        let offsets = entry_offsets(&segment_path, first_index);
        let &(last_index, last_offset) = offsets.last().unwrap();
        assert_eq!(last_index, 120);
        let payload_length = (entry(120, 1).data.len() + entry(120, 1).context.len()) as u64;
        let size = stored_size_bytes(payload_length as u32);
        let payload_end = last_offset + HEADER_SIZE_BYTES as u64 + payload_length;
        let name = segment_path.file_name().unwrap().to_owned();
        for cut in last_offset..last_offset + size {
            let copy = root.path().join(format!("cut-{cut}"));
            copy_dir(&original, &copy);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(copy.join(&name))
                .unwrap();
            file.set_len(cut).unwrap();
            drop(file);
            let (_, verdict) = check_log_directory(&copy, 1 << 20, false);
            // A cut in the padding after the payload leaves the entry whole.
            let survivor = if cut >= payload_end { 120 } else { 119 };
            let clean = cut == last_offset || cut >= payload_end;
            let expected_verdict = if clean {
                CheckVerdict::Clean
            } else {
                CheckVerdict::WouldRepair
            };
            assert_eq!(
                verdict, expected_verdict,
                "check verdict for a cut at {cut}"
            );
            let log = CommitLog::open(&copy, small_config()).await.unwrap();
            assert_eq!(log.last_index(), survivor, "cut at {cut}");
            let expected: Vec<(u64, u64)> = (1..=survivor).map(|i| (i, 1)).collect();
            assert_entries(&log, &expected).await;
            // The log goes on from the cut: append and reopen.
            append_range(&log, survivor + 1, 121, 2).await;
            log.close().await.unwrap();
            let log = CommitLog::open(&copy, small_config()).await.unwrap();
            assert_eq!((log.last_index(), log.term(121).unwrap()), (121, 2));
            drop(log);
            std::fs::remove_dir_all(&copy).unwrap();
        }
    });
}

#[test]
fn a_flipped_bit_in_a_middle_entry_refuses_to_open_naming_file_and_offset() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("log");
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        append_range(&log, 1, 60, 1).await;
        log.close().await.unwrap();
        let (first_index, path) = list_segments(&dir).unwrap().pop().unwrap();
        let offsets = entry_offsets(&path, first_index);
        let (_, victim_offset) = offsets[offsets.len() / 2];
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[victim_offset as usize + 40] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();

        let (report, verdict) = check_log_directory(&dir, 1 << 20, false);
        assert_eq!(verdict, CheckVerdict::Corrupt, "{report}");
        assert!(report.contains(&path.display().to_string()), "{report}");
        match CommitLog::open(&dir, small_config()).await {
            Err(LogError::Corruption {
                path: damaged,
                offset,
                reason,
            }) => {
                assert_eq!(damaged, path);
                assert_eq!(offset, victim_offset);
                assert!(reason.contains("crc32c"), "{reason}");
            }
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("a damaged log opened"),
        }
        // Nothing was changed by the failed open.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    });
}

#[test]
fn a_damaged_entry_at_or_below_the_commit_index_is_corruption_even_at_the_tail() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("log");
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        append_range(&log, 1, 40, 1).await;
        log.set_hard_state(HardStateRecord {
            term: 1,
            vote: 1,
            commit: 40,
        });
        log.close().await.unwrap();
        let path = last_segment(&dir);
        let first_index = list_segments(&dir).unwrap().pop().unwrap().0;
        let &(_, last_offset) = entry_offsets(&path, first_index).last().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(last_offset + 10).unwrap();
        let error = CommitLog::open(&dir, small_config())
            .await
            .err()
            .expect("must refuse");
        assert!(matches!(error, LogError::Corruption { .. }), "{error}");
    });
}

#[test]
fn a_valid_segment_after_a_torn_one_is_corruption() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("log");
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        append_range(&log, 1, 400, 1).await;
        log.close().await.unwrap();
        let segments = list_segments(&dir).unwrap();
        assert!(segments.len() >= 3);
        let (first_index, path) = &segments[0];
        let &(_, offset) = entry_offsets(path, *first_index).last().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(offset + 5).unwrap();
        let error = CommitLog::open(&dir, small_config())
            .await
            .err()
            .expect("must refuse");
        assert!(matches!(error, LogError::Corruption { .. }), "{error}");
    });
}

#[test]
fn an_interrupted_suffix_truncation_is_finished_at_open() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("log");
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        append_range(&log, 1, 400, 1).await;
        log.close().await.unwrap();
        // Simulate a crash right after the fence was recorded: the fence is in the meta
        // file, nothing else changed.
        let segments = list_segments(&dir).unwrap();
        let (first_index, path) = &segments[1];
        let (cut_index, cut_offset) = entry_offsets(path, *first_index)[7];
        let (mut meta_file, mut meta) = MetaFile::open(&dir).await.unwrap();
        meta.truncation_fence = Some(TruncationFence {
            segment_first_index: *first_index,
            offset: cut_offset,
        });
        meta_file.write(&meta).await.unwrap();
        meta_file.close().await.unwrap();
        let (report, verdict) = check_log_directory(&dir, 1 << 20, false);
        assert_eq!(verdict, CheckVerdict::WouldRepair, "{report}");
        assert!(report.contains("interrupted"), "{report}");

        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        assert_eq!(log.last_index(), cut_index - 1);
        append_range(&log, cut_index, cut_index + 5, 2).await;
        log.close().await.unwrap();
        assert_eq!(
            check_log_directory(&dir, 1 << 20, false).1,
            CheckVerdict::Clean
        );
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        let expected: Vec<(u64, u64)> = (1..=cut_index + 5)
            .map(|i| (i, if i < cut_index { 1 } else { 2 }))
            .collect();
        assert_entries(&log, &expected).await;
    });
}

#[test]
fn garbage_after_the_last_entry_is_erased_so_a_shorter_rewrite_stays_clean() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("log");
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        append_range(&log, 1, 30, 1).await;
        log.close().await.unwrap();
        let path = last_segment(&dir);
        let &(_, last_offset) = entry_offsets(&path, 1).last().unwrap();
        // A torn write: the last entry's header survived, its payload half did not.
        let mut bytes = std::fs::read(&path).unwrap();
        for byte in &mut bytes[last_offset as usize + 40..last_offset as usize + 60] {
            *byte ^= 0xff;
        }
        std::fs::write(&path, &bytes).unwrap();
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        assert_eq!(log.last_index(), 29);
        log.close().await.unwrap();
        assert_eq!(
            check_log_directory(&dir, 1 << 20, false).1,
            CheckVerdict::Clean
        );
    });
}

/// Writes 300 entries into one large segment and returns (dir, segment path, offsets).
async fn one_segment_log(root: &Path, commit: u64) -> (PathBuf, PathBuf, Vec<(u64, u64)>) {
    let dir = root.join("log");
    let config = LogConfig {
        segment_size_bytes: 1024 * 1024,
        ..small_config()
    };
    let log = CommitLog::open(&dir, config).await.unwrap();
    append_range(&log, 1, 300, 1).await;
    log.set_hard_state(HardStateRecord {
        term: 1,
        vote: 1,
        commit,
    });
    log.close().await.unwrap();
    let (first_index, path) = list_segments(&dir).unwrap().pop().unwrap();
    let offsets = entry_offsets(&path, first_index);
    (dir, path, offsets)
}

/// Zeros the 4 KiB block holding the entry at `index` (a write that never landed).
fn zero_block_of(path: &Path, offsets: &[(u64, u64)], index: u64) -> u64 {
    let offset = offsets[(index - 1) as usize].1;
    let block = offset / 4096 * 4096;
    let mut bytes = std::fs::read(path).unwrap();
    bytes[block as usize..block as usize + 4096].fill(0);
    std::fs::write(path, &bytes).unwrap();
    block
}

#[test]
fn a_block_that_never_landed_among_unsynced_writes_is_cut_with_everything_after_it() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let (dir, path, offsets) = one_segment_log(root.path(), 100).await;
        let block = zero_block_of(&path, &offsets, 250);
        // The first entry whose bytes reach into the zeroed block is the first lost.
        let first_lost = offsets.windows(2).find(|pair| pair[1].1 > block).unwrap()[0].0;
        let (report, verdict) = check_log_directory(&dir, 1 << 20, false);
        assert_eq!(verdict, CheckVerdict::WouldRepair, "{report}");
        let config = LogConfig {
            segment_size_bytes: 1024 * 1024,
            ..small_config()
        };
        let log = CommitLog::open(&dir, config.clone()).await.unwrap();
        assert_eq!(
            log.last_index(),
            first_lost - 1,
            "valid entries after the hole go too"
        );
        let expected: Vec<(u64, u64)> = (1..first_lost).map(|i| (i, 1)).collect();
        assert_entries(&log, &expected).await;
        log.close().await.unwrap();
        assert_eq!(
            check_log_directory(&dir, 1 << 20, false).1,
            CheckVerdict::Clean
        );
    });
}

#[test]
fn a_missing_block_at_or_below_the_commit_index_is_corruption() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let (dir, path, offsets) = one_segment_log(root.path(), 280).await;
        zero_block_of(&path, &offsets, 250);
        let config = LogConfig {
            segment_size_bytes: 1024 * 1024,
            ..small_config()
        };
        let error = CommitLog::open(&dir, config)
            .await
            .err()
            .expect("must refuse");
        assert!(matches!(error, LogError::Corruption { .. }), "{error}");
    });
}

#[test]
fn a_torn_write_reaching_into_the_next_segment_drops_that_segment_too() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("log");
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        append_range(&log, 1, 400, 1).await;
        log.close().await.unwrap();
        let segments = list_segments(&dir).unwrap();
        let (first_index, path) = &segments[segments.len() - 2];
        let offsets = entry_offsets(path, *first_index);
        // The last block of the second-to-last segment never landed; the next segment did.
        // (A crash before the flush that sealed it finished: it has no index file yet.)
        crate::log::segment_index::remove(path).unwrap();
        let (index, offset) = offsets[offsets.len() - 1];
        let mut bytes = std::fs::read(path).unwrap();
        let block = (offset / 4096 * 4096) as usize;
        bytes[block..block + 4096].fill(0);
        std::fs::write(path, &bytes).unwrap();
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        assert!(log.last_index() < index);
        assert_eq!(list_segments(&dir).unwrap().len(), segments.len() - 1);
    });
}

#[test]
fn sealed_segments_get_index_files_and_opening_reads_only_the_tail() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("log");
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        append_range(&log, 1, 400, 1).await;
        append_range(&log, 401, 500, 2).await;
        log.close().await.unwrap();
        let segments = list_segments(&dir).unwrap();
        for (position, (_, path)) in segments.iter().enumerate() {
            let has_index = crate::log::segment_index::index_path(path).exists();
            assert_eq!(
                has_index,
                position + 1 < segments.len(),
                "{}",
                path.display()
            );
        }
        // Damage a sealed segment: opening trusts its index file and does not see it...
        let (first_index, sealed) = &segments[0];
        let (victim, offset) = entry_offsets(sealed, *first_index)[5];
        let mut bytes = std::fs::read(sealed).unwrap();
        bytes[offset as usize + 40] ^= 0x20;
        std::fs::write(sealed, &bytes).unwrap();
        let (report, verdict) = check_log_directory(&dir, 1 << 20, false);
        assert_eq!(verdict, CheckVerdict::Clean, "{report}");
        assert!(report.contains("from its index file"), "{report}");
        // ...a deep check does...
        let (report, verdict) = check_log_directory(&dir, 1 << 20, true);
        assert_eq!(verdict, CheckVerdict::Corrupt, "{report}");
        // ...and so does every read of the damaged entry.
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        assert_eq!(log.last_index(), 500);
        assert_eq!(log.term(450).unwrap(), 2);
        match log.read(victim, victim + 1, u64::MAX).await {
            Err(LogError::Corruption {
                path, offset: at, ..
            }) => {
                assert_eq!((&path, at), (sealed, offset));
            }
            other => panic!("expected corruption on read, got {other:?}"),
        }
    });
}

#[test]
fn a_damaged_index_file_is_ignored_and_the_segment_scanned() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("log");
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        append_range(&log, 1, 400, 1).await;
        log.close().await.unwrap();
        let (_, sealed) = list_segments(&dir).unwrap().remove(1);
        let index = crate::log::segment_index::index_path(&sealed);
        let mut bytes = std::fs::read(&index).unwrap();
        bytes[20] ^= 0x01;
        std::fs::write(&index, &bytes).unwrap();
        let (report, verdict) = check_log_directory(&dir, 1 << 20, false);
        assert_eq!(verdict, CheckVerdict::Clean, "{report}");
        let log = CommitLog::open(&dir, small_config()).await.unwrap();
        let expected: Vec<(u64, u64)> = (1..=400).map(|i| (i, 1)).collect();
        assert_entries(&log, &expected).await;
        log.close().await.unwrap();
        // Opening rewrote it.
        assert!(crate::log::segment_index::read(&sealed).is_some());
    });
}
