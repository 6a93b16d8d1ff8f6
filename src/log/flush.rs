//! The group-commit flush, pipelined: many flushes may be in flight at once.
//!
//! ```text
//! flush k   : plan ─ writes ───────────┐ sync k ───────────────▶ durable ≤ upto(k)
//! flush k+1 :          plan ─ writes ──┴(first write waits)──┐ sync k+1 ─▶ durable ≤ upto(k+1)
//! ```
//!
//! - Planning (taking the pending bytes, creating segment files, issuing the writes) is
//!   serialized, so flushes are ordered by the bytes they took.
//! - Writes of consecutive flushes overlap, keeping the device queue full. Only one write
//!   of flush k+1 can touch a block flush k also wrote: its first, which holds the partly
//!   filled block flush k ended in. That write waits until every write of flush k is done,
//!   so the newer content of that block always lands last.
//! - Syncs run strictly in flush order (each waits for the previous one), and a flush
//!   syncs only after its own writes and every earlier write are complete; so when flush k
//!   reports `upto(k)` durable, every byte up to it was written before an fdatasync that
//!   has returned, or (`SyncMethod::DsyncWrites`) by O_DSYNC writes that have all returned.
//!   The meta file is written in the same order, after the entries.
//! - Writes in flight are bounded across flushes (`MAX_WRITES_IN_FLIGHT`), and bytes taken
//!   by unfinished flushes count against `max_unflushed_bytes`.
//! - The flush that makes a sealed segment (one with a newer segment after it) wholly
//!   durable then writes its index file.
//! - Any failed write or fdatasync poisons the log; later flushes report `Poisoned`, never
//!   a durable index.

use std::path::PathBuf;
use std::rc::Rc;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::io::{DmaBuffer, DmaFile};
use glommio::sync::Semaphore;

use crate::log::commit_log::{CommitLog, FlushPlan};
use crate::log::config::SyncMethod;
use crate::log::error::{LogError, LogResult};
use crate::log::io;
use crate::log::segment_index::{self, SegmentIndex};
use crate::log::write_buffer::{FlushWrite, WriteBytes};

/// A one-shot signal with one waiter: fires when its `SignalSender` is dropped.
pub struct Signal(LocalReceiver<()>);

/// The firing end of a `Signal`.
pub struct SignalSender(#[allow(dead_code)] LocalSender<()>);

fn signal() -> (SignalSender, Signal) {
    let (sender, receiver) = local_channel::new_bounded(1);
    (SignalSender(sender), Signal(receiver))
}

impl Signal {
    /// Waits until the sender is dropped.
    pub async fn wait(self) {
        while self.0.recv().await.is_some() {}
    }
}

/// A flush that has issued its writes.
struct IssuedFlush {
    plan_upto_index: u64,
    plan_bytes: u64,
    meta: Option<(crate::log::meta::MetaState, u64)>,
    files: Vec<(Rc<DmaFile>, PathBuf)>,
    writes: Vec<glommio::Task<LogResult<Option<DmaBuffer>>>>,
    previous_writes: Option<Signal>,
    previous_sync: Option<Signal>,
    writes_done: SignalSender,
    sync_done: SignalSender,
}

/// What one flush did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flushed {
    /// The durable index after it.
    pub durable: u64,
    /// Bytes of the log it wrote, in whole 4 KiB blocks (a partly filled last block is
    /// written again by the next flush).
    pub bytes: u64,
    /// It wrote something (entries or the hard state); else everything was durable.
    pub wrote: bool,
}

impl CommitLog {
    /// Makes every appended entry (and a changed hard state) durable; returns the durable
    /// index. Appends may go on while flushes run; each flush writes what was appended
    /// before it began, and consecutive flushes overlap on the device (see the module).
    pub async fn flush(&self) -> LogResult<u64> {
        self.flush_counted().await.map(|flushed| flushed.durable)
    }

    /// `flush`, telling how many entry bytes this flush wrote.
    pub async fn flush_counted(&self) -> LogResult<Flushed> {
        {
            let state = self.state.borrow();
            state.check_usable()?;
            if state.durable_index >= state.last_index && !state.meta_dirty() {
                return Ok(Flushed {
                    durable: state.durable_index,
                    bytes: 0,
                    wrote: false,
                });
            }
        }
        let _gate = self.gate.read().await.map_err(|_| LogError::Poisoned)?;
        let issued = self.issue_flush().await;
        let result = match issued {
            Ok(issued) => {
                let bytes = issued.plan_bytes;
                // A flush queued behind another may find nothing left to write.
                let wrote = bytes > 0 || issued.meta.is_some();
                let durable = self.finish_flush(issued).await;
                durable.map(|durable| Flushed {
                    durable,
                    bytes,
                    wrote,
                })
            }
            Err(error) => Err(error),
        };
        result.inspect_err(|error| {
            let mut state = self.state.borrow_mut();
            if !state.poisoned {
                tracing::error!(%error, "flush failed; the log is poisoned");
            }
            state.poisoned = true;
        })
    }

