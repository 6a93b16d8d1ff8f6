//! The Ready cycle of a replica (raft-rs 0.7 asynchronous persistence), in the order
//! `../shared/SIMULATION.md` R4-R7 give:
//!
//! ```text
//! ready() ─▶ send messages (heartbeat answers too) ─▶ snapshot, or a cut of written
//!            entries? park it: Disk effect, every other input queued until DiskDone
//!         ─▶ append to the store, hard state ─▶ outbox[number] = persisted messages
//!         ─▶ advance_append_async ─▶ apply committed ─▶ flush (≤ MAX_FLUSHES_IN_FLIGHT)
//! FlushDone(ok) ─▶ on_persist_ready ─▶ release outbox ≤ number ─▶ next flush
//! FlushDone(err) / append error ─▶ failed: outbox purged, the replica goes silent
//! ```
//!
//! Never: advancing before the store has the entries (raft-rs reads them from the store
//! from then on), releasing an acknowledgement before its flush, or waiting inside a pass.

use raft::eraftpb::{Entry, Message, MessageType};
use raft::StateRole;

use crate::broker::snapshot::decode_state;
use crate::constants::MAX_OUTBOX_READIES;
use crate::log::HardStateRecord;
use crate::replication::events::{DiskWork, Effect, FlushId};
use crate::replication::log_store::{LogStore, StorageFailure};
use crate::replication::replica::{entry_bytes, Parked, Replica};

/// Flushes of one replica's log running at once (the next one's writes overlap the
/// previous one's sync).
pub const MAX_FLUSHES_IN_FLIGHT: usize = 2;

impl<S: LogStore> Replica<S> {
    /// Does every Ready pass there is, unless one is parked or the replica is silent.
    pub(crate) fn drain_ready(&mut self, effects: &mut Vec<Effect>) {
        if self.failed.is_some() && !self.is_silent() {
            // The H6 defect: a failed leader goes on heartbeating (no Ready is taken
            // again: nothing it decides can be stored).
            let messages = std::mem::take(&mut self.raw.raft.msgs);
            return self.send(messages, effects);
        }
        while self.parked.is_none() && self.failed.is_none() && self.raw.has_ready() {
            let mut ready = self.raw.ready();
            let (heartbeat_answers, persisted): (Vec<Message>, Vec<Message>) = ready
                .take_persisted_messages()
                .into_iter()
                .partition(|m| m.get_msg_type() == MessageType::MsgHeartbeatResponse);
            // A follower's heartbeat answers claim nothing about its log or vote: sent at
            // once, they keep a leader whose followers' disks are slow from losing its
            // check-quorum lease.
            let mut messages = ready.take_messages();
            messages.extend(heartbeat_answers);
            self.send(messages, effects);
            if !ready.snapshot().is_empty() {
                let snapshot = ready.snapshot().clone();
                self.park_for_snapshot(ready, persisted, snapshot, effects);
                return;
            }
            if let Some(from_index) = self.conflicting_written_entry(&ready) {
                let work = DiskWork::TruncateSuffix { from_index };
                self.park(ready, persisted, work, None, effects);
                return;
            }
            self.finish_ready(ready, persisted, false, effects);
        }
    }

    /// The first index of the Ready's entries when they replace entries already handed
    /// to a flush (cutting those needs the disk); entries only in memory are cut here.
    fn conflicting_written_entry(&mut self, ready: &raft::Ready) -> Option<u64> {
        let first = ready.entries().first()?.index;
        if first > self.store.last_index() {
            return None;
        }
        if first <= self.store.written_index() {
            return Some(first);
        }
        if let Err(failure) = self.store.truncate_unwritten_suffix(first) {
            self.fail(failure, &mut Vec::new());
        }
        self.drop_acks_from(first);
        None
    }

    fn park_for_snapshot(
        &mut self,
        ready: raft::Ready,
        persisted: Vec<Message>,
        snapshot: raft::eraftpb::Snapshot,
        effects: &mut Vec<Effect>,
    ) {
        let index = snapshot.get_metadata().index;
        match decode_state(&snapshot.data) {
            Ok(mut state) => {
                state.forget_below(index + 1);
                let work = DiskWork::InstallSnapshot { snapshot };
                self.park(ready, persisted, work, Some((index, state)), effects);
            }
            Err(error) => {
                // A leader's snapshot that does not decode: refuse to go on with it.
                let failure = StorageFailure::Io {
                    detail: format!("the leader's snapshot at {index} does not decode: {error}"),
                };
                self.fail(failure, effects);
            }
        }
    }

