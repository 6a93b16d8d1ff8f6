//! Unit tests of gathered proposals (`replication::proposals`): one input of several
//! clients' entries, on a single voter over the simulator's store.

use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::Applied;
use crate::replication::events::{Effect, Input, Proposal, RequestId, ShardError};
use crate::replication::tests_replica::{answer, config, drive, learn_topic, single_voter};
use crate::replication::Replica;
use crate::sim::sim_store::SimLogStore;

/// A one-record batch to topic 5, partition 0.
fn batch(request: u64, wait: bool) -> Proposal {
    let data = BrokerEntry::RecordBatch {
        proposed_at_ms: 0,
        topic_id: 5,
        partition: 0,
        record_count: 1,
        batch_crc32c: 0,
        batch: &request.to_le_bytes(),
    }
    .encode();
    Proposal {
        request: RequestId(request),
        data,
        wait,
    }
}

fn base_offset(effects: &[Effect], request: u64) -> u64 {
    match answer(effects, RequestId(request)) {
        Some(Ok(Applied::Batch { base_offset, .. })) => *base_offset,
        other => panic!("request {request}: {other:?}"),
    }
}

/// One input of five proposals, waiting or not: five consecutive entries in the order
/// given (offsets 0..5), one flush for all of them, each answered as it asked.
#[test]
fn gathered_proposals_are_stored_in_order_with_one_flush() {
    let (mut replica, store) = single_voter();
    learn_topic(&mut replica, &store, "t");
    let last_before = replica.last_index();
    let proposals = vec![
        batch(1, true),
        batch(2, false),
        batch(3, true),
        batch(4, true),
        batch(5, false),
    ];
    let mut effects = Vec::new();
    replica.handle(Input::Propose { proposals }, &mut effects);
    let flushes = effects
        .iter()
        .filter(|e| matches!(e, Effect::Flush { .. }))
        .count();
    assert_eq!(flushes, 1, "one flush for the whole input: {effects:?}");
    for request in [2, 5] {
        assert!(matches!(
            answer(&effects, RequestId(request)),
            Some(Ok(Applied::Nothing))
        ));
    }
    let flush = effects.iter().find_map(|e| match e {
        Effect::Flush { flush } => Some(*flush),
        _ => None,
    });
    store.log.borrow_mut().begin_flush();
    let outcome = store.log.borrow_mut().complete_flush(None);
    let flush = flush.expect("a flush");
    let applied = drive(&mut replica, &store, Input::FlushDone { flush, outcome });
    let offsets: Vec<u64> = [1, 3, 4]
        .iter()
        .map(|&r| base_offset(&applied, r))
        .collect();
    assert_eq!(offsets, vec![0, 2, 3], "offsets in the order proposed");
    assert_eq!(replica.last_index(), last_before + 5);
}

/// A proposal that does not fit (here: more bytes than the unflushed bound leaves to
/// proposals) is refused as overloaded, and so is every one after it in the same input,
/// even one small enough to fit: none passes another. Those before it are stored.
#[test]
fn a_refusal_for_load_refuses_the_rest_of_the_input() {
    let (mut replica, store) = single_voter();
    learn_topic(&mut replica, &store, "t");
    let big = config().max_unflushed_bytes as usize;
    let mut proposals: Vec<Proposal> = (1..=2).map(|r| batch(r, true)).collect();
    proposals.push(Proposal {
        data: vec![0; big],
        ..batch(3, true)
    });
    proposals.extend((4..=5).map(|r| batch(r, r == 4)));
    let mut effects = Vec::new();
    replica.handle(Input::Propose { proposals }, &mut effects);
    for request in 1..=2 {
        assert!(
            answer(&effects, RequestId(request)).is_none(),
            "{request} waits"
        );
    }
    for request in 3..=5 {
        assert_eq!(
            answer(&effects, RequestId(request)),
            Some(&Err(ShardError::Overloaded)),
            "request {request}"
        );
    }
}

/// A replica whose storage failed refuses every proposal of an input, not only the first.
#[test]
fn a_silent_replica_refuses_every_gathered_proposal() {
    let (mut replica, store) = single_voter();
    learn_topic(&mut replica, &store, "t");
    fail_storage(&mut replica, &store);
    let proposals: Vec<Proposal> = (1..=3).map(|r| batch(r, true)).collect();
    let mut effects = Vec::new();
    replica.handle(Input::Propose { proposals }, &mut effects);
    for request in 1..=3 {
        assert!(
            matches!(
                answer(&effects, RequestId(request)),
                Some(Err(ShardError::Storage(_)))
            ),
            "request {request}: {effects:?}"
        );
    }
}

/// Fails the next flush: the replica goes silent.
fn fail_storage(replica: &mut Replica<SimLogStore>, store: &SimLogStore) {
    let mut effects = Vec::new();
    replica.handle(
        Input::Propose {
            proposals: vec![batch(99, true)],
        },
        &mut effects,
    );
    let flush = effects.iter().find_map(|e| match e {
        Effect::Flush { flush } => Some(*flush),
        _ => None,
    });
    store.log.borrow_mut().begin_flush();
    let outcome =
        store
            .log
            .borrow_mut()
            .complete_flush(Some(crate::replication::StorageFailure::Io {
                detail: "test".into(),
            }));
    drive(
        replica,
        store,
        Input::FlushDone {
            flush: flush.expect("a flush"),
            outcome,
        },
    );
    assert!(replica.is_silent(), "the failed flush silences the replica");
}
