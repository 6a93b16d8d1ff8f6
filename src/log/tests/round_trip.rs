//! Appends, flushes and reads, across segments, the cache and restarts.

use std::rc::Rc;

use raft::eraftpb::Entry;

use super::support::{append_range, assert_entries, entry, run, small_config};
use crate::log::segment::list_segments;
use crate::log::{CommitLog, HardStateRecord, LogConfig, LogError, Preallocation, SyncMethod};

#[test]
fn append_read_round_trip_across_segments_cache_and_restart() {
    for preallocation in [
        Preallocation::ZeroFill,
        Preallocation::Fallocate,
        Preallocation::Adaptive,
    ] {
        for sync in [SyncMethod::DsyncWrites, SyncMethod::Fdatasync] {
            round_trip_with(preallocation, sync);
        }
    }
}

fn round_trip_with(preallocation: Preallocation, sync: SyncMethod) {
    run(move || async move {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            preallocation,
            sync,
            ..small_config()
        };
        let log = CommitLog::open(dir.path(), config.clone()).await.unwrap();
        assert_eq!(
            (log.first_index(), log.last_index(), log.durable_index()),
            (1, 0, 0)
        );
        append_range(&log, 1, 300, 1).await;
        append_range(&log, 301, 700, 2).await;
        let expected: Vec<(u64, u64)> = (1..=700)
            .map(|i| (i, if i <= 300 { 1 } else { 2 }))
            .collect();
        // The cache holds 16 KiB: most of these reads come back from disk.
        assert_entries(&log, &expected).await;
        assert!(
            list_segments(dir.path()).unwrap().len() > 3,
            "entries span several segments"
        );
        log.set_hard_state(HardStateRecord {
            term: 2,
            vote: 3,
            commit: 650,
        });
        log.close().await.unwrap();

        let log = CommitLog::open(dir.path(), config.clone()).await.unwrap();
        assert_eq!(log.durable_index(), 700);
        assert_eq!(
            log.hard_state(),
            HardStateRecord {
                term: 2,
                vote: 3,
                commit: 650
            }
        );
        assert_entries(&log, &expected).await;
        // Appending after a restart continues in the partly filled block.
        append_range(&log, 701, 720, 3).await;
        log.close().await.unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(log.read(700, 721, u64::MAX).await.unwrap().len(), 21);
        assert_eq!(log.term(720).unwrap(), 3);
    });
}

#[test]
fn read_respects_max_bytes_but_returns_at_least_one_entry() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        append_range(&log, 1, 50, 1).await;
        let one = log.read(10, 50, 0).await.unwrap();
        assert_eq!(one.len(), 1);
        let some = log.read(10, 50, 1500).await.unwrap();
        let bytes: usize = some.iter().map(|e| e.data.len() + e.context.len()).sum();
        assert!(bytes <= 1500 && !some.is_empty() && some.len() < 40);
        assert!(matches!(
            log.read(10, 52, 100).await,
            Err(LogError::Unavailable { .. })
        ));
    });
}

#[test]
fn oversized_and_out_of_order_appends_are_refused_without_changing_the_log() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        append_range(&log, 1, 3, 2).await;
        let mut big = entry(4, 2);
        big.data = vec![0u8; 8 * 1024 + 1].into();
        let error = log.append(&[entry(4, 2), big]).unwrap_err();
        assert!(matches!(
            error,
            LogError::EntryTooLarge {
                payload_bytes: 8193,
                max_bytes: 8192
            }
        ));
        assert!(matches!(
            log.append(&[entry(5, 2)]),
            Err(LogError::NotContiguous { .. })
        ));
        assert!(matches!(
            log.append(&[entry(4, 1)]),
            Err(LogError::NotContiguous { .. })
        ));
        assert_eq!(log.last_index(), 3);
        log.append(&[entry(4, 2)]).unwrap();
        assert_eq!(log.flush().await.unwrap(), 4);
    });
}

#[test]
fn unflushed_bytes_are_bounded() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            max_unflushed_bytes: 32 * 1024,
            ..small_config()
        };
        let log = CommitLog::open(dir.path(), config).await.unwrap();
        let mut index = 1;
        let error = loop {
            match log.append(&[entry(index, 1)]) {
                Ok(()) => index += 1,
                Err(error) => break error,
            }
        };
        assert!(matches!(
            error,
            LogError::WriteBufferFull {
                limit_bytes: 32768,
                ..
            }
        ));
        log.flush().await.unwrap();
        log.append(&[entry(index, 1)]).unwrap();
    });
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let _log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        let second = CommitLog::open(dir.path(), small_config()).await;
        assert!(matches!(second, Err(LogError::Locked(_))));
    });
}

#[test]
fn appends_made_during_a_flush_are_made_durable_by_the_next_one() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            max_unflushed_bytes: 64 * 1024 * 1024,
            ..small_config()
        };
        let log = Rc::new(CommitLog::open(dir.path(), config.clone()).await.unwrap());
        let mut waiting = Vec::new();
        let mut next = 1u64;
        // Batches of varied size, each flushed by its own task while later batches are
        // appended: many flushes in flight, writes crossing chunks and segments.
        for batch in 0..150u64 {
            let count = [1, 7, 40, 400][(batch % 4) as usize];
            let entries: Vec<Entry> = (next..next + count)
                .map(|i| entry(i, 1 + batch / 50))
                .collect();
            log.append(&entries).unwrap();
            next += count;
            let flusher = log.clone();
            waiting.push((
                next - 1,
                glommio::spawn_local(async move { flusher.flush().await }),
            ));
            if batch % 3 == 0 {
                futures_lite::future::yield_now().await;
            }
        }
        let mut previous = 0;
        for (appended, task) in waiting {
            let durable = task.await.unwrap();
            assert!(
                durable >= appended,
                "flush returned {durable} before {appended} was durable"
            );
            assert!(durable >= previous, "durable index went back");
            previous = durable;
        }
        let last = next - 1;
        assert_eq!(log.durable_index(), last);
        drop(log); // a crash right after the flushes returned
        let log = CommitLog::open(dir.path(), config).await.unwrap();
        let mut expected = Vec::new();
        let mut index = 1;
        for batch in 0..150u64 {
            let count = [1, 7, 40, 400][(batch % 4) as usize];
            expected.extend((index..index + count).map(|i| (i, 1 + batch / 50)));
            index += count;
        }
        assert_entries(&log, &expected).await;
    });
}