    fn park(
        &mut self,
        ready: raft::Ready,
        persisted: Vec<Message>,
        work: DiskWork,
        install: Option<(u64, crate::broker::state::ShardState)>,
        effects: &mut Vec<Effect>,
    ) {
        assert!(
            self.parked.is_none(),
            "a Ready is parked (a snapshot installed, a suffix cut) while another is pending"
        );
        let op = self.next_op_id();
        self.disk_ops.insert(op, work.clone());
        effects.push(Effect::Disk { op, work });
        self.parked = Some(Parked {
            ready,
            op,
            persisted,
            queue: Default::default(),
            ticks: 0,
            install,
        });
    }

    /// The parked Ready's disk work ended: finish the Ready, then take the queued inputs.
    pub(crate) fn unpark(
        &mut self,
        outcome: Result<(), StorageFailure>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(parked) = self.parked.take() else {
            return;
        };
        let work = self.disk_ops.remove(&parked.op);
        if let Some(DiskWork::TruncateSuffix { from_index }) = work {
            self.drop_acks_from(from_index);
        }
        match outcome {
            Err(failure) => self.fail(failure, effects),
            Ok(()) => {
                let installed = parked.install.is_some();
                if let Some((index, state)) = parked.install {
                    self.installed_snapshot(index, state, effects);
                    self.refresh_membership(true, effects);
                }
                self.durable_index = self.store.durable_index();
                self.finish_ready(parked.ready, parked.persisted, installed, effects);
            }
        }
        // Ticks that passed while the disk worked do not all count: a paused replica
        // catches up one heartbeat's worth, as the real tick loop does.
        let ticks = parked.ticks.min(self.config.heartbeat_ticks as u64);
        for _ in 0..ticks {
            if !self.is_silent() && self.parked.is_none() {
                self.raw.tick();
            }
        }
        self.after_input(effects);
        for input in parked.queue {
            self.handle(input, effects);
        }
    }

    /// Entries from `from_index` on are being cut: acknowledgements of them that wait in
    /// the outbox must never leave (a leader of the old term would count entries this
    /// replica no longer has: seeds 0x3bcf, 0x1aa2). Dropped, they are as good as lost.
    fn drop_acks_from(&mut self, from_index: u64) {
        for (_, messages) in self.outbox.iter_mut() {
            messages.retain(|m| {
                m.get_msg_type() != MessageType::MsgAppendResponse
                    || m.reject
                    || m.index < from_index
            });
        }
    }

    /// Appends the Ready's entries and hard state, queues its persisted messages, then
    /// advances raft-rs, applies and flushes (R4). `snapshot_durable`: the Ready's snapshot
    /// is already installed on disk (its own disk work), so raft-rs hears at once that
    /// this Ready persisted: it forgets its unstable snapshot at the advance, and until
    /// its applied index reaches the snapshot a campaign would read compacted entries
    /// (raft.rs "unexpected error getting unapplied entries": seed 0x9181). Its messages
    /// still wait for the flush of the hard state.
    fn finish_ready(
        &mut self,
        mut ready: raft::Ready,
        persisted: Vec<Message>,
        snapshot_durable: bool,
        effects: &mut Vec<Effect>,
    ) {
        let number = ready.number();
        if self.config.defects.advance_before_append {
            return self.finish_ready_advancing_first(ready, persisted, effects);
        }
        if !ready.entries().is_empty() {
            if let Err(failure) = self.store.append(ready.entries()) {
                if self.config.defects.ack_failed_append {
                    tracing::warn!(%failure, "append failed; carrying on (defect switch)");
                } else {
                    return self.fail(failure, effects);
                }
            }
        }
        if let Some(hard_state) = ready.hs() {
            self.store.set_hard_state(HardStateRecord {
                term: hard_state.term,
                vote: hard_state.vote,
                commit: hard_state.commit,
            });
        }
        if !persisted.is_empty() && self.failed.is_none() {
            self.queue_persisted(number, persisted);
        }
        let committed = ready.take_committed_entries();
        self.raw.advance_append_async(ready);
        if snapshot_durable {
            self.raw.on_persist_ready(number);
        }
        if self.failed.is_none() && !self.config.defects.ack_failed_append {
            // A1: raft-rs now reads the log from the store alone.
            let raft_last = self.raw.raft.raft_log.last_index();
            assert_eq!(
                self.store.last_index(),
                raft_last,
                "the store holds every entry raft-rs counts as stable (A1)"
            );
        }
        self.after_append(number, committed, effects);
    }

