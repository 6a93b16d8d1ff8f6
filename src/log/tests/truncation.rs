//! Suffix truncation and prefix removal, each followed by a restart.

use super::support::{append_range, assert_entries, run, small_config};
use crate::log::meta::{MetaFile, TruncationFence};
use crate::log::segment::list_segments;
use crate::log::{CommitLog, HardStateRecord, LogError};

#[test]
fn suffix_truncation_across_segments_survives_restart() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        append_range(&log, 1, 500, 1).await;
        let segments_before = list_segments(dir.path()).unwrap().len();
        // Cut into an old segment: later segment files must go.
        log.truncate_suffix(120).await.unwrap();
        assert_eq!((log.last_index(), log.durable_index()), (119, 119));
        assert!(list_segments(dir.path()).unwrap().len() < segments_before);
        append_range(&log, 120, 130, 3).await;
        log.close().await.unwrap();

        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        let expected: Vec<(u64, u64)> = (1..=130)
            .map(|i| (i, if i < 120 { 1 } else { 3 }))
            .collect();
        assert_entries(&log, &expected).await;
    });
}

#[test]
fn truncating_entries_not_yet_flushed_needs_no_disk_work_and_restart_agrees() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        append_range(&log, 1, 50, 1).await;
        let pending: Vec<_> = (51..=80).map(|i| super::support::entry(i, 1)).collect();
        log.append(&pending).unwrap();
        log.truncate_suffix(60).await.unwrap();
        assert_eq!(log.last_index(), 59);
        append_range(&log, 60, 70, 2).await;
        log.close().await.unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        let expected: Vec<(u64, u64)> = (1..=70).map(|i| (i, if i < 60 { 1 } else { 2 })).collect();
        assert_entries(&log, &expected).await;
    });
}

#[test]
fn committed_entries_cannot_be_truncated() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        append_range(&log, 1, 20, 1).await;
        log.set_hard_state(HardStateRecord {
            term: 1,
            vote: 0,
            commit: 15,
        });
        assert!(matches!(
            log.truncate_suffix(15).await,
            Err(LogError::InvalidRequest(_))
        ));
        log.truncate_suffix(16).await.unwrap();
        assert_eq!(log.last_index(), 15);
    });
}

#[test]
fn prefix_removal_deletes_old_segments_and_survives_restart() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        append_range(&log, 1, 500, 1).await;
        append_range(&log, 501, 600, 2).await;
        let before = list_segments(dir.path()).unwrap();
        log.remove_prefix(300).await.unwrap();
        assert_eq!(log.first_index(), 301);
        assert_eq!(
            log.term(300).unwrap(),
            1,
            "the compaction point keeps its term"
        );
        assert!(matches!(log.term(299), Err(LogError::Compacted { .. })));
        assert!(matches!(
            log.read(299, 310, 100).await,
            Err(LogError::Compacted { .. })
        ));
        let after = list_segments(dir.path()).unwrap();
        assert!(after.len() < before.len());
        assert!(after[0].0 <= 301, "the segment holding 301 stays");
        log.close().await.unwrap();

        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        assert_eq!((log.first_index(), log.compaction_point()), (301, (300, 1)));
        let expected: Vec<(u64, u64)> = (301..=600)
            .map(|i| (i, if i <= 500 { 1 } else { 2 }))
            .collect();
        assert_entries(&log, &expected).await;
        // Removing everything keeps the log usable.
        log.remove_prefix(600).await.unwrap();
        append_range(&log, 601, 610, 3).await;
        log.close().await.unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        let expected: Vec<(u64, u64)> = (601..=610).map(|i| (i, 3)).collect();
        assert_entries(&log, &expected).await;
    });
}

#[test]
fn reset_to_a_snapshot_point_restarts_the_log_there() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        append_range(&log, 1, 100, 1).await;
        log.reset_to(1000, 4).await.unwrap();
        assert_eq!(
            (log.first_index(), log.last_index(), log.term(1000).unwrap()),
            (1001, 1000, 4)
        );
        append_range(&log, 1001, 1010, 4).await;
        log.close().await.unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        let expected: Vec<(u64, u64)> = (1001..=1010).map(|i| (i, 4)).collect();
        assert_entries(&log, &expected).await;
        assert_eq!(log.hard_state().commit, 1000);
    });
}

#[test]
fn an_interrupted_reset_comes_back_as_an_empty_log_at_the_snapshot_point() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        append_range(&log, 1, 300, 1).await;
        log.close().await.unwrap();
        // What reset_to(250, 7) records before it deletes anything: a crash right after.
        let first_segment = list_segments(dir.path()).unwrap()[0].0;
        let (mut meta_file, mut meta) = MetaFile::open(dir.path()).await.unwrap();
        meta.compaction_index = 250;
        meta.compaction_term = 7;
        meta.truncation_fence = Some(TruncationFence {
            segment_first_index: first_segment,
            offset: 0,
        });
        meta_file.write(&meta).await.unwrap();
        meta_file.close().await.unwrap();

        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        assert_eq!((log.first_index(), log.last_index()), (251, 250));
        assert_eq!(log.term(250).unwrap(), 7);
        assert!(list_segments(dir.path()).unwrap().is_empty());
        append_range(&log, 251, 260, 7).await;
        log.close().await.unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        let expected: Vec<(u64, u64)> = (251..=260).map(|i| (i, 7)).collect();
        assert_entries(&log, &expected).await;
    });
}
