//! Helpers shared by the log tests.

use std::future::Future;
use std::path::Path;

use raft::eraftpb::Entry;

use crate::log::{CommitLog, LogConfig, Preallocation, SyncMethod};

/// Runs an async test body on a fresh glommio executor.
pub fn run<G, F>(body: G)
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    crate::runtime::run_on_executor("log-test", 512 * 1024, body).expect("executor ran");
}

/// Small segments so tests cross segment boundaries often.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_size_bytes: 64 * 1024,
        max_entry_payload_bytes: 8 * 1024,
        tail_cache_bytes: 16 * 1024,
        max_unflushed_bytes: 1024 * 1024,
        preallocation: Preallocation::ZeroFill,
        sync: SyncMethod::DsyncWrites,
    }
}

/// A deterministic payload for an entry, different per index and term.
pub fn payload(index: u64, term: u64) -> Vec<u8> {
    let length = (index * 37 % 700) as usize + 1;
    (0..length)
        .map(|i| (index as usize * 31 + term as usize * 7 + i) as u8)
        .collect()
}

/// The entry the tests append at `index` in `term`.
pub fn entry(index: u64, term: u64) -> Entry {
    let mut entry = Entry {
        index,
        term,
        data: payload(index, term).into(),
        ..Default::default()
    };
    if index.is_multiple_of(5) {
        entry.context = vec![index as u8; 3].into();
    }
    entry
}

/// Appends entries `from..=to` in `term` and flushes.
pub async fn append_range(log: &CommitLog, from: u64, to: u64, term: u64) {
    let entries: Vec<Entry> = (from..=to).map(|index| entry(index, term)).collect();
    log.append(&entries).expect("append");
    assert_eq!(log.flush().await.expect("flush"), to);
}

/// Reads every entry and checks it against `expected` (index, term) pairs.
pub async fn assert_entries(log: &CommitLog, expected: &[(u64, u64)]) {
    let Some(&(first, _)) = expected.first() else {
        assert_eq!(log.last_index() + 1, log.first_index());
        return;
    };
    let last = expected[expected.len() - 1].0;
    assert_eq!(log.first_index(), first, "first index");
    assert_eq!(log.last_index(), last, "last index");
    let mut next = first;
    while next <= last {
        let entries = log.read(next, last + 1, 10_000).await.expect("read");
        assert!(!entries.is_empty());
        for got in entries {
            let (index, term) = expected[(got.index - first) as usize];
            assert_eq!((got.index, got.term), (index, term));
            assert_eq!(got, entry(index, term), "entry {index} differs");
            assert_eq!(log.term(index).expect("term"), term);
            next = got.index + 1;
        }
    }
}

/// Copies a directory (flat) so a test can damage the copy.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for item in std::fs::read_dir(from).expect("list") {
        let item = item.expect("entry");
        if item.file_name() == "LOCK" {
            continue;
        }
        std::fs::copy(item.path(), to.join(item.file_name())).expect("copy file");
    }
}
