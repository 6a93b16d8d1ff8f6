//! raft-rs's `RawNode` running unchanged on the CommitLog's `raft::Storage`: a three-node
//! group in one executor (messages passed in memory), each node's log on real files. A
//! follower is stopped, writes go on, it restarts from its files and catches up; then the
//! whole group restarts and every committed entry is still there, on every node.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use raft::eraftpb::{ConfState, Entry, EntryType, Message};
use raft::{Config, RawNode, StateRole, Storage};

use super::support::run;
use crate::log::raft_storage::from_conf_state;
use crate::log::{CommitLog, HardStateRecord, LogConfig, Preallocation, RaftLogStorage};

struct Node {
    log: CommitLog,
    raft: RawNode<RaftLogStorage>,
    applied: Vec<Vec<u8>>,
}

fn config(id: u64) -> Config {
    Config {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        max_size_per_msg: 64 * 1024,
        max_inflight_msgs: 64,
        pre_vote: true,
        check_quorum: true,
        ..Default::default()
    }
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_size_bytes: 64 * 1024,
        max_entry_payload_bytes: 8 * 1024,
        tail_cache_bytes: 8 * 1024,
        preallocation: Preallocation::Fallocate,
        ..LogConfig::default()
    }
}

async fn start(dir: &Path, id: u64, fresh: bool) -> Node {
    let log = CommitLog::open(&dir.join(format!("node-{id}")), log_config())
        .await
        .unwrap();
    if fresh {
        let voters = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        log.set_conf_state(from_conf_state(&voters, 0)).unwrap();
        log.flush().await.unwrap();
    }
    let applied_index = log.hard_state().commit;
    let mut raft_config = config(id);
    raft_config.applied = applied_index;
    let raft = RawNode::new(&raft_config, log.raft_storage(), &raft::default_logger()).unwrap();
    Node {
        log,
        raft,
        applied: Vec::new(),
    }
}

fn apply(node: &mut Node, entries: Vec<Entry>) {
    for entry in entries {
        if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
            node.applied.push(entry.data.to_vec());
        }
    }
}

/// Entries for followers behind the tail cache: the view records a miss; read them and
/// hand them to raft-rs (as the replica does off its Ready path).
async fn serve_catch_up_reads(node: &mut Node) {
    for miss in node.log.take_fetch_misses() {
        let entries = node
            .log
            .read(miss.low, miss.high, miss.max_bytes)
            .await
            .unwrap();
        node.log.stage_fetched(miss.low, entries);
        node.raft.on_entries_fetched(miss.context);
        node.log.unstage(miss.low);
    }
}

/// One pass of the Ready loop (persist, then send, then apply), as raft-rs documents it.
async fn handle_ready(node: &mut Node, outbox: &mut VecDeque<Message>) {
    serve_catch_up_reads(node).await;
    if !node.raft.has_ready() {
        return;
    }
    let mut ready = node.raft.ready();
    outbox.extend(ready.take_messages());
    let committed = ready.take_committed_entries();
    apply(node, committed);
    if let Some(first) = ready.entries().first() {
        if first.index <= node.log.last_index() {
            node.log.truncate_suffix(first.index).await.unwrap();
        }
        node.log.append(ready.entries()).unwrap();
    }
    if let Some(hard_state) = ready.hs() {
        node.log.set_hard_state(HardStateRecord {
            term: hard_state.term,
            vote: hard_state.vote,
            commit: hard_state.commit,
        });
    }
    node.log.flush().await.unwrap();
    outbox.extend(ready.take_persisted_messages());
    let mut light = node.raft.advance(ready);
    if let Some(commit) = light.commit_index() {
        let mut hard_state = node.log.hard_state();
        hard_state.commit = commit;
        node.log.set_hard_state(hard_state);
    }
    outbox.extend(light.take_messages());
    let committed = light.take_committed_entries();
    apply(node, committed);
    node.raft.advance_apply();
}

