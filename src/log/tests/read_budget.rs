//! Reads with a byte budget (catch-up appends, fetches of old data) read each byte of the
//! log about once: a read that ends at its budget never reads the next entry off the disk
//! only to drop it.

use raft::eraftpb::Entry;

use super::support::{run, small_config};
use crate::constants::READ_CHUNK_BYTES;
use crate::log::{CommitLog, LogConfig};

const ENTRY_BYTES: usize = 300 * 1024;
const ENTRIES: u64 = 12;
const BUDGET: u64 = 1024 * 1024;

fn big_entry(index: u64) -> Entry {
    Entry {
        index,
        term: 1,
        data: vec![index as u8; ENTRY_BYTES].into(),
        ..Default::default()
    }
}

#[test]
fn a_budgeted_read_stops_before_the_entry_that_does_not_fit() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_size_bytes: 16 * 1024 * 1024,
            max_entry_payload_bytes: 512 * 1024,
            max_unflushed_bytes: 8 * 1024 * 1024,
            ..small_config()
        };
        let log = CommitLog::open(dir.path(), config.clone()).await.unwrap();
        let entries: Vec<Entry> = (1..=ENTRIES).map(big_entry).collect();
        log.append(&entries).unwrap();
        assert_eq!(log.flush().await.unwrap(), ENTRIES);
        log.close().await.unwrap();
        // Opened again: nothing of the first entries is in the tail cache.
        let log = CommitLog::open(dir.path(), config).await.unwrap();

        // Three entries fit the budget, the fourth does not: one chunk read, not two.
        let before = log.disk_read_bytes();
        let first = log.read(1, ENTRIES + 1, BUDGET).await.unwrap();
        let cost = log.disk_read_bytes() - before;
        assert_eq!(first.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(
            cost <= READ_CHUNK_BYTES as u64,
            "reading 3 entries of {ENTRY_BYTES} bytes read {cost} bytes off the disk"
        );

        // Read on as a catch-up does (each read from where the last ended): about the
        // log's size in all, never twice it.
        let mut next = 1;
        let before = log.disk_read_bytes();
        while next <= ENTRIES {
            let read = log.read(next, ENTRIES + 1, BUDGET).await.unwrap();
            for entry in &read {
                assert_eq!(entry.index, next, "entries in order, none skipped");
                assert_eq!(entry.data, big_entry(next).data);
                next += 1;
            }
        }
        let cost = log.disk_read_bytes() - before;
        let stored = ENTRIES * ENTRY_BYTES as u64;
        assert!(
            cost * 2 <= stored * 3,
            "reading {stored} bytes of entries by budget read {cost} bytes off the disk"
        );
    });
}
