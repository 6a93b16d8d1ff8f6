//! A node added to a running cluster (`--join HOST:PORT`): on its first start it asks
//! the controller's leader, through the node named, to record it and add it to the
//! controller group (`client::join_calls`); the answer (the bootstrap nodes, shards,
//! replication factor, the controller configuration it was added in) is written to
//! `data_dir/cluster-join.toml`, durably, before anything else starts. Every later start
//! reads it back and asks nothing.
//!
//! ```text
//! first start:  --join ─▶ JoinClusterRequest ─▶ controller leader: Join entry, AddLearner
//!               answer ─▶ cluster-join.toml (synced) ─▶ config.peers, config.joined
//! later starts: cluster-join.toml ─▶ config.peers, config.joined
//! ```
//!
//! Owns that file and the first start's question; never places a replica (moves do).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::join_calls::JoinAnswer;
use crate::client::{ClientSecurity, ClusterClient};
use crate::config::{parse_peers, NodeConfig, PeerAddress};
use crate::log::ConfStateRecord;
use crate::shard::data_layout;

/// The file a node that joined keeps what its join answered in.
pub const JOIN_FILE: &str = "cluster-join.toml";

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The cluster did not take it.
    #[error("cannot join the cluster through {through}: {message}")]
    Refused {
        /// The node asked.
        through: String,
        /// Why.
        message: String,
    },
    /// The join file cannot be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The configuration does not fit the cluster joined.
    #[error("{0}")]
    Config(String),
}

/// What a join answered, as kept on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRecord {
    /// The cluster's bootstrap nodes, as `--peers` names them.
    peers: String,
    replication_factor: u32,
    shards: u32,
    /// The controller group's configuration that added this node.
    controller_voters: Vec<u64>,
    controller_learners: Vec<u64>,
    controller_index: u64,
    /// Where this node said it listens when it joined (the cluster records it so).
    #[serde(default)]
    host: String,
    #[serde(default)]
    base_port: u16,
    #[serde(default)]
    peer_port: u16,
}

/// The configuration to run with: unchanged for a node of the bootstrap; for a node that
/// joined (now or before), with the cluster's bootstrap nodes and replication factor and
/// the controller configuration it was added in.
pub fn resolve(mut config: NodeConfig) -> Result<NodeConfig, JoinError> {
    let path = config.data_dir.join(JOIN_FILE);
    let record = match read(&path)? {
        Some(record) => {
            if !config.peers.is_empty() {
                return Err(JoinError::Config(format!(
                    "node {} joined its cluster ({}): start it without --peers",
                    config.node_id,
                    path.display()
                )));
            }
            record
        }
        None => {
            let Some(through) = config.join.clone() else {
                return Ok(config);
            };
            if !config.peers.is_empty() {
                return Err(JoinError::Config(
                    "give --peers (a bootstrap node) or --join (a node added later), not both"
                        .into(),
                ));
            }
            if data_layout::holds_any_group(&config.data_dir) {
                return Err(JoinError::Config(format!(
                    "{} holds a node's data but no {JOIN_FILE}: a node joins with an empty \
                     data directory",
                    config.data_dir.display()
                )));
            }
            let record = ask(&config, &through)?;
            write(&path, &record)?;
            tracing::info!(node = config.node_id, %through, "joined the cluster");
            record
        }
    };
    let peer_port = u16::try_from(config.peer_base_port()).unwrap_or(0);
    let joined_at = (record.host.as_str(), record.base_port, record.peer_port);
    if !record.host.is_empty() && joined_at != (config.host.as_str(), config.base_port, peer_port) {
        return Err(JoinError::Config(format!(
            "node {} joined its cluster listening on {}:{} (peer port {}); the cluster sends \
             there: start it with --host {} --port {} --peer-port {}",
            config.node_id,
            record.host,
            record.base_port,
            record.peer_port,
            record.host,
            record.base_port,
            record.peer_port
        )));
    }
    if record.shards != config.shards {
        return Err(JoinError::Config(format!(
            "every node of this cluster runs {} shards; start node {} with --shards {}",
            record.shards, config.node_id, record.shards
        )));
    }
    config.peers = parse_peers(&record.peers)
        .map_err(|e| JoinError::Config(format!("{}: peers: {e}", path.display())))?;
    config.replication_factor = record.replication_factor;
    config.joined = Some(ConfStateRecord {
        voters: record.controller_voters,
        learners: record.controller_learners,
        index: record.controller_index,
        ..Default::default()
    });
    Ok(config)
}

