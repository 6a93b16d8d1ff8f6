//! Seeds that once failed, kept as named tests (each note says what it found). Each
//! replays with the profile it was found with (`Profile::draw_without_large_state`: all of
//! them predate the large-state seeds, which changed the runs of 0x3 and 0x23e), but the
//! membership-change seeds, which replay with the profile drawn today (`Profile::draw`).

use crate::sim::profile::Profile;
use crate::sim::world::World;
use crate::sim::{run_world, RunOptions};

fn passes(seed: u64) {
    passes_with(seed, Profile::draw_without_large_state(seed));
}

/// Replays `seed` with the profile it draws today (membership-change seeds need it).
fn passes_as_drawn(seed: u64) {
    passes_with(seed, Profile::draw(seed));
}

fn passes_with(seed: u64, profile: Profile) {
    let options = RunOptions::default();
    let world = World::with_profile(seed, profile, options.defects, options.split_frames);
    let report = run_world(world, options);
    if let Some(v) = report.violation {
        panic!("seed {seed:#x}: {}: {}", v.property, v.detail);
    }
}

/// A flush result that waited behind a snapshot install was older than the install:
/// the durable index must come from the store, not from the stale result (A2).
#[test]
fn seed_0x3_a_flush_result_older_than_a_snapshot_install() {
    passes(0x3);
}

/// A planned stop crashed the node in the middle of carrying out its effects: a flush
/// started after the crash belonged to the new life (the world now crashes after the step).
#[test]
fn seed_0x9c_a_planned_stop_between_effects() {
    passes(0x9c);
}

/// A follower's commit index ran ahead of a parked Ready's entries: the checker reads the
/// store only once the Ready is appended.
#[test]
fn seed_0xd_commit_ahead_of_a_parked_ready() {
    passes(0xd);
}

/// Batches larger than half the unflushed bound were refused forever as overloaded.
#[test]
fn seed_0x5_batches_fit_the_unflushed_bound() {
    passes(0x5);
}

/// raft-rs 0.7's `batch_append` merged a follower's entries (from 38) into an empty
/// MsgAppend already queued for it (index 63) without fixing the index: the follower
/// acknowledged entries up to 89 holding 63 (A3 fired). `batch_append` is off now.
#[test]
fn seed_0x23e_an_append_merged_into_an_empty_probe() {
    passes(0x23e);
}

/// A new leader served a partition's high watermark before applying what its
/// predecessor committed: a consumer saw it go back (S6). Leaders now serve reads once
/// an entry of their own term is applied.
#[test]
fn seed_0x2_a_new_leader_reads_only_after_applying_its_predecessors_commits() {
    passes(0x2);
}

/// A follower's acknowledgement (up to 45, term 2) waited in the outbox while a new
/// leader's entries cut 43.. from the disk; released after the cut, it told the old
/// leader of entries the follower no longer had (S4). Acknowledgements of cut entries are
/// dropped now. (One of 13 such seeds of the first 100,000-seed run.)
#[test]
fn seed_0x3bcf_an_acknowledgement_of_entries_cut_while_parked() {
    passes(0x3bcf);
}

/// The same with entries still in memory: a Ready cut 59..60 (never flushed) and the
/// acknowledgement of 60 left with the next flush (A3 fired).
#[test]
fn seed_0x1aa2_an_acknowledgement_of_entries_cut_in_memory() {
    passes(0x1aa2);
}

/// A follower installed a snapshot at 176; raft-rs forgot its unstable snapshot at the
/// advance but its applied index waited (173) for the next flush, and an election timeout
/// in between made raft-rs read compacted entries and abort. An installed snapshot is
/// durable: raft-rs hears at once that its Ready persisted.
#[test]
fn seed_0x9181_a_campaign_right_after_a_snapshot_install() {
    passes(0x9181);
}

/// A retention cut ran at snapshot 94 while newer snapshot files were kept: the oldest
/// kept one, the cut's own, was forgotten, so the store was compacted with no snapshot to
/// send and a follower behind it waited forever (liveness). Snapshots of running cuts are
/// pinned now. (Also 7 other non-converging seeds of that run.)
#[test]
fn seed_0xae9e_the_snapshot_of_a_running_cut_is_pinned() {
    passes(0xae9e);
}

/// Topic churn (a second topic created and deleted while faults run): a batch proposed
/// before its topic's deletion and committed after it made a partition of a topic that no
/// longer existed, on every replica (the orphan check, S5; 245 of 2,000 seeds). The
/// controller group now refuses such a batch at apply (`UnknownTopic`).
#[test]
fn seed_0x0_a_batch_committed_after_its_topic_was_deleted() {
    passes(0x0);
}

