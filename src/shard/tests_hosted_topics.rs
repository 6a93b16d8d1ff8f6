//! What a shard holds of the controller's topics never goes back to an older state: a
//! replay after a replica's in-place restart (a full disk) tells each pass's state, older
//! than what the shard already holds.

use crate::broker::state::Topics;
use crate::security::scram::StoredCredential;
use crate::shard::tests_support::{one_shard_groups, state_with_user};

#[test]
fn topics_older_than_those_held_are_ignored() {
    crate::runtime::run_on_executor("hosted-topics", 512 * 1024, || async {
        let dir = tempfile::tempdir().unwrap();
        let groups = one_shard_groups(dir.path()).await;
        let credential = StoredCredential {
            salt: vec![1; 16],
            iterations: 4096,
            stored_key: [2; 32],
            server_key: [3; 32],
        };
        let state = state_with_user("alice", credential);
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
