//! Node configuration: defaults, command-line flags, validated once at start.

use std::path::PathBuf;

use crate::log::LogConfig;

/// Largest frame a client may send, by default.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 8 * 1024 * 1024;

/// Largest record batch, by default (also bounded by the log's entry payload limit).
pub const DEFAULT_MAX_BATCH_BYTES: u32 = 1024 * 1024 - 64;

/// Milliseconds between Raft ticks.
pub const DEFAULT_TICK_MS: u64 = 10;

/// Settings of one broker node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (its Raft replica id), from 1.
    pub node_id: u32,
    /// Directory holding one sub-directory per shard.
    pub data_dir: PathBuf,
    /// Address to listen on and to advertise.
    pub host: String,
    /// Shard i listens on base_port + i.
    pub base_port: u16,
    /// Number of shards (executors).
    pub shards: u32,
    /// Pin each shard to its own CPU.
    pub pin_cores: bool,
    /// Registered I/O memory per shard.
    pub io_memory_bytes: usize,
    /// CommitLog settings of every shard.
    pub log: LogConfig,
    /// Largest frame accepted from a client.
    pub max_frame_bytes: u32,
    /// Largest record batch accepted.
    pub max_batch_bytes: u32,
    /// Milliseconds between Raft ticks.
    pub tick_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        NodeConfig {
            node_id: 1,
            data_dir: PathBuf::from("keel-data"),
            host: "127.0.0.1".to_string(),
            base_port: 9700,
            shards: cores.max(1),
            pin_cores: false,
            io_memory_bytes: crate::runtime::DEFAULT_IO_MEMORY_BYTES,
            log: LogConfig::default(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            tick_ms: DEFAULT_TICK_MS,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl NodeConfig {
    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |message: String| Err(ConfigError(message));
        if self.node_id == 0 {
            return fail("node id must be at least 1".to_string());
        }
        if self.shards == 0 || self.shards > 256 {
            return fail(format!(
                "shards must be between 1 and 256, not {}",
                self.shards
            ));
        }
        if u32::from(self.base_port) + self.shards > 65_536 {
            return fail(format!(
                "ports {}..{} do not fit",
                self.base_port,
                u32::from(self.base_port) + self.shards
            ));
        }
        if self.max_batch_bytes + 64 > self.log.max_entry_payload_bytes {
            return fail(format!(
                "max batch {} bytes must leave 64 bytes of room in the log's entry limit {}",
                self.max_batch_bytes, self.log.max_entry_payload_bytes
            ));
        }
        if self.max_frame_bytes < self.max_batch_bytes + 1024 {
            return fail("max frame must hold a whole batch".to_string());
        }
        self.log
            .validate()
            .map_err(|e| ConfigError(e.to_string()))?;
        Ok(())
    }

    /// The address of shard `shard`.
    pub fn shard_address(&self, shard: u32) -> String {
        format!("{}:{}", self.host, u32::from(self.base_port) + shard)
    }
}