    /// Queues a Ready's persisted messages until its flush. At `MAX_OUTBOX_READIES` they
    /// join the newest entry, which then waits for this Ready's flush (later than its own:
    /// holding an answer longer is always safe). Few arrive then: peer messages that
    /// would make more are dropped at ingress while the outbox is full.
    fn queue_persisted(&mut self, number: u64, persisted: Vec<Message>) {
        if self.outbox.len() >= MAX_OUTBOX_READIES {
            if let Some((newest, messages)) = self.outbox.back_mut() {
                assert!(*newest < number, "Ready numbers only grow in the outbox");
                *newest = number;
                messages.extend(persisted);
                return;
            }
        }
        self.outbox.push_back((number, persisted));
    }

    fn after_append(&mut self, number: u64, committed: Vec<Entry>, effects: &mut Vec<Effect>) {
        assert!(number > self.appended_ready, "Ready numbers only grow");
        self.appended_ready = number;
        self.apply(committed, effects);
        self.raw.advance_apply();
        self.maybe_flush(effects);
    }

    /// The H1 defect: raft-rs is told the entries are stable before the store has them,
    /// and the append waits for room while other inputs go on.
    fn finish_ready_advancing_first(
        &mut self,
        mut ready: raft::Ready,
        persisted: Vec<Message>,
        effects: &mut Vec<Effect>,
    ) {
        let number = ready.number();
        let entries = ready.entries().clone();
        if let Some(hard_state) = ready.hs() {
            self.store.set_hard_state(HardStateRecord {
                term: hard_state.term,
                vote: hard_state.vote,
                commit: hard_state.commit,
            });
        }
        if !persisted.is_empty() {
            self.queue_persisted(number, persisted);
        }
        let committed = ready.take_committed_entries();
        self.raw.advance_append_async(ready);
        let bytes: u64 = entries.iter().map(entry_bytes).sum();
        let busy = !self.flushes.is_empty() || !self.deferred_appends.is_empty();
        if busy && self.store.unflushed_bytes() + bytes > self.config.max_unflushed_bytes / 8 {
            self.deferred_appends.push_back((number, entries));
        } else {
            self.append_replacing(&entries);
        }
        self.after_append(number, committed, effects);
    }

    /// The old append of the H1 defect: cut whatever the entries replace, then append.
    fn append_replacing(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        if first.index <= self.store.last_index() && first.index > self.store.written_index() {
            let _ = self.store.truncate_unwritten_suffix(first.index);
        }
        if first.index == self.store.last_index() + 1 {
            let _ = self.store.append(entries);
        }
    }

    /// Starts a flush of everything appended so far, unless `MAX_FLUSHES_IN_FLIGHT` run
    /// or the newest Ready is already covered (group commit: entries appended while
    /// flushes run wait for the next one, which takes them all).
    pub(crate) fn maybe_flush(&mut self, effects: &mut Vec<Effect>) {
        if self.is_silent() || self.parked.is_some() {
            return;
        }
        if self.flushes.len() >= MAX_FLUSHES_IN_FLIGHT || self.appended_ready <= self.flushing_ready
        {
            return;
        }
        let flush = self.next_flush_id();
        self.flushing_ready = self.appended_ready;
        self.flushes.push_back((flush, self.appended_ready));
        effects.push(Effect::Flush { flush });
    }

