//! The `raft::Storage` contract as raft-rs relies on it.

use raft::{GetEntriesContext, Storage, StorageError};

use super::support::{append_range, entry, run, small_config};
use crate::log::raft_storage::from_conf_state;
use crate::log::{CommitLog, HardStateRecord};

#[test]
fn storage_answers_like_raft_expects() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        let storage = log.raft_storage();
        assert_eq!(storage.first_index().unwrap(), 1);
        assert_eq!(storage.last_index().unwrap(), 0);
        assert_eq!(storage.term(0).unwrap(), 0);
        append_range(&log, 1, 200, 1).await;
        append_range(&log, 201, 300, 2).await;
        log.remove_prefix(100).await.unwrap();

        assert_eq!(storage.first_index().unwrap(), 101);
        assert_eq!(storage.last_index().unwrap(), 300);
        assert_eq!(storage.term(100).unwrap(), 1, "term of first_index - 1");
        assert_eq!(storage.term(250).unwrap(), 2);
        assert_eq!(
            storage.term(99),
            Err(raft::Error::Store(StorageError::Compacted))
        );
        assert_eq!(
            storage.term(301),
            Err(raft::Error::Store(StorageError::Unavailable))
        );

        let context = || GetEntriesContext::empty(false);
        let all = storage.entries(101, 301, None, context()).unwrap();
        assert_eq!(all.len(), 200);
        assert!(all
            .iter()
            .zip(101..)
            .all(|(e, i)| e.index == i && *e == entry(i, e.term)));
        // max_size: raft-rs's own limit_size semantics, at least one entry.
        assert_eq!(storage.entries(101, 301, 0, context()).unwrap().len(), 1);
        let limited = storage.entries(101, 301, 2_000, context()).unwrap();
        let mut expected = all.clone();
        raft::util::limit_size(&mut expected, Some(2_000));
        assert_eq!(limited, expected);
        assert_eq!(
            storage.entries(50, 120, None, context()),
            Err(raft::Error::Store(StorageError::Compacted))
        );
        assert_eq!(
            storage.entries(290, 302, None, context()),
            Err(raft::Error::Store(StorageError::Unavailable))
        );
        assert_eq!(
            storage.snapshot(0, 0).unwrap_err(),
            raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
        );
    });
}

#[test]
fn initial_state_comes_back_after_restart() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        let conf = raft::eraftpb::ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Default::default()
        };
        log.set_conf_state(from_conf_state(&conf, 0)).unwrap();
        append_range(&log, 1, 10, 5).await;
        log.set_hard_state(HardStateRecord {
            term: 5,
            vote: 2,
            commit: 9,
        });
        log.flush().await.unwrap();
        drop(log); // a crash: no close

        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        let state = log.raft_storage().initial_state().unwrap();
        assert_eq!(state.conf_state, conf);
        assert_eq!((state.hard_state.term, state.hard_state.vote), (5, 2));
        assert!(
            state.hard_state.commit <= 9,
            "commit is persisted lazily, never ahead"
        );
    });
}

#[test]
fn storage_reads_old_entries_from_disk_after_restart() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        append_range(&log, 1, 400, 1).await;
        log.close().await.unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        let storage = log.raft_storage();
        let entries = storage
            .entries(1, 401, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(entries.len(), 400);
        assert!(entries.iter().zip(1..).all(|(e, i)| *e == entry(i, 1)));
    });
}

#[test]
fn a_commit_index_persisted_on_request_survives_a_crash() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        append_range(&log, 1, 50, 2).await;
        log.set_hard_state(HardStateRecord {
            term: 2,
            vote: 1,
            commit: 10,
        });
        log.flush().await.unwrap();
        log.set_hard_state(HardStateRecord {
            term: 2,
            vote: 1,
            commit: 45,
        });
        log.flush().await.unwrap(); // only the commit moved: left for later
        log.persist_commit_index().await.unwrap();
        drop(log); // a crash: no close
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(
            log.hard_state(),
            HardStateRecord {
                term: 2,
                vote: 1,
                commit: 45
            }
        );
    });
}

/// Regression (`sim_store_agrees` seed 0x1): a flush writes the meta it planned with. A
/// commit index set while it ran was marked persisted by that write, so
/// `persist_commit_index` skipped it and a crash brought back the older one.
#[test]
fn a_commit_index_set_while_a_flush_runs_is_persisted_later() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        let entries: Vec<_> = (1..=10).map(|index| entry(index, 1)).collect();
        log.append(&entries).unwrap();
        // A new term: the next flush writes the meta (commit 0 at its planning).
        log.set_hard_state(HardStateRecord {
            term: 1,
            vote: 0,
            commit: 0,
        });
        let flusher = log.clone();
        let flush = glommio::spawn_local(async move { flusher.flush().await });
        futures_lite::future::yield_now().await;
        assert_eq!(log.written_index(), 10, "the flush has planned");
        log.set_hard_state(HardStateRecord {
            term: 1,
            vote: 0,
            commit: 10,
        });
        assert_eq!(flush.await.unwrap(), 10);
        log.persist_commit_index().await.unwrap();
        drop(log);
        let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
        assert_eq!(log.hard_state().commit, 10, "the persisted commit index");
    });
}
