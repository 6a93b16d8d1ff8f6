//! A shard whose replica stopped on a full disk (ENOSPC) comes back once space is free,
//! without a node restart: the log is reopened in place (what a restart would find) and a
//! new replica starts over it; completions of the old replica's I/O are dropped (the
//! driver's generation counter). Owns only that; it never decides anything about the
//! group and never touches a replica that did not fail for want of space.

use std::rc::Rc;

use crate::replication::Replica;
use crate::shard::group_driver::{replica_config, ShardCore};

impl ShardCore {
    /// A replica stopped by a full disk starts again once a segment's worth of space is
    /// free: the log is reopened in place (what a restart would find) and a new replica
    /// starts over it, as after a restart, without stopping the node.
    pub(super) async fn recover_from_no_space(self: &Rc<Self>) {
        let needed = self.config.log.segment_size_bytes;
        if !self.no_space.get() || self.recovering.get() || self.stopping.get() {
            return;
        }
        if free_bytes(&self.config.data_dir).is_none_or(|free| free < needed) {
            return;
        }
        self.recovering.set(true);
        let outcome = self.restart_replica().await;
        self.recovering.set(false);
        match outcome {
            Ok(()) => tracing::info!(
                shard = self.shard_id,
                "space is free again: the replica restarted over its reopened log"
            ),
            Err(error) => {
                tracing::warn!(shard = self.shard_id, %error, "space is free but the replica could not restart yet")
            }
        }
    }

    async fn restart_replica(self: &Rc<Self>) -> Result<(), String> {
        self.log.reopen().await.map_err(|e| e.to_string())?;
        let state = crate::shard::restore_state(&self.log, &self.snapshots)?;
        let config = replica_config(self.shard_id, &self.config);
        let replica = Replica::new(self.log.clone(), state, config).map_err(|e| e.to_string())?;
        self.generation.set(self.generation.get() + 1);
        *self.replica.borrow_mut() = replica;
        // The failed replica answered its waiters; what is left lost its replica.
        self.requests.borrow_mut().clear();
        *self.failure.borrow_mut() = None;
        self.no_space.set(false);
        let mut effects = Vec::new();
        self.replica.borrow_mut().start(&mut effects);
        self.carry_out(effects);
        Ok(())
    }
}

/// Bytes free for unprivileged writers on the file system holding `path` (`None`: unknown).
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stats.blocks_available() as u64 * stats.fragment_size() as u64)
}