    /// Plans the flush, creates new segment files and issues the writes, under the plan
    /// lock; joins the ordering chains.
    async fn issue_flush(&self) -> LogResult<IssuedFlush> {
        let _plan_permit = self
            .plan_lock
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Poisoned)?;
        let mut plan: FlushPlan = {
            let mut state = self.state.borrow_mut();
            state.check_usable()?;
            state.plan_flush()
        };
        for segment_first_index in std::mem::take(&mut plan.missing_files) {
            self.materialize_segment(segment_first_index).await?;
        }
        let (writes_done, writes_signal) = signal();
        let (sync_done, sync_signal) = signal();
        let mut state = self.state.borrow_mut();
        let mut previous_writes = state.writes_chain.replace(writes_signal);
        let previous_sync = state.sync_chain.replace(sync_signal);
        let mut files: Vec<(Rc<DmaFile>, PathBuf)> = Vec::new();
        let mut writes = Vec::with_capacity(plan.pending_writes.len());
        for write in std::mem::take(&mut plan.pending_writes) {
            let segment = state.segment(write.segment_first_index);
            let file = segment.file.clone().ok_or(LogError::Poisoned)?;
            if !files.iter().any(|(f, _)| Rc::ptr_eq(f, &file)) {
                files.push((file.clone(), segment.path.clone()));
            }
            let wait_for = if writes.is_empty() {
                previous_writes.take()
            } else {
                None
            };
            let slots = self.write_slots.clone();
            let path = segment.path.clone();
            writes.push(glommio::spawn_local(write_when_ready(
                wait_for, slots, file, path, write,
            )));
        }
        Ok(IssuedFlush {
            plan_upto_index: plan.upto_index,
            plan_bytes: plan.bytes,
            meta: plan.meta,
            files,
            writes,
            previous_writes,
            previous_sync,
            writes_done,
            sync_done,
        })
    }

    /// Waits for the writes, then (in flush order) syncs and writes the meta file.
    async fn finish_flush(&self, issued: IssuedFlush) -> LogResult<u64> {
        let mut outcome = Ok(());
        for task in issued.writes {
            match task.await {
                Ok(Some(buffer)) => self.state.borrow_mut().buffer.recycle(buffer),
                Ok(None) => {}
                Err(error) => outcome = Err(error),
            }
        }
        if let Some(previous) = issued.previous_writes {
            // No write of ours waited for the previous flush: wait here, so our signal
            // still means "every write up to ours is complete".
            previous.wait().await;
        }
        drop(issued.writes_done);
        if let Some(previous) = issued.previous_sync {
            previous.wait().await;
        }
        self.state.borrow_mut().in_flight_bytes -= issued.plan_bytes;
        outcome?;
        self.state.borrow().check_usable()?;
        if self.state.borrow().config.sync == SyncMethod::Fdatasync {
            for (file, path) in &issued.files {
                io::fdatasync(file, path).await?;
            }
        }
        if let Some((meta, generation)) = issued.meta {
            if generation > self.state.borrow().meta_written_generation {
                self.write_meta(&meta, issued.plan_upto_index).await?;
                self.state.borrow_mut().meta_written_generation = generation;
            }
        }
        let durable = {
            let mut state = self.state.borrow_mut();
            state.durable_index = state.durable_index.max(issued.plan_upto_index);
            let durable = state.durable_index;
            state.cache.evict(durable);
            durable
        };
        self.persist_sealed_indexes(durable).await?;
        drop(issued.sync_done);
        Ok(durable)
    }

    /// Writes the index file of every sealed segment that is wholly durable and has none
    /// (once per segment, by the flush that made its last entry durable).
    pub(super) async fn persist_sealed_indexes(&self, durable: u64) -> LogResult<()> {
        loop {
            let next = {
                let state = self.state.borrow();
                let sealed = &state.segments[..state.segments.len().saturating_sub(1)];
                sealed
                    .iter()
                    .find(|s| !s.index_persisted && s.file.is_some() && s.last_index <= durable)
                    .map(|s| {
                        let index = SegmentIndex {
                            first_index: s.first_index,
                            last_index: s.last_index,
                            data_end: s.data_end,
                            points: s.sparse.points().to_vec(),
                            terms: s.term_runs.clone(),
                        };
                        (state.dir.clone(), s.path.clone(), index)
                    })
            };
            let Some((dir, path, index)) = next else {
                return Ok(());
            };
            if index.last_index >= index.first_index {
                segment_index::write(&dir, &path, &index).await?;
            }
            let mut state = self.state.borrow_mut();
            if let Some(segment) = state.segments.iter_mut().find(|s| s.path == path) {
                segment.index_persisted = true;
            }
        }
    }
}

/// One write of a flush: waits for the previous flush's writes if told to, takes a write
/// slot, writes, and hands back a pooled buffer once done.
async fn write_when_ready(
    wait_for: Option<Signal>,
    slots: Rc<Semaphore>,
    file: Rc<DmaFile>,
    path: PathBuf,
    write: FlushWrite,
) -> LogResult<Option<DmaBuffer>> {
    if let Some(previous) = wait_for {
        previous.wait().await;
    }
    let _slot = slots
        .acquire_static_permit(1)
        .await
        .map_err(|_| LogError::Poisoned)?;
    match write.buffer {
        WriteBytes::Trimmed(buffer) => {
            io::write_all_at(&file, &path, buffer, write.file_offset).await?;
            Ok(None)
        }
        WriteBytes::Pooled(buffer) => {
            io::write_shared_at(&file, &path, buffer.clone(), write.file_offset).await?;
            Ok(Rc::try_unwrap(buffer).ok())
        }
    }
}
