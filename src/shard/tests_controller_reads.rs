//! The controller's requests at a leader that has not yet applied what its predecessors
//! committed: they wait until it has (a bounded time, then "not leader"), never answered
//! from the tables as they were before its term.

use raft::prelude::{ConfState, Entry};

use crate::broker::access::AccessEntry;
use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::ShardState;
use crate::config::NodeConfig;
use crate::controller::{Placement, CONTROLLER_GROUP};
use crate::log::meta::HardStateRecord;
use crate::log::raft_storage::from_conf_state;
use crate::log::{CommitLog, LogConfig};
use crate::metrics::ShardMetrics;
use crate::protocol::codec::decode_response;
use crate::protocol::wire::ErrorCode;
use crate::security::scram::StoredCredential;
use crate::shard::access_requests::handle_list_users;
use crate::shard::group_driver::ShardCore;
use crate::shard::snapshots::SnapshotFiles;

/// A controller log of one voter whose term-1 entries create `users`, committed before
/// a restart that persisted the commit index as 0 (it is written lazily).
async fn controller_log_with_users(dir: &std::path::Path, users: &[&str]) -> CommitLog {
    let log = CommitLog::open(&dir.join("group-0"), LogConfig::default())
        .await
        .unwrap();
    let voters = ConfState {
        voters: vec![1],
        ..Default::default()
    };
    log.set_conf_state(from_conf_state(&voters, 0)).unwrap();
    let entries: Vec<Entry> = (1u64..)
        .zip(users)
        .map(|(index, name)| {
            let credential = StoredCredential {
                salt: vec![1; 16],
                iterations: 4096,
                stored_key: [2; 32],
                server_key: [3; 32],
            };
            let name = (*name).to_string();
            Entry {
                index,
                term: 1,
                data: BrokerEntry::Access(AccessEntry::SetUser { name, credential })
                    .encode()
                    .into(),
                ..Default::default()
            }
        })
        .collect();
    log.append(&entries).unwrap();
    log.set_hard_state(HardStateRecord {
        term: 1,
        vote: 1,
        commit: 0,
    });
    log.flush().await.unwrap();
    log
}

/// Regression (CI at 5f845d6, `auth_e2e`: after a whole-cluster restart `keel user list`
/// answered no users): a new controller leader answers once it has applied the entries
/// of the terms before its own.
#[test]
fn a_new_controller_leader_answers_from_what_was_committed_before_its_term() {
    crate::runtime::run_on_executor("controller-reads", 512 * 1024, || async {
        let dir = tempfile::tempdir().unwrap();
        let log = controller_log_with_users(dir.path(), &["alice", "bob"]).await;
        let snapshots = SnapshotFiles::open(&dir.path().join("snapshots")).unwrap();
        let config = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            shards: 1,
            ..NodeConfig::default()
        };
        let placement = Placement::of_config(&config);
        let core = ShardCore::start(
            (0, CONTROLLER_GROUP),
            (config, placement),
            (log, snapshots, ShardState::default()),
            ShardMetrics::detached(0).group(0),
        )
        .unwrap();
        let (mut refused, started) = (0, std::time::Instant::now());
        let users = loop {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "no answer in 30 s ({refused} refusals)"
            );
            match handle_list_users(&core, 1).await {
                Ok(answer) => {
                    let response = decode_response(answer.message()).unwrap();
                    let list = response.body_as_list_users_response().unwrap();
                    let names: Vec<String> = list
                        .users()
                        .unwrap()
                        .iter()
                        .map(|user| user.name().unwrap_or_default().to_string())
                        .collect();
                    break names;
                }
                Err(error) => {
                    assert_eq!(error.code, ErrorCode::NotLeader, "{}", error.message);
                    refused += 1;
                }
            }
            futures_lite::future::yield_now().await;
        };
        assert_eq!(users, ["alice", "bob"], "answered after {refused} refusals");
    })
    .unwrap();
}
