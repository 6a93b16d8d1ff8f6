//! Unit tests of the replica on the simulator's store: one voter, flushes completed by
//! hand, so each test reads as a sequence of inputs and the effects they cause.

use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::{Applied, ShardState, TopicInfo, Topics};
use crate::replication::events::{Defects, DiskWork, Effect, Input, RequestId};
use crate::replication::replica::{Replica, ReplicaConfig, RetentionPolicy};
use crate::sim::sim_store::{SimLog, SimLogStore};

pub(super) fn config() -> ReplicaConfig {
    ReplicaConfig {
        replica_id: 1,
        group_id: 1,
        controller_group: false,
        voters: vec![1],
        learners: Vec::new(),
        preferred_leader: None,
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
pub(super) fn drive(
    replica: &mut Replica<SimLogStore>,
    store: &SimLogStore,
    input: Input,
) -> Vec<Effect> {
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

pub(super) fn single_voter() -> (Replica<SimLogStore>, SimLogStore) {
    let store = SimLogStore::new(SimLog::default());
    let (replica, _) = start_single_voter(&store, config());
    (replica, store)
}

/// A single voter over `store` (empty, or a log to restart from), elected, with every
/// effect of its start.
fn start_single_voter(
    store: &SimLogStore,
    config: ReplicaConfig,
) -> (Replica<SimLogStore>, Vec<Effect>) {
    let mut replica = Replica::new(store.clone(), ShardState::default(), config).unwrap();
    let mut effects = Vec::new();
    replica.start(&mut effects);
    let mut all = Vec::new();
    for effect in effects {
        if let Effect::Flush { flush } = effect {
            store.log.borrow_mut().begin_flush();
            let outcome = store.log.borrow_mut().complete_flush(None);
            all.extend(drive(
                &mut replica,
                store,
                Input::FlushDone { flush, outcome },
            ));
        } else {
            all.push(effect);
        }
    }
    assert!(replica.is_leader(), "a single voter elects itself");
    (replica, all)
}

pub(super) fn answer(
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

/// The controller's list with one topic (id 5, one partition), as a data group hears it.
pub(super) fn learn_topic(replica: &mut Replica<SimLogStore>, store: &SimLogStore, name: &str) {
    let mut topics = Topics::default();
    topics.apply_create(TopicInfo {
        id: 5,
        name: name.to_string(),
        partitions: 1,
        groups: vec![0],
    });
    drive(replica, store, Input::ControllerTopics { topics });
}

/// Proposes a one-record batch to topic 5, partition 0, waiting for it to apply.
fn propose_batch(
    replica: &mut Replica<SimLogStore>,
    store: &SimLogStore,
    request: RequestId,
    batch: &[u8],
) -> Vec<Effect> {
    let data = BrokerEntry::RecordBatch {
        proposed_at_ms: 0,
        topic_id: 5,
        partition: 0,
        record_count: 1,
        batch_crc32c: 0,
        batch,
    }
    .encode();
    let wait = true;
    drive(replica, store, Input::propose(request, data, wait))
}

/// Item 14: a shard that is not the controller forgets a deleted topic's partitions when
/// the controller's topic list no longer has it, through an entry of its own log (so at
/// one index on every replica), and refuses its batches from then on.
#[test]
fn a_deleted_topic_s_partitions_are_forgotten_by_the_other_shards() {
    let (mut replica, store) = single_voter();
    learn_topic(&mut replica, &store, "gone");
    let request = RequestId(1);
    let effects = propose_batch(&mut replica, &store, request, b"x");
    assert!(matches!(
        answer(&effects, request),
        Some(Ok(Applied::Batch { .. }))
    ));
    assert!(replica.state().partition(5, 0).is_some());
    let mut deleted = replica.state().request_topics().clone();
    deleted.apply_delete(5);
    let logged = replica.last_index();
    drive(
        &mut replica,
        &store,
        Input::ControllerTopics { topics: deleted },
    );
    assert!(
        replica.state().partition(5, 0).is_none(),
        "the deleted topic's partition is forgotten"
    );
    assert!(
        replica.last_index() > logged,
        "the deletion is an entry of the group's log"
    );
    let request = RequestId(2);
    let effects = propose_batch(&mut replica, &store, request, b"y");
    assert_eq!(
        answer(&effects, request),
        Some(&Ok(Applied::UnknownTopic)),
        "a batch for the deleted topic is refused at apply"
    );
}

/// A restart applies its log's topic creations in one pass, and the other shards are told
/// the topic list once (each creation copied the whole list into its own effect: a replay
/// of n topics made n² copies, which the simulator's large-state seeds exposed).
#[test]
fn a_pass_of_many_topic_changes_tells_the_other_shards_once() {
    let controller = ReplicaConfig {
        controller_group: true,
        ..config()
    };
    let store = SimLogStore::new(SimLog::default());
    let (mut replica, _) = start_single_voter(&store, controller.clone());
    for topic_id in 1..=40u32 {
        let name = format!("topic-{topic_id}");
        let data = BrokerEntry::CreateTopic {
            topic_id,
            partitions: 1,
            name: &name,
            groups: vec![0],
            new_groups: Vec::new(),
        }
        .encode();
        let request = RequestId(u64::from(topic_id));
        let effects = drive(&mut replica, &store, Input::propose(request, data, true));
        let told = effects.iter().find_map(|e| match e {
            Effect::TopicsChanged { topics } => Some(topics.list().count()),
            _ => None,
        });
        assert_eq!(told, Some(topic_id as usize), "each creation alone is told");
    }
    drop(replica);
    let (replica, effects) = start_single_voter(&store, controller);
    assert_eq!(replica.state().topics.list().count(), 40);
    let told: Vec<usize> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::TopicsChanged { topics } => Some(topics.list().count()),
            _ => None,
        })
        .collect();
    assert_eq!(told, vec![40], "the replay is told once, with every topic");
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
        replica.handle(Input::propose(request, big.clone(), false), &mut effects);
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
        Input::propose(request, b"late".to_vec(), true),
    );
    assert_eq!(
        answer(&effects, request),
        Some(&Err(crate::replication::ShardError::NotLeader))
    );
}

/// Item 15: the commit index reaches the meta file every `commit_persist_ticks` while it
/// moves (not only at shutdown), so a crash restarts near the last commit.
#[test]
fn the_commit_index_is_persisted_every_few_ticks_while_it_moves() {
    let (mut replica, store) = single_voter();
    learn_topic(&mut replica, &store, "t");
    for i in 0..3 {
        let request = RequestId(200 + i);
        let effects = propose_batch(&mut replica, &store, request, b"moves the commit");
        assert!(answer(&effects, request).is_some_and(|a| a.is_ok()));
    }
    let commit = replica.commit_index();
    assert!(
        commit >= 4,
        "three entries after the leader's own: {commit}"
    );
    let mut persisted = None;
    for tick in 0..config().commit_persist_ticks {
        let effects = drive(&mut replica, &store, Input::Tick { now_ms: tick * 10 });
        for effect in effects {
            if let Effect::Disk { op, work } = effect {
                if matches!(work, DiskWork::PersistCommitIndex) {
                    store.log.borrow_mut().persist_commit_index();
                    drive(
                        &mut replica,
                        &store,
                        Input::DiskDone {
                            op,
                            outcome: Ok(()),
                        },
                    );
                    persisted = Some(tick);
                }
            }
        }
    }
    assert!(
        persisted.is_some(),
        "no PersistCommitIndex within {} ticks",
        config().commit_persist_ticks
    );
    // A crash now keeps the commit index.
    let recovered = store.log.borrow().durable_meta.hard_state.commit;
    assert_eq!(recovered, commit, "the durable commit index after a crash");
}

/// Item 12: a leader's waiter whose entry is overtaken by a snapshot from a newer leader
/// is answered (its fate unknown here: `Indeterminate`), never left waiting. Waiters live
/// only on a leader, which answers them all when a newer term deposes it; the install
/// answers any left at or below its index as a second line.
#[test]
fn a_waiter_at_or_below_an_installed_snapshot_is_answered() {
    use raft::eraftpb::{Message, MessageType, Snapshot};
    let store = SimLogStore::new(SimLog::default());
    let three = ReplicaConfig {
        voters: vec![1, 2, 3],
        ..config()
    };
    let mut replica = Replica::new(store.clone(), ShardState::default(), three).unwrap();
    let mut effects = Vec::new();
    replica.start(&mut effects);
    // Node 2 grants the pre-vote, then the vote.
    for _ in 0..2 {
        let mut seen = Vec::new();
        for effect in effects.drain(..) {
            if let Effect::Flush { flush } = effect {
                store.log.borrow_mut().begin_flush();
                let outcome = store.log.borrow_mut().complete_flush(None);
                seen.extend(drive(
                    &mut replica,
                    &store,
                    Input::FlushDone { flush, outcome },
                ));
            } else {
                seen.push(effect);
            }
        }
        let asked = seen.iter().find_map(|e| match e {
            Effect::Send { to: 2, messages } => messages.first().cloned(),
            _ => None,
        });
        let asked = asked.unwrap_or_else(|| panic!("node 2 is asked for its vote: {seen:?}"));
        let mut grant = Message::default();
        grant.set_msg_type(match asked.get_msg_type() {
            MessageType::MsgRequestPreVote => MessageType::MsgRequestPreVoteResponse,
            _ => MessageType::MsgRequestVoteResponse,
        });
        (grant.from, grant.to, grant.term) = (2, 1, asked.term);
        effects = drive(
            &mut replica,
            &store,
            Input::Peer {
                from: 2,
                messages: vec![grant],
            },
        );
    }
    assert!(replica.is_leader(), "elected with node 2's vote");
    let term = replica.term();
    let request = RequestId(300);
    let effects = drive(
        &mut replica,
        &store,
        Input::propose(request, b"never committed by this leader".to_vec(), true),
    );
    assert!(answer(&effects, request).is_none(), "waits for a quorum");
    // Node 2 leads a newer term and sends a snapshot past the waiter's index.
    let state = ShardState {
        applied_index: 10,
        ..Default::default()
    };
    let mut snapshot = Snapshot {
        data: crate::broker::snapshot::encode_state(&state, false).into(),
        ..Default::default()
    };
    snapshot.mut_metadata().index = 10;
    snapshot.mut_metadata().term = term + 1;
    snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    (message.from, message.to, message.term) = (2, 1, term + 1);
    message.set_snapshot(snapshot);
    let mut effects = drive(
        &mut replica,
        &store,
        Input::Peer {
            from: 2,
            messages: vec![message],
        },
    );
    let (op, work) = effects
        .iter()
        .find_map(|e| match e {
            Effect::Disk { op, work } => Some((*op, work.clone())),
            _ => None,
        })
        .expect("the snapshot is installed by disk work");
    let DiskWork::InstallSnapshot { snapshot } = work else {
        panic!("expected InstallSnapshot, got {work:?}");
    };
    store.log.borrow_mut().install_snapshot(&snapshot);
    effects.extend(drive(
        &mut replica,
        &store,
        Input::DiskDone {
            op,
            outcome: Ok(()),
        },
    ));
    // Answered once: at the step-down the newer term causes (or at the install).
    let answers = effects
        .iter()
        .filter(|e| matches!(e, Effect::Answer { request: r, .. } if *r == request))
        .count();
    assert_eq!(answers, 1, "the waiter is answered exactly once");
    assert_eq!(
        answer(&effects, request),
        Some(&Err(crate::replication::ShardError::Indeterminate)),
        "the waiter's entry may or may not survive: the client is told so"
    );
    assert_eq!(replica.applied_index(), 10);
}

/// A full disk (seen from outside): while the driver says space is short, record batches
/// are refused with a storage error before raft-rs takes them, topic changes still go in
/// (a deletion is how an operator frees space), and records are taken again once space
/// is back.
#[test]
fn while_space_is_short_records_are_refused_and_topic_changes_go_in() {
    let (mut replica, store) = single_voter();
    learn_topic(&mut replica, &store, "orders");
    drive(&mut replica, &store, Input::SpaceLow { low: true });
    let before = replica.last_index();
    let effects = propose_batch(&mut replica, &store, RequestId(1), b"x");
    assert!(
        matches!(
            answer(&effects, RequestId(1)),
            Some(Err(crate::replication::ShardError::Storage(_)))
        ),
        "a record batch is refused while space is short: {effects:?}"
    );
    assert_eq!(replica.last_index(), before, "nothing reached the log");
    let delete = BrokerEntry::DeleteTopic { topic_id: 9 }.encode();
    let effects = drive(
        &mut replica,
        &store,
        Input::propose(RequestId(2), delete, true),
    );
    assert!(
        matches!(answer(&effects, RequestId(2)), Some(Ok(_))),
        "a topic change goes in: {effects:?}"
    );
    drive(&mut replica, &store, Input::SpaceLow { low: false });
    let effects = propose_batch(&mut replica, &store, RequestId(3), b"y");
    assert!(
        matches!(
            answer(&effects, RequestId(3)),
            Some(Ok(Applied::Batch { .. }))
        ),
        "records are taken again: {effects:?}"
    );
}

/// A lone voter whose storage fails before it applied its own term's first entry serves
/// no reads: what it applied (up to the commit index last written to its meta file, which
/// is written lazily) is behind what earlier terms committed, and a read from it would
/// take the high watermark back. Before, a failed lone voter served reads at once.
#[test]
fn a_lone_voter_failed_before_its_term_began_serves_no_reads() {
    use crate::replication::log_store::StorageFailure;
    use crate::sim::sim_store::CrashOutcome;
    let (mut replica, store) = single_voter();
    learn_topic(&mut replica, &store, "t");
    for i in 0..3 {
        let request = RequestId(300 + i);
        let effects = propose_batch(&mut replica, &store, request, b"acknowledged");
        assert!(answer(&effects, request).is_some_and(|a| a.is_ok()));
    }
    let acknowledged = replica.applied_index();
    drop(replica);
    // The process stops: its entries are durable, the meta file's commit index is the one
    // written with the last change of term or vote (no tick persisted it since).
    let recovered = {
        let log = store.log.borrow();
        let outcome = CrashOutcome {
            landed: log.durable_index,
            meta_of: None,
        };
        assert!(log.crash_outcome_possible(outcome));
        log.recover_as(outcome)
    };
    assert!(recovered.durable_meta.hard_state.commit < acknowledged);
    let store = SimLogStore::new(recovered);
    let mut replica = Replica::new(store.clone(), ShardState::default(), config()).unwrap();
    let mut effects = Vec::new();
    replica.start(&mut effects);
    // It elects itself and writes its term's first entry: that write fails.
    let mut failed = false;
    for effect in effects {
        if let Effect::Flush { flush } = effect {
            store.log.borrow_mut().begin_flush();
            let outcome = store
                .log
                .borrow_mut()
                .complete_flush(Some(StorageFailure::NoSpace));
            drive(&mut replica, &store, Input::FlushDone { flush, outcome });
            failed = true;
        }
    }
    assert!(failed, "the new term's first entry was never written");
    assert!(
        replica.is_leader(),
        "a failed lone voter still leads (reads)"
    );
    assert!(
        replica.applied_index() < acknowledged,
        "the scenario: it applied {} of {acknowledged}",
        replica.applied_index()
    );
    assert!(
        !replica.serves_reads(),
        "it serves reads from index {} while {acknowledged} were acknowledged",
        replica.applied_index()
    );
}