    pub(crate) fn on_flush_done(
        &mut self,
        flush: FlushId,
        outcome: Result<u64, StorageFailure>,
        effects: &mut Vec<Effect>,
    ) {
        self.early_flushes.insert(flush, outcome);
        // Flushes end in start order (A2); a result that overtook an earlier one waits.
        while let Some(&(next, number)) = self.flushes.front() {
            let Some(outcome) = self.early_flushes.remove(&next) else {
                break;
            };
            self.flushes.pop_front();
            match outcome {
                Ok(durable) => self.flushed(number, durable, effects),
                Err(failure) => {
                    self.fail(failure, effects);
                    if !self.config.defects.failed_leader_keeps_leading {
                        return;
                    }
                }
            }
        }
        assert!(
            self.early_flushes.len() <= MAX_FLUSHES_IN_FLIGHT,
            "flush results for flushes never started"
        );
        self.maybe_flush(effects);
    }

    fn flushed(&mut self, number: u64, durable: u64, effects: &mut Vec<Effect>) {
        assert!(
            number > self.persisted_ready,
            "persisted Ready numbers only grow: {number} after {}",
            self.persisted_ready
        );
        self.persisted_ready = number;
        // The store knows what is durable (a result that waited behind disk work may be
        // older than a snapshot install); it only grows outside such work (A2).
        let now_durable = self.store.durable_index();
        assert!(
            now_durable >= self.durable_index,
            "the durable index never decreases (A2): {now_durable} after {}",
            self.durable_index
        );
        self.durable_index = now_durable;
        if self.config.defects.advance_before_append {
            while let Some((_, entries)) = self.deferred_appends.pop_front() {
                self.append_replacing(&entries);
            }
        }
        self.raw.on_persist_ready(number);
        let mut released = Vec::new();
        while self.outbox.front().is_some_and(|(n, _)| *n <= number) {
            if let Some((_, messages)) = self.outbox.pop_front() {
                released.extend(messages);
            }
        }
        if !self.config.defects.ack_failed_append && !self.config.defects.advance_before_append {
            for message in &released {
                check_durable_answer(message, durable);
            }
        }
        self.send(released, effects);
    }

    /// Groups messages by peer, in order, into `Send` effects; notes snapshots sent.
    pub(crate) fn send(&mut self, messages: Vec<Message>, effects: &mut Vec<Effect>) {
        let mut by_peer: Vec<(u64, Vec<Message>)> = Vec::new();
        for message in messages {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshots_in_flight.insert(message.to, self.ticks);
                self.counts.snapshots_sent += 1;
            }
            match by_peer.iter_mut().find(|(to, _)| *to == message.to) {
                Some((_, list)) => list.push(message),
                None => by_peer.push((message.to, vec![message])),
            }
        }
        for (to, messages) in by_peer {
            effects.push(Effect::Send { to, messages });
        }
    }

    /// The storage failed (R6): purge the outbox, answer waiters, go silent. A leader
    /// first asks its most current follower to take over (`MsgTimeoutNow`: no local
    /// write needed), so the group does not wait for an election timeout.
    pub(crate) fn fail(&mut self, failure: StorageFailure, effects: &mut Vec<Effect>) {
        if self.failed.is_some() {
            return;
        }
        tracing::error!(group = self.config.group_id, %failure, "storage failed: this replica stops taking part in its group");
        self.failed = Some(failure.clone());
        self.outbox.clear();
        // With peers, another replica may still commit these entries: their fate is
        // unknown. Alone, the group takes no more writes: say why.
        let answer = if self.voter_count() == 1 {
            crate::replication::events::ShardError::Storage(failure.to_string())
        } else {
            crate::replication::events::ShardError::Indeterminate
        };
        self.answer_all_waiters(answer, effects);
        if self.config.defects.failed_leader_keeps_leading {
            return;
        }
        if self.raw.raft.state == StateRole::Leader {
            if let Some(target) = self.most_current_follower() {
                let mut message = Message::default();
                message.set_msg_type(MessageType::MsgTimeoutNow);
                message.to = target;
                message.from = self.config.replica_id;
                message.term = self.raw.raft.term;
                effects.push(Effect::Send {
                    to: target,
                    messages: vec![message],
                });
            }
        }
        effects.push(Effect::Failed { failure });
    }
}

/// A3: an append acknowledgement leaves only for entries that are durable.
fn check_durable_answer(message: &Message, durable: u64) {
    if message.get_msg_type() == MessageType::MsgAppendResponse && !message.reject {
        assert!(
            message.index <= durable,
            "an append is acknowledged up to {} with only {durable} durable (A3)",
            message.index
        );
    }
}