/// Ticks and delivers messages until `done` holds (or the step budget runs out).
async fn drive(
    nodes: &mut BTreeMap<u64, Node>,
    steps: usize,
    mut done: impl FnMut(&BTreeMap<u64, Node>) -> bool,
) {
    for step in 0..steps {
        let mut outbox = VecDeque::new();
        for node in nodes.values_mut() {
            if step % 2 == 0 {
                node.raft.tick();
            }
            handle_ready(node, &mut outbox).await;
        }
        while let Some(message) = outbox.pop_front() {
            if let Some(node) = nodes.get_mut(&message.to) {
                let _ = node.raft.step(message);
                handle_ready(node, &mut outbox).await;
            }
        }
        if done(nodes) {
            return;
        }
    }
    panic!("the group did not get there in {steps} steps");
}

fn leader(nodes: &BTreeMap<u64, Node>) -> Option<u64> {
    nodes
        .values()
        .find(|n| n.raft.raft.state == StateRole::Leader)
        .map(|n| n.raft.raft.id)
}

async fn propose_all(nodes: &mut BTreeMap<u64, Node>, from: u64, to: u64) {
    for value in from..to {
        drive(nodes, 400, |nodes| leader(nodes).is_some()).await;
        let Some(id) = leader(nodes) else {
            unreachable!()
        };
        let node = nodes.get_mut(&id).unwrap();
        node.raft.propose(vec![], value_bytes(value)).unwrap();
    }
}

fn committed_values(node: &Node) -> Vec<Vec<u8>> {
    let storage = node.log.raft_storage();
    let last = node.raft.raft.raft_log.committed;
    let first = storage.first_index().unwrap();
    let entries = storage
        .entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
        .unwrap();
    entries
        .into_iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| e.data.to_vec())
        .collect()
}

/// Values of a few hundred bytes, so the group's logs span several segments and the
/// leader serves the returning follower from disk (the tail cache holds 8 KiB).
fn value_bytes(value: u64) -> Vec<u8> {
    format!("value-{value}-{}", "x".repeat(300)).into_bytes()
}

fn expected(to: u64) -> Vec<Vec<u8>> {
    (0..to).map(value_bytes).collect()
}

#[test]
fn a_raft_group_on_the_commit_log_survives_a_follower_restart_and_a_full_restart() {
    run(|| async {
        let root = tempfile::tempdir().unwrap();
        let dir: PathBuf = root.path().to_path_buf();
        let mut nodes = BTreeMap::new();
        for id in 1..=3 {
            nodes.insert(id, start(&dir, id, true).await);
        }
        propose_all(&mut nodes, 0, 200).await;
        drive(&mut nodes, 2000, |nodes| {
            nodes.values().all(|n| n.applied.len() == 200)
        })
        .await;

        // Stop a follower; the other two go on.
        let follower = (1..=3).find(|&id| Some(id) != leader(&nodes)).unwrap();
        let stopped = nodes.remove(&follower).unwrap();
        stopped.log.close().await.unwrap();
        drop(stopped.raft);
        propose_all(&mut nodes, 200, 400).await;
        drive(&mut nodes, 2000, |nodes| {
            nodes.values().all(|n| n.applied.len() == 400)
        })
        .await;

        // It restarts from its files and catches up.
        nodes.insert(follower, start(&dir, follower, false).await);
        drive(&mut nodes, 4000, |nodes| {
            nodes.values().all(|n| committed_values(n).len() == 400)
        })
        .await;

        // Whole group restarts: every committed value is on every node, in order.
        for (_, node) in std::mem::take(&mut nodes) {
            node.log.close().await.unwrap();
        }
        for id in 1..=3 {
            nodes.insert(id, start(&dir, id, false).await);
        }
        propose_all(&mut nodes, 400, 410).await;
        drive(&mut nodes, 4000, |nodes| {
            nodes.values().all(|n| committed_values(n).len() == 410)
        })
        .await;
        for node in nodes.values() {
            assert_eq!(
                committed_values(node),
                expected(410),
                "node {}",
                node.raft.raft.id
            );
            let segments = crate::log::segment::list_segments(
                &dir.join(format!("node-{}", node.raft.raft.id)),
            );
            assert!(
                segments.unwrap().len() > 1,
                "the log spans several segments"
            );
        }
    });
}
