//! A local cluster of broker processes for the benchmarks that kill and restart nodes
//! (`keel bench failover`, `keel bench catchup`): three nodes of one shard each on
//! loopback, ports `port + 10 * (n - 1)`, data under one directory. Dropping it kills
//! every node. Owns the child processes only; never measures anything.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::security::PeerSecret;

/// Nodes of the cluster.
pub const NODES: u32 = 3;

/// How to start the nodes.
#[derive(Clone, Debug)]
pub struct LocalClusterSpec {
    /// The `keel` executable.
    pub executable: PathBuf,
    /// Data directory: node n keeps its data in `node-n` under it.
    pub data_dir: PathBuf,
    /// Port of node 1.
    pub port: u16,
    /// More `keel broker` arguments for every node.
    pub extra_args: Vec<String>,
}

/// Three broker processes.
pub struct LocalCluster {
    spec: LocalClusterSpec,
    children: Vec<Option<Child>>,
}

impl LocalCluster {
    /// A cluster of no running node yet.
    pub fn new(spec: LocalClusterSpec) -> LocalCluster {
        LocalCluster {
            spec,
            children: (0..NODES).map(|_| None).collect(),
        }
    }

    /// Node `node`'s client port.
    pub fn port(&self, node: u32) -> u16 {
        self.spec.port + 10 * (node as u16 - 1)
    }

    /// Starts node `node` (1-based) on its data.
    pub fn start_node(&mut self, node: u32) -> std::io::Result<()> {
        let peers: Vec<String> = (1..=NODES)
            .map(|n| format!("{n}=127.0.0.1:{}", self.port(n)))
            .collect();
        let secret = PeerSecret::file_in(&self.spec.data_dir).map_err(std::io::Error::other)?;
        let child = Command::new(&self.spec.executable)
            .args(["broker", "--node-id", &node.to_string()])
            .args(["--port", &self.port(node).to_string()])
            .args(["--shards", "1", "--segment-size", "16MiB"])
            .args(["--io-memory", "512KiB", "--peers", &peers.join(",")])
            .args(&self.spec.extra_args)
            .arg("--peer-secret-file")
            .arg(secret)
            .arg("--data-dir")
            .arg(self.spec.data_dir.join(format!("node-{node}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.children[(node - 1) as usize] = Some(child);
        Ok(())
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> std::io::Result<()> {
        (1..=NODES).try_for_each(|node| self.start_node(node))
    }

    /// Kills node `node` with SIGKILL and reaps it.
    pub fn kill(&mut self, node: u32) {
        if let Some(mut child) = self.children[(node - 1) as usize].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The client bootstrap list (every node).
    pub fn bootstrap(&self) -> String {
        (1..=NODES)
            .map(|n| format!("127.0.0.1:{}", self.port(n)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node serving client port `address` ends with, if any.
    pub fn node_of(&self, address: &str) -> Option<u32> {
        (1..=NODES).find(|&n| address.ends_with(&format!(":{}", self.port(n))))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in 1..=NODES {
            self.kill(node);
        }
    }
}
