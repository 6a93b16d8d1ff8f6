//! Unit tests of the replica on the simulator's store: one voter, flushes completed by
//! hand, so each test reads as a sequence of inputs and the effects they cause.

use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::{Applied, ShardState, TopicInfo};
use crate::replication::events::{Defects, Effect, Input, RequestId};
use crate::replication::replica::{Replica, ReplicaConfig, RetentionPolicy};
use crate::sim::sim_store::{SimLog, SimLogStore};

fn config() -> ReplicaConfig {
    ReplicaConfig {
        replica_id: 1,
        group_id: 1,
        voters: vec![1],
        election_ticks: 10,
        heartbeat_ticks: 2,
        max_message_bytes: 64 * 1024,
        max_inflight_messages: 4,
        max_unflushed_bytes: 1024 * 1024,
        max_uncommitted_bytes: 1024 * 1024,
        max_waiting_proposals: 16,
        max_committed_bytes_per_ready: 1024 * 1024,
        leader_balance_delay_ticks: None,
        campaign_at_start: true,
        retention: RetentionPolicy::default(),
        snapshot_resend_ticks: 100,
        commit_persist_ticks: 10,
        seed: 7,
        defects: Defects::default(),
    }
}

/// Feeds `input`, then completes every flush asked for until none is left.
fn drive(replica: &mut Replica<SimLogStore>, store: &SimLogStore, input: Input) -> Vec<Effect> {
    let mut all = Vec::new();
    let mut pending = vec![input];
    while let Some(input) = pending.pop() {
        let mut effects = Vec::new();
        replica.handle(input, &mut effects);
        for effect in &effects {
            if let Effect::Flush { flush } = effect {
                store.log.borrow_mut().begin_flush();
                let outcome = store.log.borrow_mut().complete_flush(None);
                pending.push(Input::FlushDone {
                    flush: *flush,
                    outcome,
                });
            }
        }
        all.extend(effects);
    }
    all
}

fn single_voter() -> (Replica<SimLogStore>, SimLogStore) {
    let store = SimLogStore::new(SimLog::default());
    let mut replica = Replica::new(store.clone(), ShardState::default(), config()).unwrap();
    let mut effects = Vec::new();
    replica.start(&mut effects);
    for effect in effects {
        if let Effect::Flush { flush } = effect {
            store.log.borrow_mut().begin_flush();
            let outcome = store.log.borrow_mut().complete_flush(None);
            drive(&mut replica, &store, Input::FlushDone { flush, outcome });
        }
    }
    assert!(replica.is_leader(), "a single voter elects itself");
    (replica, store)
}

fn answer(
    effects: &[Effect],
    request: RequestId,
) -> Option<&Result<Applied, crate::replication::ShardError>> {
    effects.iter().find_map(|e| match e {
        Effect::Answer {
            request: r,
            outcome,
        } if *r == request => Some(outcome),
        _ => None,
    })
}

/// Item 14: a shard that is not the controller forgets a deleted topic's partitions when
/// the controller's topic list no longer has it.
#[test]
fn a_deleted_topic_s_partitions_are_forgotten_by_the_other_shards() {
    let (mut replica, store) = single_voter();
    let topic = TopicInfo {
        id: 5,
        name: "gone".to_string(),
        partitions: 1,
    };
    drive(
        &mut replica,
        &store,
        Input::ControllerTopics {
            topics: vec![topic],
        },
    );
    let data = BrokerEntry::RecordBatch {
        proposed_at_ms: 0,
        topic_id: 5,
        partition: 0,
        record_count: 1,
        batch_crc32c: 0,
        batch: b"x",
    }
    .encode();
    let request = RequestId(1);
    let effects = drive(
        &mut replica,
        &store,
        Input::Propose {
            request,
            data,
            wait: true,
        },
    );
    assert!(matches!(
        answer(&effects, request),
        Some(Ok(Applied::Batch { .. }))
    ));
    assert!(replica.state().partition(5, 0).is_some());
    drive(
        &mut replica,
        &store,
        Input::ControllerTopics { topics: vec![] },
    );
    assert!(
        replica.state().partition(5, 0).is_none(),
        "the deleted topic's partition is forgotten"
    );
}

/// Item 4: proposals beyond the bounds are refused before raft-rs takes them (acks=none
/// included), never queued without limit.
#[test]
fn proposals_beyond_the_unflushed_bound_are_refused_as_overloaded() {
    let (mut replica, store) = single_voter();
    let big = vec![0u8; 400 * 1024];
    // No flush completes: the bytes stay unflushed.
    let mut refused = 0;
    for i in 0..10 {
        let mut effects = Vec::new();
        let request = RequestId(100 + i);
        replica.handle(
            Input::Propose {
                request,
                data: big.clone(),
                wait: false,
            },
            &mut effects,
        );
        if matches!(
            answer(&effects, request),
            Some(Err(crate::replication::ShardError::Overloaded))
        ) {
            refused += 1;
        }
    }
    assert!(
        refused >= 8,
        "at most half the unflushed bound is taken: {refused} refused"
    );
    let _ = store;
}

/// Item 8: while leadership moves (a hand-over), proposals are refused as `NotLeader`,
/// which clients retry, never as a final error.
#[test]
fn proposals_during_a_hand_over_are_not_leader() {
    let (mut replica, store) = single_voter();
    drive(&mut replica, &store, Input::HandOver);
    let request = RequestId(9);
    let effects = drive(
        &mut replica,
        &store,
        Input::Propose {
            request,
            data: b"late".to_vec(),
            wait: true,
        },
    );
    assert_eq!(
        answer(&effects, request),
        Some(&Err(crate::replication::ShardError::NotLeader))
    );
}
