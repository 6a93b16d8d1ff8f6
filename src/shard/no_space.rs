//! A shard whose replica stopped on a full disk (ENOSPC) comes back once space is free,
//! without a node restart: the log is reopened in place (what a restart would find) and a
//! new replica starts over it; completions of the old replica's I/O are dropped (the
//! driver's generation counter).
//!
//! Each group keeps a reserve of space (`SPACE_RESERVE_SEGMENTS` segments, a file of
//! allocated blocks next to its log, `data_layout::space_reserve`). When its replica stops on ENOSPC the reserve is
//! released, so the replica restarts at once with room for what needs no new segment: its
//! snapshots, the meta file, topic changes. It is told the disk is short of space
//! (`replication::low_space`: records refused, retention goes on) until the reserve can
//! be taken back with a segment to spare; then records are taken again.
//!
//! Owns only that; it never decides anything about the group and never touches a replica
//! that did not fail for want of space.

use std::rc::Rc;

use crate::constants::SPACE_RESERVE_SEGMENTS;
use crate::replication::events::Input;
use crate::replication::Replica;
use crate::shard::group_driver::{replica_config, ShardCore};

impl ShardCore {
    /// A replica stopped by a full disk starts again once a segment's worth of space is
    /// free: the log is reopened in place (what a restart would find) and a new replica
    /// starts over it, as after a restart, without stopping the node.
    pub(super) async fn recover_from_no_space(self: &Rc<Self>) {
        // The reserve released on the failure frees at least this much.
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
        let config = replica_config(self.group, &self.placement(), &self.config);
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
        self.feed(Input::SpaceLow {
            low: self.space_low.get(),
        });
        self.check_space_reserve();
        Ok(())
    }

    fn reserve_path(&self) -> std::path::PathBuf {
        crate::shard::data_layout::space_reserve(&self.config.data_dir, self.group)
    }

    fn reserve_bytes(&self) -> u64 {
        SPACE_RESERVE_SEGMENTS * self.config.log.segment_size_bytes
    }

    /// Takes the reserve (back) when it is missing and there is room for it and a segment
    /// beyond; tells the replica whether space is short (the reserve is missing).
    pub(super) fn check_space_reserve(self: &Rc<Self>) {
        if self.no_space.get() || self.reserve_bytes() == 0 {
            return;
        }
        let path = self.reserve_path();
        let held = std::fs::metadata(&path).is_ok_and(|m| m.len() >= self.reserve_bytes());
        let room = || {
            free_bytes(&self.config.data_dir).is_some_and(|free| {
                free >= self.reserve_bytes() + self.config.log.segment_size_bytes
            })
        };
        let held = held || (room() && allocate(&path, self.reserve_bytes()).is_ok());
        if held != self.space_low.get() {
            return;
        }
        self.space_low.set(!held);
        self.feed(Input::SpaceLow { low: !held });
    }

    /// Gives the reserve back to the file system (the replica stopped on ENOSPC).
    pub(super) fn release_space_reserve(&self) {
        self.space_low.set(true);
        match std::fs::remove_file(self.reserve_path()) {
            Ok(()) => tracing::warn!(
                shard = self.shard_id,
                bytes = self.reserve_bytes(),
                "disk full: the space reserve is released so the shard can restart and run \
                 retention; records are refused until it can be taken back"
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::error!(shard = self.shard_id, %error, "the space reserve could not be released")
            }
        }
    }
}

/// Creates `path` with `bytes` of allocated blocks (not a sparse file: the space is
/// taken now and given back by deleting it).
fn allocate(path: &std::path::Path, bytes: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::create(path)?;
    let length = i64::try_from(bytes).map_err(|_| std::io::Error::other("reserve too large"))?;
    let allocated = nix::fcntl::fallocate(
        file.as_raw_fd(),
        nix::fcntl::FallocateFlags::empty(),
        0,
        length,
    );
    if let Err(errno) = allocated {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(std::io::Error::from(errno));
    }
    file.sync_all()
}

/// Bytes free for unprivileged writers on the file system holding `path` (`None`: unknown).
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stats.blocks_available() as u64 * stats.fragment_size() as u64)
}
