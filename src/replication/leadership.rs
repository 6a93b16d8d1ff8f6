//! Time and leadership: ticks, seeded election timeouts, leader changes, balancing,
//! hand-over before a stop, and snapshots that were lost on the way.
//!
//! Everything here counts ticks; nothing reads a clock. The election timeout raft-rs
//! draws from its own unseeded generator is overwritten from the replica's seeded one
//! after every change of term or role (A6).

use raft::{ProgressState, SnapshotStatus, StateRole};

use crate::replication::events::{Effect, ShardError};
use crate::replication::log_store::LogStore;
use crate::replication::replica::{
    preferred_leader_of, Replica, ReplicaCounts, CURRENT_FOLLOWER_LAG,
};

impl<S: LogStore> Replica<S> {
    pub(crate) fn on_tick(&mut self, now_ms: u64, effects: &mut Vec<Effect>) {
        self.now_ms = now_ms;
        self.ticks += 1;
        self.raw.tick();
        self.resend_lost_snapshots();
        self.balance_leadership();
        self.shed_leadership_for_space();
        self.check_hand_over(effects);
        self.maintain_storage(effects);
        if self
            .ticks
            .is_multiple_of(crate::constants::TOPIC_MIRROR_TICKS)
        {
            self.mirror_topics();
        }
    }

