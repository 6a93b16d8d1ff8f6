//! The simulator's log store agrees with the production log: a seeded differential test.
//!
//! Every safety result of the simulator is only as good as `SimLogStore`, its in-memory
//! model of the `CommitLog`. This test drives the same random sequence of operations
//! against a real `CommitLog` (O_DIRECT segment files in a temporary directory, on a
//! glommio executor, with the shard's snapshot files beside it) and against a
//! `SimLogStore`, the way the replica, the shard driver and the simulated world use them,
//! and compares after every operation everything observable through `LogStore` and its
//! `raft::Storage` view.
//!
//! ```text
//! seed ─▶ Prng ─▶ op ─┬─▶ CommitLog + SnapshotFiles (group_driver::carry_out_disk_work)
//!                     └─▶ SimLogStore              (SimLog::carry_out, the world's way)
//!                     ─▶ compare: indexes, terms, entries, hard/conf state, snapshot
//! ```
//!
//! Operations (as the replica asks for them, within raft-rs's rules): append entries that
//! continue the log (random sizes, contexts and types; terms not decreasing), cut an
//! unwritten suffix, start a flush and complete the oldest (at most
//! `MAX_FLUSHES_IN_FLIGHT` at once, appends and state changes in between), set the hard
//! state (term, vote, commit) and the configuration (joint ones too), and the disk work
//! of `DiskWork`: cut written entries (`TruncateSuffix`), persist the commit index, write
//! a snapshot file at a committed index, remove a prefix at a written snapshot
//! (retention; the store then hands that snapshot out, as `Replica::on_disk_done` does),
//! install a leader's snapshot past the commit index. And crashes: the `CommitLog` is
//! dropped and opened again from its directory (then `shard::restore_state`, as a
//! restarting shard does), the simulator's log goes through its crash recovery, either
//! - between flushes: nothing can be torn, the two must agree exactly; or
//! - after the running flushes reached the disk (entries, syncs, meta writes) before
//!   their completions were heard: what production recovers must be one of the outcomes
//!   `SimLog::crash_outcome_possible` allows, and the simulator then takes that outcome
//!   (`recover_as`) so the sequence goes on in step.
//!
//! Compared after every operation: first, last, written and durable index, compaction
//! point, hard state and configuration (through `LogStore` and `initial_state`), `term(i)`
//! around the whole log (both views, with their errors), `entries(low, high, max_size)` over
//! random ranges (compacted, unavailable and size-limited ones too; synchronously, and
//! through the catch-up protocol: `LogTemporarilyUnavailable`, `take_misses`, read,
//! `stage_fetched`, asked again), the snapshot handed out, and each operation's outcome (a
//! flush's durable index, refusals). After a crash and at the end, every entry.
//!
//! Deliberate differences, not compared (each a modelling choice, not a contract):
//! - Durability timing: a production flush runs on the executor and may end before the
//!   test reports its completion; while flushes are in flight the durable index may be
//!   ahead of the simulator's, but only to a running flush's end. With none in flight it
//!   must be equal.
//! - Torn writes: a crash never stops production in the middle of a flush. Which of a
//!   real flush's writes land is not under the test's control, and a write already handed
//!   to the kernel could land after the log is opened again. Torn tails are the log's own
//!   recovery tests' subject; here the simulator's torn outcomes are only checked to
//!   include the whole-flush ones production produces.
//! - Disk work starts with no flush in flight: the production log takes the disk
//!   exclusively (it waits for running flushes), the world completes disk events in the
//!   order they were started; the test completes running flushes first.
//! - Segments: production cuts segments by bytes, the simulator by entry count, so
//!   `segments()` and `last_sealed_index()` differ by design (retention picks a cut from
//!   them; the cut itself is compared). `unflushed_bytes()` counts stored bytes (headers,
//!   padding) in production, payload in the simulator: both only steer backpressure.
//! - Which reads miss: production misses entries outside its byte-bounded tail cache, the
//!   simulator those older than its last `cache_entries`; what the read returns once the
//!   miss is served must be the same. Catch-up reads here are not capped at
//!   `MAX_CATCH_UP_READ_BYTES` as the replica caps them: production's cap counts payload
//!   bytes, the simulator's encoded size, so a capped read may legitimately stop at
//!   different entries (raft-rs takes either).
//! - Requests the replica never makes are not driven (appends that skip an index or lower
//!   the term, oversized entries, cuts at or below the commit index, a prefix removal past
//!   the commit index, a full write buffer): raft-rs never asks for them, and the two
//!   refuse them differently (errors, assertions).
//!
//! The logs live on a tmpfs (`/dev/shm`) when there is one (`KEEL_DIFF_DIR` chooses
//! another directory): still real files written with O_DIRECT through glommio, and a
//! crash here is the process's (the log dropped), which loses nothing the kernel holds on
//! any file system; on this shared virtual disk the syncs alone made the run 10 to 20
//! times slower.
//!
//! A failing sequence prints its seed, the operation index and every operation so far;
//! `KEEL_DIFF_SEED=0x.. cargo test --lib sim_store_agrees` runs that seed alone, and
//! `KEEL_DIFF_SEQUENCES=N` runs seeds 1..=N (a long run).

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::eraftpb::{Entry, EntryType, Snapshot};
use raft::{GetEntriesContext, Storage, StorageError};