/// Data-group seeds (the group learns topics from copies of the controller's list, each
/// replica at its own time). Before data groups' leaders copied topic changes into their
/// own log, each replica forgot a deleted topic when its copy arrived, at different log
/// positions: 144 of the first 300 seeds failed. Seed 0x0: a replica applied the
/// producers' batches before its copy named their topic, then forgot their partition
/// (`S6: node 1 serves partition 1 up to 0, but 28 was served before`); seed 0x11e: a
/// partition's offsets then differed between replicas (P1).
#[test]
fn seed_0x0_and_0x11e_data_group_replicas_drop_a_deleted_topic_at_one_index() {
    passes(0x0);
    passes(0x11e);
}

/// A mirrored creation came before the deletion of the older topic of the same name:
/// apply ignored it (the name was taken) and the new topic counted as deleted forever
/// (liveness: the log's topics never matched the controller's). Deletions go first now.
#[test]
fn seed_0x18_a_mirrored_creation_under_a_name_still_taken() {
    passes(0x18);
}

/// A batch of a topic the log had not heard of was stored, the controller deleted the
/// topic before the leader copied its creation, and its partition stayed (S5). The
/// leader now deletes every stored topic the controller deleted.
#[test]
fn seed_0x17_a_topic_stored_before_its_creation_was_copied() {
    passes(0x17);
}

/// A learner that joined at index 360 replayed the log below it; a snapshot it took at
/// 263 carried its configuration of 360, and a node that installed it applied the changes
/// in between a second time (S11: two configurations at index 266). Snapshots now wait
/// until the applied index reaches the configuration's.
#[test]
fn seed_0x66_a_snapshot_never_carries_a_later_configuration() {
    passes_as_drawn(0x66);
}

/// A leader asked to demote itself handed leadership to the learner being promoted;
/// raft-rs ignores a transfer to a learner, and the move stalled for good (liveness).
/// The target is now a voter both before and after the change.
#[test]
fn seed_0x1e_a_demoted_leader_hands_over_to_a_voter() {
    passes_as_drawn(0x1e);
}

/// A new leader added by a move was unknown to a follower behind on changes, whose
/// ingress refused all its messages: the follower never caught up (liveness). Leaders'
/// messages and vote requests are now taken from any node of the cluster.
#[test]
fn seed_0x60_a_follower_behind_on_changes_hears_a_new_leader() {
    passes_as_drawn(0x60);
}

/// The leader's snapshot predated the learner's addition; the learner refused it (not in
/// its configuration) and waited for ever (liveness). The leader now writes a snapshot
/// for such a peer.
#[test]
fn seed_0x1d_a_learner_gets_a_snapshot_that_names_it() {
    passes_as_drawn(0x1d);
}

/// A learner whose progress held at matched 0 counted as current (within the lag of a
/// short log) and was promoted with an empty log; its node had held a replica of the
/// group before, whose votes its wiped log forgot: it voted a second time in term 2, two
/// leaders (S1). A learner is promoted only once it holds the change that added it, and a
/// node never holds a replica of a group twice (seed 0x1df2 found the same reuse of an
/// id electing a stale voter).
#[test]
fn seed_0x3a1_a_learner_is_promoted_only_once_it_holds_its_own_addition() {
    passes_as_drawn(0x3a1);
}

/// A learner that caught up while the group was idle stayed in raft-rs's probe state
/// and never counted as current: the move never finished (liveness).
#[test]
fn seed_0x24_a_learner_caught_up_while_idle_is_promoted() {
    passes_as_drawn(0x24);
}

/// A vote move to a kept learner rolled back with its promotion unanswered; the next
/// vote move chose the same learner, and a later leader then committed the first one's
/// promotion (demoting another voter): the new move found its learner voting beside the
/// voter it was to demote and waited for ever (liveness). The mover now ends a move
/// whose learner already votes.
#[test]
fn seed_0xdd8_a_vote_move_overtaken_by_a_stale_promotion_ends() {
    passes_as_drawn(0xdd8);
}

/// A topic creation ignored at apply (its name taken by one that raced it) used up its
/// id without telling the node's shards: what they were told had a next id one behind
/// the controller's (P8, the told-topics check; also 0x24f and 0x63d).
#[test]
fn seed_0x108_an_ignored_creation_uses_up_its_id() {
    passes_as_drawn(0x108);
}