    /// The peer cannot be reached (its connection to us ended, or ours to it failed).
    /// When it is this follower's leader, the follower stands for election within
    /// `LEADER_LOST_ELECTION_TICKS` (seeded) instead of waiting out the rest of its
    /// election timeout: a killed leader's connections close at once, so the group need
    /// not wait 100-200 ms to notice. Timing only, never safety: the election is the usual
    /// one (pre-vote first), and followers that still hear from a live leader refuse it.
    pub(crate) fn on_peer_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
        let raft = &mut self.raw.raft;
        if raft.state != StateRole::Follower || peer == raft::INVALID_ID || raft.leader_id != peer {
            return;
        }
        let left = self
            .rng
            .range(1, crate::constants::LEADER_LOST_ELECTION_TICKS + 1) as usize;
        // At least the base timeout: the lease on the lost leader ends now, so this
        // follower's vote is free for the first of its peers to stand.
        let elapsed = raft
            .randomized_election_timeout()
            .saturating_sub(left)
            .max(raft.election_timeout());
        raft.election_elapsed = raft.election_elapsed.max(elapsed);
    }

    /// Draws the election timeout from the seeded generator (A6).
    pub(crate) fn draw_election_timeout(&mut self) {
        let low = self.config.election_ticks as u64;
        let timeout = self.rng.range(low, 2 * low) as usize;
        self.raw.raft.set_randomized_election_timeout(timeout);
    }

    /// After an input: a new term or role draws a new timeout; a new leader is announced;
    /// a lost leadership answers the waiters it leaves behind.
    pub(crate) fn note_role(&mut self, effects: &mut Vec<Effect>) {
        let now = (self.raw.raft.term, self.raw.raft.state);
        if now != self.last_term_role {
            self.last_term_role = now;
            self.draw_election_timeout();
        }
        let leader = self.leader_id();
        if leader != self.last_leader {
            self.last_leader = leader;
            effects.push(Effect::LeaderChanged {
                leader,
                term: self.raw.raft.term,
            });
        }
        let leading = self.is_leader();
        if leading && !self.was_leader {
            // raft-rs appended its empty entry of the new term last.
            self.term_start_index = self.raw.raft.raft_log.last_index();
        }
        if self.was_leader && !leading {
            self.preferred_current_ticks = 0;
            self.answer_all_waiters(ShardError::Indeterminate, effects);
        }
        self.was_leader = leading;
    }

    /// Stop: hand leadership to the most current follower and take no more writes.
    pub(crate) fn on_hand_over(&mut self, effects: &mut Vec<Effect>) {
        if let Some((_, target)) = self.handing_over {
            // Asked again (the stop's last step): answer at once once it is over, so the
            // node stops before a balancer could hand the group back to it.
            if self.hand_over_done {
                let handed_to = target.filter(|_| !self.is_leader());
                effects.push(Effect::HandOverDone { handed_to });
            }
            return;
        }
        let target = if self.is_leader() {
            self.most_current_follower()
        } else {
            None
        };
        self.handing_over = Some((self.ticks, target));
        match target {
            Some(target) => self.transfer_leadership(target),
            None => {
                self.hand_over_done = true;
                effects.push(Effect::HandOverDone { handed_to: None });
            }
        }
    }

    fn check_hand_over(&mut self, effects: &mut Vec<Effect>) {
        let Some((started, target)) = self.handing_over else {
            return;
        };
        if self.hand_over_done {
            return;
        }
        let waited = self.ticks - started;
        let limit = 2 * self.config.election_ticks as u64;
        if !self.is_leader() || waited >= limit {
            self.hand_over_done = true;
            let handed_to = target.filter(|_| !self.is_leader());
            effects.push(Effect::HandOverDone { handed_to });
        }
    }

    /// The voter (of the incoming side: never a learner, nor a voter on its way out)
    /// whose log is longest and close to the leader's, if any.
    pub(crate) fn most_current_follower(&self) -> Option<u64> {
        let last_index = self.raw.raft.raft_log.last_index();
        let me = self.config.replica_id;
        let voters = &self.membership.voters;
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me && voters.contains(id))
            .max_by_key(|(id, progress)| (progress.matched, u64::MAX - **id))
            .filter(|(_, progress)| progress.matched + CURRENT_FOLLOWER_LAG >= last_index)
            .map(|(id, _)| *id)
    }

    /// Leader balancing: once the group's preferred leader (another node) has been
    /// current for the delay, hand it the group (a transfer: no election timeout).
    fn balance_leadership(&mut self) {
        let Some(delay) = self.config.leader_balance_delay_ticks else {
            return;
        };
        if self.handing_over.is_some() || !self.is_leader() {
            return;
        }
        let membership = &self.membership;
        if membership.is_joint() {
            // The change under way decides who may lead (`membership`).
            self.preferred_current_ticks = 0;
            return;
        }
        let preferred = self
            .config
            .preferred_leader
            .filter(|p| membership.voters.contains(p))
            .or_else(|| preferred_leader_of(self.config.group_id, &membership.voters))
            .filter(|&p| p != self.config.replica_id && self.follower_is_current(p));
        let Some(preferred) = preferred else {
            self.preferred_current_ticks = 0;
            return;
        };
        self.preferred_current_ticks += 1;
        if self.preferred_current_ticks < delay {
            return;
        }
        self.preferred_current_ticks = 0;
        tracing::info!(
            group = self.config.group_id,
            target = preferred,
            "handing leadership to the group's preferred leader"
        );
        self.transfer_leadership(preferred);
    }

    /// Whether `follower` replicates normally and is at most `CURRENT_FOLLOWER_LAG`
    /// entries behind, when leading.
    pub fn follower_is_current(&self, follower: u64) -> bool {
        if !self.is_leader() {
            return false;
        }
        let last_index = self.raw.raft.raft_log.last_index();
        self.raw.raft.prs().get(follower).is_some_and(|p| {
            p.state == ProgressState::Replicate && p.matched + CURRENT_FOLLOWER_LAG >= last_index
        })
    }

    /// Whether `follower` was heard from within the last election timeout, when leading
    /// (raft-rs's check-quorum activity).
    pub fn follower_is_active(&self, follower: u64) -> bool {
        self.leader_view_of(follower)
            .is_some_and(|p| p.recent_active)
    }

    /// raft-rs's progress of `follower`, when leading.
    fn leader_view_of(&self, follower: u64) -> Option<&raft::Progress> {
        self.is_leader()
            .then(|| self.raw.raft.prs().get(follower))
            .flatten()
    }

    /// A snapshot sent to `peer` was lost: raft-rs sends it again after probing (R10).
    pub(crate) fn report_snapshot_lost(&mut self, peer: u64) {
        self.snapshots_in_flight.remove(&peer);
        if self.config.defects.never_report_snapshot || !self.is_leader() {
            return;
        }
        self.raw.report_snapshot(peer, SnapshotStatus::Failure);
    }

    /// Snapshots unanswered for too long count as lost; answered ones are forgotten.
    fn resend_lost_snapshots(&mut self) {
        let peers: Vec<(u64, u64)> = self
            .snapshots_in_flight
            .iter()
            .map(|(p, t)| (*p, *t))
            .collect();
        for (peer, sent) in peers {
            let waiting = self
                .raw
                .raft
                .prs()
                .get(peer)
                .is_some_and(|p| p.state == ProgressState::Snapshot);
            if !waiting || !self.is_leader() {
                self.snapshots_in_flight.remove(&peer);
            } else if self.ticks - sent >= self.config.snapshot_resend_ticks {
                self.report_snapshot_lost(peer);
            }
        }
    }

    /// Whether this replica leads its group. A failed replica leads nothing, except the
    /// only voter of a group: it still serves reads of what it stored (writes are refused
    /// with the storage failure).
    pub fn is_leader(&self) -> bool {
        if self.is_silent() {
            return self.alone_and_failed();
        }
        self.raw.raft.state == StateRole::Leader
    }

    /// Whether this replica may answer reads: it leads and has applied every entry
    /// committed before its term (an entry of its own term is applied), so the high
    /// watermark it serves never goes back behind an earlier leader's. A failed lone
    /// voter too: one that failed before applying its term's first entry may hold
    /// entries earlier terms committed that it never applied, and serves no reads.
    pub fn serves_reads(&self) -> bool {
        self.is_leader() && self.state.applied_index() >= self.term_start_index
    }

    /// The leader's id as this replica knows it (0: unknown).
    pub fn leader_id(&self) -> u64 {
        if self.is_silent() {
            return if self.alone_and_failed() {
                self.config.replica_id
            } else {
                0
            };
        }
        self.raw.raft.leader_id
    }

    fn alone_and_failed(&self) -> bool {
        self.failed.is_some() && self.voter_count() == 1
    }

    /// Asks raft-rs to hand leadership to `target` (counted: `ReplicaCounts`).
    pub(crate) fn transfer_leadership(&mut self, target: u64) {
        let pending = self.raw.raft.lead_transferee;
        self.raw.transfer_leader(target);
        // Counted once it is started: raft-rs ignores a repeat of the pending transfer, a
        // transfer to a learner or to itself.
        if pending != Some(target) && self.raw.raft.lead_transferee == Some(target) {
            self.counts.transfers_started += 1;
        }
    }

    /// What this replica did so far, for the node's metrics.
    pub fn counts(&self) -> ReplicaCounts {
        self.counts
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// Highest committed index.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Index of the last entry (durable or not).
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// Highest applied index.
    pub fn applied_index(&self) -> u64 {
        self.state.applied_index()
    }

    /// Last index known durable.
    pub fn durable_index(&self) -> u64 {
        self.durable_index
    }

    /// This replica's role: leader, follower, candidate, pre-candidate or failed.
    pub fn role(&self) -> &'static str {
        if self.is_silent() {
            return "failed";
        }
        match self.raw.raft.state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        }
    }

    /// Number of voters.
    pub fn voter_count(&self) -> usize {
        self.raw.raft.prs().conf().voters().ids().len()
    }

    /// (follower, matched index) of every follower, when leading.
    pub fn follower_progress(&self) -> Vec<(u64, u64)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let me = self.config.replica_id;
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, p)| (*id, p.matched))
            .collect()
    }

    /// The applied state.
    pub fn state(&self) -> &crate::broker::state::ShardState {
        &self.state
    }

    /// The log store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Why the storage failed, if it did.
    pub fn failure(&self) -> Option<&crate::replication::log_store::StorageFailure> {
        self.failed.as_ref()
    }

    /// Proposals waiting for their answer.
    pub fn waiting_proposals(&self) -> usize {
        self.waiters.len()
    }

    /// Whether a Ready waits for disk work.
    pub fn is_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// A leader's view of each follower (for failure messages): raft-rs's progress state,
    /// matched and next index, whether sending is paused, snapshots and reads in flight.
    pub fn progress_summary(&self) -> String {
        if !self.is_leader() {
            return String::new();
        }
        let mut parts = Vec::new();
        for (id, p) in self.raw.raft.prs().iter() {
            if *id == self.config.replica_id {
                continue;
            }
            parts.push(format!(
                "{id}: {:?} matched {} next {} paused {} inflights full {} pending snapshot {} \
                 snapshot in flight {}",
                p.state,
                p.matched,
                p.next_idx,
                p.is_paused(),
                p.ins.full(),
                p.pending_snapshot,
                self.snapshots_in_flight.contains_key(id),
            ));
        }
        format!(
            "[{}; catch-up reads {}]",
            parts.join(", "),
            self.catch_up.len()
        )
    }

    /// Whether `follower` is in raft-rs's snapshot state (leader only).
    pub fn follower_awaits_snapshot(&self, follower: u64) -> bool {
        self.leader_view_of(follower)
            .is_some_and(|p| p.state == ProgressState::Snapshot)
    }
}