use crate::broker::snapshot::encode_state;
use crate::broker::state::ShardState;
use crate::log::raft_storage::to_conf_state;
use crate::log::{
    CommitLog, ConfStateRecord, HardStateRecord, LogConfig, LogResult, Preallocation, SyncMethod,
};
use crate::replication::events::DiskWork;
use crate::replication::log_store::LogStore;
use crate::replication::prng::Prng;
use crate::replication::ready_cycle::MAX_FLUSHES_IN_FLIGHT;
use crate::replication::retention::MAX_KEPT_SNAPSHOTS;
use crate::shard::commit_log_store::storage_failure;
use crate::shard::group_driver::carry_out_disk_work;
use crate::shard::restore_state;
use crate::shard::snapshots::SnapshotFiles;
use crate::sim::sim_store::{CrashOutcome, SimLog, SimLogStore};

/// Random sequences run by `cargo test` (seeds 1..=SEQUENCES).
const SEQUENCES: u64 = 500;
/// Operations per sequence, drawn from this range.
const OPERATIONS: (u64, u64) = (50, 201);
/// Random `entries` ranges compared after each operation.
const READS_PER_CHECK: usize = 3;
/// Appends stop for a flush beyond this many unflushed payload bytes.
const MAX_UNFLUSHED_PAYLOAD_BYTES: u64 = 256 * 1024;
/// Largest entry payload drawn (below the log's limit).
const MAX_DRAWN_PAYLOAD_BYTES: u64 = 7000;
/// Replays one seed (hex with 0x, or decimal).
const SEED_VARIABLE: &str = "KEEL_DIFF_SEED";
/// Makes the logs in this directory instead.
const DIRECTORY_VARIABLE: &str = "KEEL_DIFF_DIR";
/// Runs this many sequences instead of `SEQUENCES` (long runs on demand).
const SEQUENCES_VARIABLE: &str = "KEEL_DIFF_SEQUENCES";

/// Where the logs are made: `KEEL_DIFF_DIR`, else a tmpfs (`/dev/shm`) when there is one,
/// else the system's temporary directory (see the module comment).
fn test_directory() -> PathBuf {
    if let Ok(directory) = std::env::var(DIRECTORY_VARIABLE) {
        return PathBuf::from(directory);
    }
    let shared_memory = PathBuf::from("/dev/shm");
    if shared_memory.is_dir() {
        return shared_memory;
    }
    std::env::temp_dir()
}

/// Small segments, so sequences cross segment boundaries and read sealed segments.
fn log_config() -> LogConfig {
    LogConfig {
        segment_size_bytes: 64 * 1024,
        max_entry_payload_bytes: 8 * 1024,
        tail_cache_bytes: 16 * 1024,
        max_unflushed_bytes: 4 * 1024 * 1024,
        preallocation: Preallocation::Fallocate,
        sync: SyncMethod::DsyncWrites,
    }
}

/// One step of a sequence.
#[derive(Clone)]
enum Op {
    Append(Vec<Entry>),
    TruncateUnwritten {
        from_index: u64,
    },
    StartFlush,
    CompleteFlush,
    SetHardState(HardStateRecord),
    SetConfState(ConfStateRecord),
    Disk(DiskWork),
    Crash,
    /// The running flushes reach the disk (entries, syncs, meta) but the crash comes
    /// before anyone hears: the simulator must be able to recover what production does.
    CrashAfterUnreportedFlushes,
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Append(_) => "append",
            Op::TruncateUnwritten { .. } => "truncate unwritten",
            Op::StartFlush => "start flush",
            Op::CompleteFlush => "complete flush",
            Op::SetHardState(_) => "set hard state",
            Op::SetConfState(_) => "set conf state",
            Op::Disk(DiskWork::TruncateSuffix { .. }) => "disk: truncate suffix",
            Op::Disk(DiskWork::InstallSnapshot { .. }) => "disk: install snapshot",
            Op::Disk(DiskWork::WriteSnapshotFile { .. }) => "disk: write snapshot file",
            Op::Disk(DiskWork::RemovePrefix { .. }) => "disk: remove prefix",
            Op::Disk(DiskWork::PersistCommitIndex) => "disk: persist commit index",
            Op::Crash => "crash",
            Op::CrashAfterUnreportedFlushes => "crash after unreported flushes",
        }
    }
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Append(entries) => {
                let first = entries.first().map_or(0, |e| e.index);
                let last = entries.last().map_or(0, |e| e.index);
                let terms: Vec<u64> = entries.iter().map(|e| e.term).collect();
                let bytes: Vec<usize> = entries
                    .iter()
                    .map(|e| e.data.len() + e.context.len())
                    .collect();
                write!(f, "append {first}..={last} terms {terms:?} bytes {bytes:?}")
            }
            Op::TruncateUnwritten { from_index } => {
                write!(f, "truncate unwritten from {from_index}")
            }
            Op::StartFlush => write!(f, "start flush"),
            Op::CompleteFlush => write!(f, "complete flush"),
            Op::SetHardState(hard_state) => write!(f, "set {hard_state:?}"),
            Op::SetConfState(conf_state) => write!(f, "set {conf_state:?}"),
            Op::Disk(DiskWork::InstallSnapshot { snapshot }) => {
                write!(f, "disk: install {}", describe_snapshot(snapshot))
            }
            Op::Disk(DiskWork::WriteSnapshotFile { snapshot }) => {
                write!(f, "disk: write file {}", describe_snapshot(snapshot))
            }
            Op::Disk(work) => write!(f, "disk: {work:?}"),
            Op::Crash => write!(f, "crash and reopen"),
            Op::CrashAfterUnreportedFlushes => {
                write!(
                    f,
                    "running flushes reach the disk unreported; crash and reopen"
                )
            }
        }
    }
}

