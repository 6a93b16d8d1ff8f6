//! Scripted runs: a profile and faults chosen by hand for one situation, checked like any
//! seed (every safety property as it goes, liveness and the history at the end).

use crate::sim::profile::{LinkMode, Profile};
use crate::sim::world::{Event, World};
use crate::sim::{run_world, RunOptions};

/// Three nodes, no random faults, retention cutting the log often, the smallest frame
/// limit of any profile, and a state of `large_state_topics` long-named topics.
fn quiet_profile(seed: u64, large_state_topics: u32) -> Profile {
    let mut profile = Profile::draw(seed);
    profile.nodes = 3;
    profile.fault_kinds = 0;
    profile.fault_every_ns = 0;
    profile.link_mode = LinkMode::Tcp;
    profile.max_message_bytes = 4096;
    profile.max_inflight_messages = 4;
    profile.max_unflushed_bytes = 64 * 1024;
    profile.max_frame_bytes = 32 * 1024;
    profile.retention = true;
    profile.retention_bytes = 16 * 1024;
    profile.segment_entries = 16;
    profile.large_state_topics = large_state_topics;
    profile.safety_ns = 4_000_000_000;
    profile.balance_ticks = None;
    profile.producers = 1;
    profile.partitions = 1;
    profile
}

/// Issue 11 item 5: a snapshot travelled in one peer frame, and a frame over the
/// receiver's limit was dropped at the sender (reported as a failed snapshot, sent again,
/// dropped again), so a follower behind the leader's compacted log never caught up once
/// the applied state outgrew a frame. Here node 3 is cut off from the start while the
/// others create 400 topics of 200-byte names (about 84 KB of state, 2.6 frames of
/// 32 KiB) and compact their logs; once it is reachable again it must be sent the
/// snapshot in chunks and end with the same state as the others.
#[test]
fn a_snapshot_larger_than_a_frame_reaches_a_follower_behind_the_compacted_log() {
    let seed = 0x5ca1e;
    let mut world = World::with_profile(seed, quiet_profile(seed, 400), Default::default(), true);
    // The controller's group: the topics are proposed into its log directly.
    world.controller = None;
    for other in [1, 2] {
        world.network().path(3, other).blocked = true;
        world.network().path(other, 3).blocked = true;
    }
    world.schedule(2_500_000_000, Event::Heal);
    let report = run_world(world, RunOptions::default());
    if let Some(v) = &report.violation {
        let trace: Vec<&str> = report
            .trace
            .iter()
            .rev()
            .take(20)
            .rev()
            .map(String::as_str)
            .collect();
        panic!("{}: {}\n{}", v.property, v.detail, trace.join("\n"));
    }
    assert!(
        report.stats.snapshot_installs >= 1,
        "node 3 installed a snapshot"
    );
    assert!(
        report.stats.chunked_frames >= 1,
        "the snapshot was larger than a frame"
    );
}
