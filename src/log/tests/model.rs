//! Random sequences of append, flush, truncate, prefix removal, restart and crash, checked
//! against a simple in-memory model of what the log must hold.

use proptest::prelude::*;

use super::support::{entry, run, small_config};
use crate::log::CommitLog;

#[derive(Clone, Debug)]
enum Operation {
    Append {
        count: u64,
        new_term: bool,
    },
    Flush,
    Truncate {
        at_per_mille: u64,
    },
    RemovePrefix {
        at_per_mille: u64,
    },
    Restart,
    Crash,
    CrashDuringFlush {
        yields: u8,
    },
    Read {
        from_per_mille: u64,
        max_bytes: u64,
    },
    /// A sparse read: from a point, indexes `strides` apart in turn (a partition's
    /// batches among others').
    ReadIndexes {
        from_per_mille: u64,
        strides: Vec<u64>,
        max_bytes: u64,
    },
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        4 => (1u64..40, any::<bool>()).prop_map(|(count, new_term)| Operation::Append { count, new_term }),
        3 => Just(Operation::Flush),
        1 => (0u64..1000).prop_map(|at_per_mille| Operation::Truncate { at_per_mille }),
        1 => (0u64..1000).prop_map(|at_per_mille| Operation::RemovePrefix { at_per_mille }),
        1 => Just(Operation::Restart),
        1 => Just(Operation::Crash),
        1 => (0u8..4).prop_map(|yields| Operation::CrashDuringFlush { yields }),
        2 => (0u64..1000, 0u64..5000).prop_map(|(from_per_mille, max_bytes)| Operation::Read { from_per_mille, max_bytes }),
        2 => (0u64..1000, proptest::collection::vec(1u64..60, 1..8), 0u64..20_000).prop_map(
            |(from_per_mille, strides, max_bytes)| Operation::ReadIndexes { from_per_mille, strides, max_bytes }),
    ]
}

/// What the log must hold: (index, term) of every entry from the first index.
#[derive(Debug)]
struct Model {
    first_index: u64,
    entries: Vec<(u64, u64)>,
    durable_index: u64,
    term: u64,
}

impl Model {
    fn last_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64 - 1
    }
    fn pick(&self, low: u64, per_mille: u64) -> u64 {
        let high = self.last_index();
        if high < low {
            return low;
        }
        low + (high - low) * per_mille / 1000
    }
}

async fn check_all(log: &CommitLog, model: &Model) {
    assert_eq!(log.first_index(), model.first_index);
    assert_eq!(log.last_index(), model.last_index());
    if model.entries.is_empty() {
        return;
    }
    let got = log
        .read(model.first_index, model.last_index() + 1, u64::MAX)
        .await
        .unwrap();
    let expected: Vec<_> = model
        .entries
        .iter()
        .map(|&(index, term)| entry(index, term))
        .collect();
    assert_eq!(got, expected);
}