fn describe_snapshot(snapshot: &Snapshot) -> String {
    let metadata = snapshot.get_metadata();
    format!(
        "snapshot (index {}, term {}, {:?})",
        metadata.index,
        metadata.term,
        metadata.get_conf_state()
    )
}

/// The same log twice: production and simulated.
struct Pair {
    directory: tempfile::TempDir,
    production: Option<CommitLog>,
    snapshots: SnapshotFiles,
    /// Production flushes started and not yet completed, oldest first.
    flushes: VecDeque<glommio::Task<LogResult<u64>>>,
    sim: SimLogStore,
    /// The snapshot files written, as the replica keeps them (`kept_snapshots`).
    kept: BTreeMap<u64, Snapshot>,
    /// The crash's randomness on the simulated side (unused without flushes in flight).
    crash_rng: Prng,
    /// Events worth counting (misses served, a durable index ahead), for the tally.
    notes: std::cell::RefCell<Vec<&'static str>>,
}

impl Pair {
    async fn new(seed: u64, rng: &mut Prng) -> Pair {
        let directory = tempfile::tempdir_in(test_directory()).expect("temporary directory");
        let production = CommitLog::open(&directory.path().join("log"), log_config())
            .await
            .expect("open the log");
        let snapshots =
            SnapshotFiles::open(&directory.path().join("snapshots")).expect("snapshot files");
        let cache_choices = [0, 4, 16];
        let sim = SimLogStore::new(SimLog {
            segment_entries: rng.range(4, 40),
            cache_entries: cache_choices[rng.range(0, 3) as usize],
            ..Default::default()
        });
        Pair {
            directory,
            production: Some(production),
            snapshots,
            flushes: VecDeque::new(),
            sim,
            kept: BTreeMap::new(),
            crash_rng: Prng::new(seed ^ 0xc4a5),
            notes: Default::default(),
        }
    }

    fn log(&self) -> &CommitLog {
        self.production.as_ref().expect("the log is open")
    }