/// Asks the cluster, through `through`, to take this node.
fn ask(config: &NodeConfig, through: &str) -> Result<JoinRecord, JoinError> {
    let refused = |message: String| JoinError::Refused {
        through: through.to_string(),
        message,
    };
    let node = PeerAddress {
        node_id: config.node_id,
        host: config.host.clone(),
        base_port: config.base_port,
        peer_port: u16::try_from(config.peer_base_port())
            .map_err(|_| refused("the peer port does not fit (give --peer-port)".into()))?,
        rack: config.rack.clone(),
    };
    let security = match &config.tls {
        None => ClientSecurity::default(),
        Some(tls) => match tls.as_client() {
            Ok(Some(tls)) => ClientSecurity {
                tls: Some(tls),
                credentials: None,
            },
            Ok(None) => {
                return Err(refused(
                    "a node with TLS joins with the cluster's CA (--tls-ca) to trust the node \
                     it joins through"
                        .into(),
                ))
            }
            Err(error) => return Err(refused(error.to_string())),
        },
    };
    let mut client = ClusterClient::with_security(through, security);
    let answer: JoinAnswer = client
        .join_cluster(&node, config.shards, config.peer_secret.as_ref())
        .map_err(|e| refused(e.to_string()))?;
    if !answer.learners.contains(&u64::from(config.node_id)) {
        return Err(refused(format!(
            "the controller's configuration does not name node {} ({:?})",
            config.node_id, answer
        )));
    }
    Ok(JoinRecord {
        peers: answer.peers,
        replication_factor: answer.replication_factor,
        shards: answer.shards,
        controller_voters: answer.voters,
        controller_learners: answer.learners,
        controller_index: answer.index,
        host: node.host,
        base_port: node.base_port,
        peer_port: node.peer_port,
    })
}

fn read(path: &Path) -> Result<Option<JoinRecord>, JoinError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(file_error(path, error)),
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| JoinError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Writes the record to a temporary file, syncs it, renames it into place and syncs the
/// directory: the file is whole or absent after a crash.
fn write(path: &Path, record: &JoinRecord) -> Result<(), JoinError> {
    let text = toml::to_string(record).map_err(|e| JoinError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let temporary = path.with_extension("toml.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(|e| file_error(&temporary, e))?;
    let header = "# What this node's join of its cluster answered (keel broker --join). Kept for\n\
                  # every later start; do not edit.\n";
    file.write_all(header.as_bytes())
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| file_error(path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| file_error(dir, e))
}

fn file_error(path: &Path, error: std::io::Error) -> JoinError {
    JoinError::File {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_record_survives_its_file_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOIN_FILE);
        assert_eq!(read(&path).unwrap(), None);
        let record = JoinRecord {
            peers: "1=127.0.0.1:9700/9800,2=127.0.0.1:9710/9810".into(),
            replication_factor: 3,
            shards: 2,
            controller_voters: vec![1, 2],
            controller_learners: vec![4],
            controller_index: 17,
            host: "127.0.0.1".into(),
            base_port: 9720,
            peer_port: 9820,
        };
        write(&path, &record).unwrap();
        assert_eq!(read(&path).unwrap(), Some(record));
        let config = NodeConfig {
            node_id: 4,
            data_dir: dir.path().to_path_buf(),
            shards: 2,
            base_port: 9720,
            peer_secret: crate::security::PeerSecret::from_bytes(&[4; 32]).ok(),
            ..NodeConfig::default()
        };
        let resolved = resolve(config.clone()).unwrap();
        assert_eq!(resolved.peers.len(), 2);
        assert_eq!(resolved.joined.as_ref().unwrap().learners, vec![4]);
        resolved.validate().unwrap();
        let moved = NodeConfig {
            base_port: 9730,
            ..config.clone()
        };
        assert!(resolve(moved)
            .unwrap_err()
            .to_string()
            .contains("--port 9720 --peer-port 9820"));
        let wrong_shards = NodeConfig {
            shards: 3,
            ..config
        };
        assert!(resolve(wrong_shards)
            .unwrap_err()
            .to_string()
            .contains("--shards 2"));
        std::fs::write(&path, "peers = 3\n").unwrap();
        assert!(matches!(read(&path), Err(JoinError::File { .. })));
    }
}
