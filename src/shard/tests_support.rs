//! What the shard's unit tests share: a shard's groups started on a one-shard node, and
//! a controller state holding one user.

use std::path::Path;
use std::rc::Rc;

use crate::broker::access::AccessEntry;
use crate::broker::log_entry::BrokerEntry;
use crate::broker::state::ShardState;
use crate::config::NodeConfig;
use crate::controller::Placement;
use crate::metrics::ShardMetrics;
use crate::security::scram::StoredCredential;
use crate::shard::hosted_groups::HostedGroups;

/// Shard 0's groups of a one-shard node keeping its data in `dir` (the controller's
/// replica among them), started and not yet told the controller's topics.
pub(super) async fn one_shard_groups(dir: &Path) -> Rc<HostedGroups> {
    let config = NodeConfig {
        data_dir: dir.to_path_buf(),
        shards: 1,
        ..NodeConfig::default()
    };
    let placement = Placement::of_config(&config);
    Rc::new(
        HostedGroups::start(0, &config, &placement, ShardMetrics::detached(0))
            .await
            .unwrap(),
    )
}

/// A controller state with `name` as its one user.
pub(super) fn state_with_user(name: &str, credential: StoredCredential) -> ShardState {
    let mut state = ShardState::default();
    let entry = AccessEntry::SetUser {
        name: name.to_string(),
        credential,
    };
    state
        .apply(1, &BrokerEntry::Access(entry).encode())
        .unwrap();
    state
}