    fn log_dir(&self) -> PathBuf {
        self.directory.path().join("log")
    }

    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Append(entries) => {
                let production = LogStore::append(&mut self.log().clone(), entries);
                let sim = LogStore::append(&mut self.sim, entries);
                same("append outcome", &production, &sim)
            }
            Op::TruncateUnwritten { from_index } => {
                let production =
                    LogStore::truncate_unwritten_suffix(&mut self.log().clone(), *from_index);
                let sim = LogStore::truncate_unwritten_suffix(&mut self.sim, *from_index);
                same("truncate outcome", &production, &sim)
            }
            Op::StartFlush => {
                self.sim.log.borrow_mut().begin_flush();
                self.start_production_flush().await;
                Ok(())
            }
            Op::CompleteFlush => {
                let sim = self.sim.log.borrow_mut().complete_flush(None);
                let task = self.flushes.pop_front().expect("a flush in flight");
                let production = task.await.map_err(|e| storage_failure(&e));
                same("flush outcome (durable index)", &production, &sim)
            }
            Op::SetHardState(hard_state) => {
                LogStore::set_hard_state(&mut self.log().clone(), *hard_state);
                LogStore::set_hard_state(&mut self.sim, *hard_state);
                Ok(())
            }
            Op::SetConfState(conf_state) => {
                let production =
                    LogStore::set_conf_state(&mut self.log().clone(), conf_state.clone());
                let sim = LogStore::set_conf_state(&mut self.sim, conf_state.clone());
                same("configuration outcome", &production, &sim)
            }
            Op::Disk(work) => self.disk_work(work).await,
            Op::Crash => {
                assert!(self.flushes.is_empty(), "crashes happen between flushes");
                self.reopen_production().await?;
                let recovered = self
                    .sim
                    .log
                    .borrow()
                    .recover_after_crash(&mut self.crash_rng);
                self.sim = SimLogStore::new(recovered);
                Ok(())
            }
            Op::CrashAfterUnreportedFlushes => {
                for task in std::mem::take(&mut self.flushes) {
                    task.await
                        .map_err(|e| format!("a production flush failed: {e}"))?;
                }
                self.reopen_production().await?;
                let outcome = self.observed_crash_outcome()?;
                let recovered = self.sim.log.borrow().recover_as(outcome);
                self.sim = SimLogStore::new(recovered);
                Ok(())
            }
        }
    }

    /// The production side of a crash: the log is dropped and opened again from its
    /// directory, then the shard's state restored (`run_shard`'s order).
    async fn reopen_production(&mut self) -> Result<(), String> {
        self.production = None;
        let log = CommitLog::open(&self.log_dir(), log_config())
            .await
            .map_err(|e| format!("production log does not reopen: {e}"))?;
        self.snapshots = SnapshotFiles::open(&self.directory.path().join("snapshots"))
            .map_err(|e| format!("snapshot files do not reopen: {e}"))?;
        restore_state(&log, &self.snapshots)
            .map_err(|e| format!("production state does not restore: {e}"))?;
        self.production = Some(log);
        // The replica's snapshots in memory are gone (the files stay).
        self.kept.clear();
        Ok(())
    }

    /// The simulator's crash outcome that gives what production recovered, if it can
    /// give it at all.
    fn observed_crash_outcome(&self) -> Result<CrashOutcome, String> {
        let landed = LogStore::last_index(self.log());
        let hard_state = LogStore::hard_state(self.log());
        let conf_state = LogStore::conf_state(self.log());
        let log = self.sim.log.borrow();
        let positions = (0..log.in_flight.len()).map(Some);
        for meta_of in std::iter::once(None).chain(positions) {
            let outcome = CrashOutcome { landed, meta_of };
            if !log.crash_outcome_possible(outcome) {
                continue;
            }
            let recovered = log.recover_as(outcome);
            if recovered.hard_state == hard_state && recovered.conf_state == conf_state {
                return Ok(outcome);
            }
        }
        let running: Vec<u64> = log.in_flight.iter().map(|f| f.upto_index).collect();
        Err(format!(
            "no simulated crash gives what production recovered: entries up to {landed}, \
             {hard_state:?}, {conf_state:?} (simulator: durable up to {}, flushes running to \
             {running:?}, durable meta {:?})",
            log.durable_index, log.durable_meta
        ))
    }

    /// Starts a production flush and returns once it has taken what it writes (as
    /// `begin_flush` does at once): planning is serialized, so first wait for the
    /// previous flush to have issued its writes, then for the new one's first poll,
    /// which plans it (no earlier await can wait: no disk work holds the log).
    async fn start_production_flush(&mut self) {
        let log = self.log().clone();
        while log.plan_lock.available() == 0 {
            pause().await;
        }
        let started = Rc::new(Cell::new(false));
        let flag = started.clone();
        let task = glommio::spawn_local(async move {
            flag.set(true);
            log.flush().await
        });
        while !started.get() {
            futures_lite::future::yield_now().await;
        }
        self.flushes.push_back(task);
    }

    async fn disk_work(&mut self, work: &DiskWork) -> Result<(), String> {
        let production = carry_out_disk_work(self.log(), &self.snapshots, work.clone()).await;
        let sim = self.sim.log.borrow_mut().carry_out(work);
        if production.is_ok() != sim.is_ok() {
            return Err(format!(
                "disk work outcome: production {production:?}, sim {sim:?}"
            ));
        }
        if production.is_err() {
            return Ok(());
        }
        // What the replica does when the work is done (`Replica::on_disk_done`).
        match work {
            DiskWork::WriteSnapshotFile { snapshot } => {
                self.kept
                    .insert(snapshot.get_metadata().index, snapshot.clone());
                while self.kept.len() > MAX_KEPT_SNAPSHOTS {
                    self.kept.pop_first();
                }
            }
            DiskWork::RemovePrefix { up_to_index } => {
                let snapshot = self.kept[up_to_index].clone();
                LogStore::set_snapshot(&mut self.log().clone(), snapshot.clone());
                LogStore::set_snapshot(&mut self.sim, snapshot);
                self.kept.retain(|&index, _| index >= *up_to_index);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Lets the executor run other tasks (flushes) and reap completions.
async fn pause() {
    glommio::timer::sleep(Duration::from_micros(20)).await;
}

fn same<T: Debug + PartialEq>(what: &str, production: &T, sim: &T) -> Result<(), String> {
    if production == sim {
        return Ok(());
    }
    Err(format!("{what}: production {production:?}, sim {sim:?}"))
}

/// Entries read on both sides, the same; a difference names each entry briefly.
fn same_entries(
    what: &str,
    production: &Result<Vec<Entry>, String>,
    sim: &Result<Vec<Entry>, String>,
) -> Result<(), String> {
    if production == sim {
        return Ok(());
    }
    let describe = |read: &Result<Vec<Entry>, String>| match read {
        Ok(entries) => {
            let entries: Vec<String> = entries.iter().map(describe_entry).collect();
            format!("{} entries {entries:?}", entries.len())
        }
        Err(error) => error.clone(),
    };
    Err(format!(
        "{what}: production {}, sim {}",
        describe(production),
        describe(sim)
    ))
}

fn describe_entry(entry: &Entry) -> String {
    format!(
        "{} term {} {:?} context {} data {} crc {:08x}",
        entry.index,
        entry.term,
        entry.get_entry_type(),
        entry.context.len(),
        entry.data.len(),
        crc32c::crc32c(&entry.data)
    )
}

/// A `raft::Storage` answer with its error reduced to the kind raft-rs acts on.
fn answer<T>(result: raft::Result<T>) -> Result<T, String> {
    result.map_err(|error| match error {
        raft::Error::Store(StorageError::Compacted) => "Compacted".to_string(),
        raft::Error::Store(StorageError::Unavailable) => "Unavailable".to_string(),
        raft::Error::Store(StorageError::LogTemporarilyUnavailable) => {
            "LogTemporarilyUnavailable".to_string()
        }
        raft::Error::Store(StorageError::SnapshotOutOfDate) => "SnapshotOutOfDate".to_string(),
        raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable) => {
            "SnapshotTemporarilyUnavailable".to_string()
        }
        other => format!("other error: {other}"),
    })
}

/// The `(low, high, max_size)` of an `entries` call.
type Range = (u64, u64, Option<u64>);

impl Pair {
    /// Compares everything observable; `every_entry` also reads the whole log.
    async fn compare(&mut self, rng: &mut Prng, every_entry: bool) -> Result<(), String> {
        self.compare_indexes()?;
        self.compare_terms()?;
        self.compare_states_and_snapshots()?;
        let first = LogStore::first_index(&self.sim);
        let last = LogStore::last_index(&self.sim);
        let mut ranges: Vec<(Range, bool)> = Vec::new();
        for read in 0..READS_PER_CHECK {
            let low = rng.range(first.saturating_sub(2), last + 2);
            let high = rng.range(low, (last + 3).min(low + 64));
            let max_size = match rng.range(0, 4) {
                0 => None,
                1 => Some(0),
                _ => Some(rng.range(1, 20_000)),
            };
            let can_async = read == 0 && low < high;
            ranges.push(((low, high, max_size), can_async));
        }
        if every_entry && last >= first {
            ranges.push(((first, last + 1, None), false));
        }
        for (range, can_async) in ranges {
            let production = self.production_entries(range, can_async).await;
            let sim = self.sim_entries(range, can_async);
            same_entries(
                &format!("entries{range:?} (can_async {can_async})"),
                &production,
                &sim,
            )?;
        }
        Ok(())
    }

    fn compare_indexes(&self) -> Result<(), String> {
        let (production, sim) = (self.log(), &self.sim);
        same(
            "first_index",
            &LogStore::first_index(production),
            &LogStore::first_index(sim),
        )?;
        same(
            "last_index",
            &LogStore::last_index(production),
            &LogStore::last_index(sim),
        )?;
        same(
            "written_index",
            &LogStore::written_index(production),
            &LogStore::written_index(sim),
        )?;
        same(
            "compaction_point",
            &LogStore::compaction_point(production),
            &LogStore::compaction_point(sim),
        )?;
        let production_durable = LogStore::durable_index(production);
        let sim_durable = LogStore::durable_index(sim);
        // A running flush may have ended in production before the test completes it.
        let running: Vec<u64> = sim
            .log
            .borrow()
            .in_flight
            .iter()
            .map(|f| f.upto_index)
            .collect();
        let ahead_to_a_flush_end =
            production_durable > sim_durable && running.contains(&production_durable);
        if ahead_to_a_flush_end {
            self.notes
                .borrow_mut()
                .push("(durable index ahead in production)");
        }
        if production_durable != sim_durable && !ahead_to_a_flush_end {
            return Err(format!(
                "durable_index: production {production_durable}, sim {sim_durable} \
                 (flushes running to {running:?})"
            ));
        }
        let (production_view, sim_view) = (production.view(), sim.view());
        same(
            "Storage::first_index",
            &answer(production_view.first_index()),
            &answer(Storage::first_index(&sim_view)),
        )?;
        same(
            "Storage::last_index",
            &answer(production_view.last_index()),
            &answer(Storage::last_index(&sim_view)),
        )
    }

    fn compare_terms(&self) -> Result<(), String> {
        let (production, sim) = (self.log(), &self.sim);
        let (production_view, sim_view) = (production.view(), sim.view());
        let compaction = LogStore::compaction_point(sim).0;
        let last = LogStore::last_index(sim);
        for index in compaction.saturating_sub(2)..=last + 2 {
            same(
                &format!("term({index})"),
                &LogStore::term(production, index),
                &LogStore::term(sim, index),
            )?;
            same(
                &format!("Storage::term({index})"),
                &answer(production_view.term(index)),
                &answer(Storage::term(&sim_view, index)),
            )?;
        }
        Ok(())
    }

    fn compare_states_and_snapshots(&self) -> Result<(), String> {
        let (production, sim) = (self.log(), &self.sim);
        same(
            "hard_state",
            &LogStore::hard_state(production),
            &LogStore::hard_state(sim),
        )?;
        same(
            "conf_state",
            &LogStore::conf_state(production),
            &LogStore::conf_state(sim),
        )?;
        let (production_view, sim_view) = (production.view(), sim.view());
        let production_initial = answer(production_view.initial_state())
            .map(|state| (state.hard_state, state.conf_state));
        let sim_initial =
            answer(sim_view.initial_state()).map(|state| (state.hard_state, state.conf_state));
        same("initial_state", &production_initial, &sim_initial)?;
        let compaction = LogStore::compaction_point(sim).0;
        for request_index in [0, compaction, compaction + 1] {
            same(
                &format!("snapshot({request_index})"),
                &answer(production_view.snapshot(request_index, 0)),
                &answer(sim_view.snapshot(request_index, 0)),
            )?;
        }
        Ok(())
    }

    /// `entries` on the production view; a catch-up miss is served as the driver does
    /// (`CommitLog::read`, `stage_fetched`) and the call made again.
    async fn production_entries(
        &mut self,
        (low, high, max_size): Range,
        can_async: bool,
    ) -> Result<Vec<Entry>, String> {
        let context = || GetEntriesContext::empty(can_async);
        let mut log = self.log().clone();
        let first = answer(log.view().entries(low, high, max_size, context()));
        if first != Err("LogTemporarilyUnavailable".to_string()) {
            return first;
        }
        for miss in LogStore::take_misses(&mut log) {
            self.notes
                .borrow_mut()
                .push("(catch-up miss served: production)");
            let entries = log
                .read(miss.low, miss.high, miss.max_bytes)
                .await
                .map_err(|e| format!("catch-up read failed: {e}"))?;
            LogStore::stage_fetched(&mut log, miss.low, entries);
        }
        answer(log.view().entries(low, high, max_size, context()))
    }

    /// `entries` on the simulated view; a catch-up miss is served as the world does.
    fn sim_entries(
        &mut self,
        (low, high, max_size): Range,
        can_async: bool,
    ) -> Result<Vec<Entry>, String> {
        let context = || GetEntriesContext::empty(can_async);
        let first = answer(self.sim.view().entries(low, high, max_size, context()));
        if first != Err("LogTemporarilyUnavailable".to_string()) {
            return first;
        }
        for miss in LogStore::take_misses(&mut self.sim) {
            self.notes.borrow_mut().push("(catch-up miss served: sim)");
            let entries = self
                .sim
                .log
                .borrow()
                .read(miss.low, miss.high, Some(miss.max_bytes));
            LogStore::stage_fetched(&mut self.sim, miss.low, entries);
        }
        answer(self.sim.view().entries(low, high, max_size, context()))
    }
}

/// The state the next operation is drawn from (the simulated side's; the two agree).
struct Model {
    last: u64,
    written: u64,
    durable: u64,
    compaction: (u64, u64),
    last_term: u64,
    hard_state: HardStateRecord,
    conf_state: ConfStateRecord,
    in_flight: usize,
    unflushed: u64,
    kept: Vec<u64>,
    sim: SimLogStore,
}

impl Model {
    fn of(pair: &Pair) -> Model {
        let sim = &pair.sim;
        let last = LogStore::last_index(sim);
        Model {
            last,
            written: LogStore::written_index(sim),
            durable: LogStore::durable_index(sim),
            compaction: LogStore::compaction_point(sim),
            last_term: LogStore::term(sim, last).unwrap_or(0),
            hard_state: LogStore::hard_state(sim),
            conf_state: LogStore::conf_state(sim),
            in_flight: pair.flushes.len(),
            unflushed: LogStore::unflushed_bytes(sim),
            kept: pair.kept.keys().copied().collect(),
            sim: sim.clone(),
        }
    }

    /// Entries may be cut from here on (never committed ones).
    fn lowest_cut(&self) -> u64 {
        self.hard_state.commit.max(self.compaction.0) + 1
    }
}

fn draw_op(rng: &mut Prng, model: &Model) -> Op {
    loop {
        if let Some(op) = try_draw_op(rng, model) {
            if model.in_flight == 0 {
                return op;
            }
            // Disk work waits for running flushes (the log's exclusive gate); a crash
            // comes between flushes, or after they reached the disk unreported.
            return match op {
                Op::Crash if rng.chance(1, 2) => Op::CrashAfterUnreportedFlushes,
                Op::Disk(_) | Op::Crash => Op::CompleteFlush,
                op => op,
            };
        }
    }
}

fn try_draw_op(rng: &mut Prng, model: &Model) -> Option<Op> {
    match rng.range(0, 100) {
        0..=29 => Some(draw_append(rng, model)),
        30..=41 if model.in_flight < MAX_FLUSHES_IN_FLIGHT => Some(Op::StartFlush),
        42..=53 if model.in_flight > 0 => Some(Op::CompleteFlush),
        54..=63 => Some(Op::SetHardState(draw_hard_state(rng, model))),
        64..=66 => Some(Op::SetConfState(draw_conf_state(rng))),
        67..=71 => {
            let lowest = model.lowest_cut().max(model.written + 1);
            (lowest <= model.last).then(|| Op::TruncateUnwritten {
                from_index: rng.range(lowest, model.last + 1),
            })
        }
        72..=75 => {
            let lowest = model.lowest_cut();
            (lowest <= model.last).then(|| {
                Op::Disk(DiskWork::TruncateSuffix {
                    from_index: rng.range(lowest, model.last + 1),
                })
            })
        }
        76..=79 => Some(Op::Disk(DiskWork::PersistCommitIndex)),
        80..=84 => draw_snapshot_file(rng, model),
        85..=89 => {
            let candidates: Vec<u64> = model
                .kept
                .iter()
                .copied()
                .filter(|&index| index > model.compaction.0 && index <= model.durable)
                .collect();
            (!candidates.is_empty()).then(|| {
                let up_to_index = candidates[rng.range(0, candidates.len() as u64) as usize];
                Op::Disk(DiskWork::RemovePrefix { up_to_index })
            })
        }
        90..=92 => draw_install(rng, model),
        93..=96 => Some(Op::Crash),
        _ => None,
    }
}

fn draw_append(rng: &mut Prng, model: &Model) -> Op {
    if model.hard_state.term == 0 {
        return Op::SetHardState(HardStateRecord {
            term: 1,
            ..model.hard_state
        });
    }
    if model.unflushed > MAX_UNFLUSHED_PAYLOAD_BYTES {
        return if model.in_flight < MAX_FLUSHES_IN_FLIGHT {
            Op::StartFlush
        } else {
            Op::CompleteFlush
        };
    }
    let top_term = model.hard_state.term.max(model.last_term);
    let mut term = if rng.chance(3, 4) {
        top_term
    } else {
        rng.range(model.last_term, top_term + 1)
    };
    let count = rng.range(1, 9);
    let entries = (model.last + 1..=model.last + count)
        .map(|index| {
            term = rng.range(term, top_term + 1);
            draw_entry(rng, index, term)
        })
        .collect();
    Op::Append(entries)
}

fn draw_entry(rng: &mut Prng, index: u64, term: u64) -> Entry {
    let data_bytes = match rng.range(0, 10) {
        0 => 0,
        1..=6 => rng.range(1, 200),
        7 | 8 => rng.range(200, 2000),
        _ => rng.range(2000, MAX_DRAWN_PAYLOAD_BYTES - 64),
    };
    let context_bytes = if rng.chance(1, 5) {
        rng.range(1, 64)
    } else {
        0
    };
    let mut entry = Entry {
        index,
        term,
        data: random_bytes(rng, data_bytes).into(),
        context: random_bytes(rng, context_bytes).into(),
        ..Default::default()
    };
    entry.set_entry_type(match rng.range(0, 40) {
        0 => EntryType::EntryConfChange,
        1 => EntryType::EntryConfChangeV2,
        _ => EntryType::EntryNormal,
    });
    entry
}

fn random_bytes(rng: &mut Prng, count: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(count as usize);
    while (bytes.len() as u64) < count {
        let word = rng.next_u64().to_le_bytes();
        let take = (count as usize - bytes.len()).min(8);
        bytes.extend_from_slice(&word[..take]);
    }
    bytes
}

fn draw_hard_state(rng: &mut Prng, model: &Model) -> HardStateRecord {
    let mut hard_state = model.hard_state;
    match rng.range(0, 4) {
        0 => {
            hard_state.term = hard_state.term.max(model.last_term) + rng.range(1, 3);
            hard_state.vote = if rng.chance(1, 2) { 0 } else { rng.range(1, 6) };
        }
        1 if hard_state.vote == 0 => hard_state.vote = rng.range(1, 6),
        _ => {
            let lowest = hard_state.commit.max(model.compaction.0);
            hard_state.commit = rng.range(lowest, model.last.max(lowest) + 1);
        }
    }
    hard_state
}

fn draw_conf_state(rng: &mut Prng) -> ConfStateRecord {
    let voters = draw_members(rng, 3);
    let learners = draw_members(rng, 1);
    let joint = rng.chance(1, 4);
    let (voters_outgoing, learners_next) = if joint {
        (draw_members(rng, 3), draw_members(rng, 1))
    } else {
        (vec![], vec![])
    };
    ConfStateRecord {
        voters,
        learners,
        voters_outgoing,
        learners_next,
        auto_leave: joint && rng.chance(1, 2),
        index: rng.range(0, 100),
    }
}

fn draw_members(rng: &mut Prng, count: u64) -> Vec<u64> {
    let mut ids: Vec<u64> = (0..count).map(|_| rng.range(1, 10)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A snapshot of the applied state at `index` (data the shard's restore decodes).
fn snapshot_at(index: u64, term: u64, conf_state: &ConfStateRecord) -> Snapshot {
    let state = ShardState {
        applied_index: index,
        ..Default::default()
    };
    let mut snapshot = Snapshot {
        data: encode_state(&state, false).into(),
        ..Default::default()
    };
    let metadata = snapshot.mut_metadata();
    metadata.index = index;
    metadata.term = term;
    metadata.set_conf_state(to_conf_state(conf_state));
    snapshot
}

/// A snapshot file at an applied (so committed) index, as `maybe_take_snapshot` writes.
fn draw_snapshot_file(rng: &mut Prng, model: &Model) -> Option<Op> {
    let commit = model.hard_state.commit.min(model.last);
    if commit <= model.compaction.0 {
        return None;
    }
    let index = rng.range(model.compaction.0 + 1, commit + 1);
    // The simulated side's term; the comparisons say the two sides agree on it.
    let term = LogStore::term(&model.sim, index)?;
    let snapshot = snapshot_at(index, term, &model.conf_state);
    Some(Op::Disk(DiskWork::WriteSnapshotFile { snapshot }))
}

/// A leader's snapshot past the commit index, as raft-rs hands one to a follower.
fn draw_install(rng: &mut Prng, model: &Model) -> Option<Op> {
    let top_term = model.hard_state.term.max(model.last_term);
    if top_term == 0 {
        return None;
    }
    let lowest = model.hard_state.commit.max(model.compaction.0) + 1;
    let index = rng.range(lowest, model.last.max(lowest) + 20);
    let term = rng.range(model.last_term.max(1), top_term + 1);
    let conf_state = if rng.chance(1, 2) {
        model.conf_state.clone()
    } else {
        draw_conf_state(rng)
    };
    let snapshot = snapshot_at(index, term, &conf_state);
    Some(Op::Disk(DiskWork::InstallSnapshot { snapshot }))
}

/// Runs one seed; on a disagreement, the report names the op and every op before it.
async fn run_sequence(
    seed: u64,
    journal: Arc<Mutex<Vec<String>>>,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut rng = Prng::new(seed);
    let mut reads = Prng::new(seed ^ 0x5eed_4ead);
    let started = std::time::Instant::now();
    let mut pair = Pair::new(seed, &mut rng).await;
    tally.add("(open)", started.elapsed());
    let operations = rng.range(OPERATIONS.0, OPERATIONS.1);
    let record = |line: String| journal.lock().expect("journal").push(line);
    for position in 0..operations {
        let model = Model::of(&pair);
        let op = draw_op(&mut rng, &model);
        record(format!("{position:4}: {op:?}"));
        let started = std::time::Instant::now();
        pair.apply(&op).await?;
        tally.add(op.kind(), started.elapsed());
        let every_entry = matches!(op, Op::Crash | Op::CrashAfterUnreportedFlushes);
        let started = std::time::Instant::now();
        pair.compare(&mut reads, every_entry).await?;
        tally.add("(compare)", started.elapsed());
        for note in pair.notes.take() {
            tally.add(note, Duration::ZERO);
        }
    }
    while !pair.flushes.is_empty() {
        record("end: complete flush".to_string());
        pair.apply(&Op::CompleteFlush).await?;
    }
    record("end: crash and reopen".to_string());
    pair.apply(&Op::Crash).await?;
    pair.compare(&mut reads, true).await
}

/// Operations run per kind and the time they took: what the sequences covered.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, (u64, Duration)>);

impl Tally {
    fn add(&mut self, kind: &'static str, took: Duration) {
        let slot = self.0.entry(kind).or_default();
        slot.0 += 1;
        slot.1 += took;
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (kind, (count, took)) in &self.0 {
            writeln!(
                f,
                "  {kind:<36} {count:>7} {:>9.1} ms",
                took.as_secs_f64() * 1e3
            )?;
        }
        Ok(())
    }
}

/// The seeds to run: the one named by `KEEL_DIFF_SEED`, else 1..=`KEEL_DIFF_SEQUENCES`,
/// else 1..=SEQUENCES.
fn seeds() -> Vec<u64> {
    match std::env::var(SEED_VARIABLE) {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            vec![parsed.unwrap_or_else(|_| panic!("{SEED_VARIABLE}={text} is not a seed"))]
        }
        Err(_) => {
            let count = std::env::var(SEQUENCES_VARIABLE).map_or(SEQUENCES, |text| {
                text.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{SEQUENCES_VARIABLE}={text} is not a count"))
            });
            (1..=count).collect()
        }
    }
}

fn failure_report(seed: u64, journal: &[String], message: &str) -> String {
    format!(
        "the simulator's log store disagrees with the CommitLog\n  seed {seed:#x}, after op \
         {}: {message}\n  replay: {SEED_VARIABLE}={seed:#x} cargo test --lib \
         sim_store_agrees\n  ops so far:\n    {}",
        journal.len().saturating_sub(1),
        journal.join("\n    ")
    )
}

#[test]
fn sim_log_store_agrees_with_the_commit_log() {
    let journal = Arc::new(Mutex::new(Vec::new()));
    let current_seed = Arc::new(Mutex::new(0u64));
    let (body_journal, body_seed) = (journal.clone(), current_seed.clone());
    let started = std::time::Instant::now();
    let outcome = crate::runtime::run_on_executor("sim-store-agrees", 512 * 1024, move || {
        run_seeds(body_journal, body_seed)
    });
    let journal = journal.lock().expect("journal").clone();
    let seed = *current_seed.lock().expect("seed");
    match outcome {
        Ok(Ok(tally)) => eprintln!(
            "sim_store_agrees: {} sequences in {:?}; operations and their time:\n{tally}",
            seeds().len(),
            started.elapsed()
        ),
        Ok(Err((seed, message))) => panic!("{}", failure_report(seed, &journal, &message)),
        Err(error) => panic!(
            "{}",
            failure_report(seed, &journal, &format!("the run panicked ({error})"))
        ),
    }
}

/// Every seed on one executor; stops at the first disagreement.
async fn run_seeds(
    journal: Arc<Mutex<Vec<String>>>,
    current_seed: Arc<Mutex<u64>>,
) -> Result<Tally, (u64, String)> {
    let mut tally = Tally::default();
    for seed in seeds() {
        *current_seed.lock().expect("seed") = seed;
        journal.lock().expect("journal").clear();
        if let Err(message) = run_sequence(seed, journal.clone(), &mut tally).await {
            return Err((seed, message));
        }
    }
    Ok(tally)
}