async fn run_operations(operations: Vec<Operation>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = CommitLog::open(dir.path(), small_config()).await.unwrap();
    let mut model = Model {
        first_index: 1,
        entries: Vec::new(),
        durable_index: 0,
        term: 1,
    };
    for operation in operations {
        match operation {
            Operation::Append { count, new_term } => {
                if new_term {
                    model.term += 1;
                }
                let start = model.last_index() + 1;
                let batch: Vec<_> = (start..start + count)
                    .map(|i| entry(i, model.term))
                    .collect();
                if log.append(&batch).is_err() {
                    log.flush().await.unwrap();
                    model.durable_index = model.last_index();
                    log.append(&batch).unwrap();
                }
                model
                    .entries
                    .extend((start..start + count).map(|i| (i, model.term)));
            }
            Operation::Flush => {
                assert_eq!(log.flush().await.unwrap(), model.last_index());
                model.durable_index = model.last_index();
            }
            Operation::Truncate { at_per_mille } => {
                let from = model.pick(model.first_index, at_per_mille);
                log.truncate_suffix(from).await.unwrap();
                model.entries.truncate((from - model.first_index) as usize);
                model.durable_index = model.durable_index.min(from - 1);
            }
            Operation::RemovePrefix { at_per_mille } => {
                let up_to = model
                    .pick(model.first_index, at_per_mille)
                    .min(model.durable_index);
                log.remove_prefix(up_to).await.unwrap();
                if up_to >= model.first_index {
                    model
                        .entries
                        .drain(..(up_to + 1 - model.first_index) as usize);
                    model.first_index = up_to + 1;
                }
            }
            Operation::Restart => {
                log.close().await.unwrap();
                log = CommitLog::open(dir.path(), small_config()).await.unwrap();
                model.durable_index = model.last_index();
                check_all(&log, &model).await;
            }
            Operation::Crash => {
                drop(log);
                let keep = (model.durable_index + 1).saturating_sub(model.first_index) as usize;
                model.entries.truncate(keep);
                log = CommitLog::open(dir.path(), small_config()).await.unwrap();
                model.durable_index = model.last_index();
                check_all(&log, &model).await;
            }
            Operation::CrashDuringFlush { yields } => {
                // A flush is cut off at some point; whatever it had made durable must
                // survive, and the log must come back as a prefix of what was appended.
                let durable_before = log.durable_index();
                let shared = std::rc::Rc::new(log);
                let flusher = shared.clone();
                let task = glommio::spawn_local(async move { flusher.flush().await });
                for _ in 0..yields {
                    futures_lite::future::yield_now().await;
                }
                drop(task);
                drop(shared);
                // Let writes already handed to the kernel land, as they would before a
                // real crash takes the process (nothing is issued after this point).
                glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                log = CommitLog::open(dir.path(), small_config()).await.unwrap();
                let recovered = log.last_index();
                assert!(recovered >= durable_before.max(model.first_index - 1));
                assert!(recovered <= model.last_index());
                model
                    .entries
                    .truncate((recovered + 1 - model.first_index) as usize);
                model.durable_index = recovered;
                check_all(&log, &model).await;
            }
            Operation::Read {
                from_per_mille,
                max_bytes,
            } => {
                if model.entries.is_empty() {
                    continue;
                }
                let from = model.pick(model.first_index, from_per_mille);
                let got = log
                    .read(from, model.last_index() + 1, max_bytes)
                    .await
                    .unwrap();
                assert!(!got.is_empty());
                for (offset, got) in got.iter().enumerate() {
                    let (index, term) = model.entries[(from - model.first_index) as usize + offset];
                    assert_eq!(*got, entry(index, term));
                }
            }
            Operation::ReadIndexes {
                from_per_mille,
                strides,
                max_bytes,
            } => {
                if model.entries.is_empty() {
                    continue;
                }
                let mut wanted = vec![model.pick(model.first_index, from_per_mille)];
                for stride in strides.iter().cycle().take(40) {
                    let next = wanted[wanted.len() - 1] + stride;
                    if next > model.last_index() {
                        break;
                    }
                    wanted.push(next);
                }
                let got = log.read_indexes(&wanted, max_bytes).await.unwrap();
                assert!(!got.is_empty(), "at least one entry");
                assert!(got.len() <= wanted.len());
                for (got, index) in got.iter().zip(&wanted) {
                    let (index, term) = model.entries[(index - model.first_index) as usize];
                    assert_eq!(*got, entry(index, term));
                }
            }
        }
        assert_eq!(log.last_index(), model.last_index());
        assert_eq!(log.first_index(), model.first_index);
        assert!(log.durable_index() >= model.durable_index.min(log.last_index()));
    }
    log.close().await.unwrap();
    let log = CommitLog::open(dir.path(), small_config()).await.unwrap();
    check_all(&log, &model).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_the_model(operations in proptest::collection::vec(operation(), 1..60)) {
        run(move || run_operations(operations));
    }
}
