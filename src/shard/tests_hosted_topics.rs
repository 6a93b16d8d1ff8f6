//! What a shard holds of the controller's topics never goes back to an older state: a
//! replay after a replica's in-place restart (a full disk) tells each pass's state, older
//! than what the shard already holds.

use std::rc::Rc;

use crate::broker::access::AccessEntry;
use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::{ShardState, Topics};
use crate::config::NodeConfig;
use crate::controller::Placement;
use crate::metrics::ShardMetrics;
use crate::security::scram::StoredCredential;
use crate::shard::hosted_groups::HostedGroups;

#[test]
fn topics_older_than_those_held_are_ignored() {
    crate::runtime::run_on_executor("hosted-topics", 512 * 1024, || async {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            shards: 1,
            ..NodeConfig::default()
        };
        let placement = Placement::of_config(&config);
        let groups = Rc::new(
            HostedGroups::start(0, &config, &placement, ShardMetrics::detached(0))
                .await
                .unwrap(),
        );
        let credential = StoredCredential {
            salt: vec![1; 16],
            iterations: 4096,
            stored_key: [2; 32],
            server_key: [3; 32],
        };
        let mut state = ShardState::default();
        let entry = AccessEntry::SetUser {
            name: "alice".to_string(),
            credential,
        };
        state
            .apply(1, &BrokerEntry::Access(entry).encode())
            .unwrap();
        groups.controller_topics(&state.topics, 7);
        assert!(groups.with_access(|a| a.user("alice").is_some()));
        // A replay's first pass, before the user was created.
        groups.controller_topics(&Topics::default(), 3);
        assert!(
            groups.with_access(|a| a.user("alice").is_some()),
            "an older pass took the user away"
        );
        // The same state again, or a newer one, is taken.
        groups.controller_topics(&Topics::default(), 8);
        assert!(groups.with_access(|a| a.user("alice").is_none()));
    })
    .unwrap();
}
