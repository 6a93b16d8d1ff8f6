//! Node configuration: defaults, command-line flags, validated once at start.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::constants::PEER_FRAME_HEADROOM_BYTES;
use crate::log::LogConfig;
use crate::security::tls::{NodeTls, TlsFiles};
use crate::security::PeerSecret;
use std::sync::Arc;

/// Largest frame a client may send, by default.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 8 * 1024 * 1024;

/// Largest record batch, by default (also bounded by the log's entry payload limit).
pub const DEFAULT_MAX_BATCH_BYTES: u32 = 1024 * 1024 - 64;

/// Milliseconds between Raft ticks.
pub const DEFAULT_TICK_MS: u64 = 10;

/// Where a node's peer port is when not given: this far above its client port (client
/// port 9700: peers on 9800). Leaves room for 100 shards' client ports in between, and for
/// `keel dev`'s nodes, 10 ports apart, to keep their client and peer ports apart.
pub const DEFAULT_PEER_PORT_OFFSET: u16 = 100;

/// Settings of one broker node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (its Raft replica id), from 1.
    pub node_id: u32,
    /// Directory holding one sub-directory per shard.
    pub data_dir: PathBuf,
    /// Address to listen on and to advertise.
    pub host: String,
    /// Shard i listens for clients on base_port + i.
    pub base_port: u16,
    /// Shard i listens for the other nodes' Raft messages on peer_port + i (the peer
    /// port; never the client port). `None`: base_port + `DEFAULT_PEER_PORT_OFFSET`.
    /// Only a node of a cluster (with `peers`) listens on it.
    pub peer_port: Option<u16>,
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
    /// Every node of the cluster, this one included (empty: a single node). Where the
    /// replica groups run follows from these, `shards` and `replication_factor`
    /// (`controller::placement`): every node of a cluster must give the same three.
    pub peers: Vec<PeerAddress>,
    /// Replicas of each data group (1, 3 or 5; fewer in a cluster of fewer nodes). A
    /// cluster larger than this spreads the groups out: each node holds some of them.
    pub replication_factor: u32,
    /// Ticks without hearing a leader before a follower starts an election (randomized
    /// between this and twice it): 10 x 10 ms = 100-200 ms by default.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats (2 x 10 ms = 20 ms by default).
    pub heartbeat_ticks: usize,
    /// Leader balancing: group i's preferred leader is the (i mod N)-th node (by id), so
    /// each node leads about 1/N of the groups. A leader hands its group to the preferred
    /// node once that node has been up to date for this long (`None`: never).
    pub leader_balance_delay: Option<std::time::Duration>,
    /// Retention: when a group's log holds more than this many bytes, its oldest segments
    /// are removed (after a snapshot of the applied state at the cut); `None` keeps all.
    pub retention_bytes: Option<u64>,
    /// Retention: sealed segments whose newest entry was written longer ago than this
    /// are removed (same snapshot rule); `None` keeps them.
    pub retention_age: Option<std::time::Duration>,
    /// Bytes per second a leader sends to each learner (a replica being moved here,
    /// catching up): a move takes the disk and network at a bounded rate while the
    /// group serves (0: unpaced).
    pub learner_bytes_per_second: u64,
    /// A node of a running cluster to join through (`host:port`, its client port) on
    /// this node's first start; the cluster's bootstrap nodes, shards and replication
    /// factor come from there (`shard::join_cluster`) and are kept in the data directory
    /// for every later start. Not given with `peers`.
    pub join: Option<String>,
    /// This node's failure domain when it joins (the bootstrap nodes name theirs in
    /// `peers`).
    pub rack: Option<String>,
    /// Set once this node joined (never from flags or files): the controller group's
    /// configuration that added it, its replica's first one.
    pub joined: Option<crate::log::ConfStateRecord>,
    /// The cluster's shared secret (read from `peer_secret_file`, the same on every
    /// node): a peer connection's hello and a join must prove it. Required of a node of
    /// a cluster (with `peers` or `join`); a node without it admits no peer connection.
    pub peer_secret: Option<PeerSecret>,
    /// The node's TLS certificate chain, key and the cluster's CA (PEM files; `tls_cert`,
    /// `tls_key`, `tls_ca`): with the first two, the client port speaks TLS only; with
    /// the CA too, the peer port speaks mutual TLS and clients may present certificates.
    pub tls_files: TlsFileNames,
    /// Those files read (`load_tls`); `None` without TLS.
    pub tls: Option<Arc<NodeTls>>,
    /// Clients must authenticate (`client_auth`): SCRAM-SHA-256 with a user's password,
    /// or a client certificate from `tls_ca` (its common name is the principal); every
    /// request is then checked against the access rules. Off: every client may do
    /// everything (the node warns at start that it is open).
    pub client_auth: bool,
    /// Principals allowed everything whatever the rules say (`superusers`).
    pub superusers: Vec<String>,
    /// This node's own users (read from `users_file`, `security::users_file`): for the
    /// superuser who creates the replicated ones. A name in both: this one is used.
    pub local_users: std::collections::BTreeMap<String, crate::security::scram::StoredCredential>,
    /// Port of the node's metrics endpoint (`metrics_port`: `GET /metrics`, Prometheus
    /// text format, on `host`); `None`: metrics are counted but not served.
    pub metrics_port: Option<u16>,
}

/// The TLS files a node is given, as named (`NodeConfig::load_tls` reads them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFileNames {
    /// Certificate chain.
    pub cert: Option<PathBuf>,
    /// Private key.
    pub key: Option<PathBuf>,
    /// CA.
    pub ca: Option<PathBuf>,
}

/// Bytes per second a leader sends a catching-up learner unless configured: a 1 GiB
/// replica moves in about 2 minutes. The rate at which the producers' p99 during a move
/// stayed within twice the idle one on a host whose nodes share one disk and two cores
/// (`scripts/bench-move.sh`: 1.8x at 8 MiB/s, 2.1x at 12, 2.4x at 24).
pub const DEFAULT_LEARNER_BYTES_PER_SECOND: u64 = 8 << 20;

/// Replicas of each data group unless configured.
pub const DEFAULT_REPLICATION_FACTOR: u32 = 3;

/// How long a preferred leader must be up to date before leadership moves to it.
pub const DEFAULT_LEADER_BALANCE_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads a leader-balance delay: a duration ("5s", "500ms") or "off".
pub fn parse_leader_balance_delay(text: &str) -> Result<Option<std::time::Duration>, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    crate::units::parse_duration(text).map(Some)
}

/// Where a node of the cluster listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddress {
    /// Its node id.
    pub node_id: u32,
    /// Its host.
    pub host: String,
    /// Client port of its shard 0.
    pub base_port: u16,
    /// Peer port of its shard 0 (its shard i takes Raft messages on peer_port + i).
    pub peer_port: u16,
    /// Its failure domain (`@rack` in `--peers`): no two replicas of a group share one
    /// while enough racks remain.
    pub rack: Option<String>,
}

/// Parses `1=host:port/peer_port@rack,2=host:port,...`: each node's shard-0 client port
/// and, after a slash, its shard-0 peer port (without one: port +
/// `DEFAULT_PEER_PORT_OFFSET`) and, after an `@`, its rack (1-64 of [A-Za-z0-9._-]).
pub fn parse_peers(text: &str) -> Result<Vec<PeerAddress>, String> {
    let mut peers = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (id, address) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected id=host:port"))?;
        let (address, rack) = match address.rsplit_once('@') {
            Some((address, rack)) => {
                check_rack(rack).map_err(|e| format!("{item:?}: {e}"))?;
                (address, Some(rack.to_string()))
            }
            None => (address, None),
        };
        let node_id: u32 = id
            .parse()
            .map_err(|_| format!("{item:?}: {id:?} is not a node id"))?;
        let (host, ports) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("{item:?}: expected host:port or host:port/peer_port"))?;
        let (port, peer_port) = match ports.split_once('/') {
            Some((port, peer_port)) => (port, Some(peer_port)),
            None => (ports, None),
        };
        let parse_port = |text: &str| {
            text.parse::<u16>()
                .ok()
                .filter(|&port| port != 0)
                .ok_or_else(|| format!("{item:?}: {text:?} is not a port"))
        };
        let base_port = parse_port(port)?;
        let peer_port = match peer_port {
            Some(text) => parse_port(text)?,
            None => base_port
                .checked_add(DEFAULT_PEER_PORT_OFFSET)
                .ok_or_else(|| {
                    format!(
                        "{item:?}: the default peer port {port} + {DEFAULT_PEER_PORT_OFFSET} \
                         is not a port; give one: host:port/peer_port"
                    )
                })?,
        };
        if node_id == 0 || peers.iter().any(|p: &PeerAddress| p.node_id == node_id) {
            return Err(format!("{item:?}: node ids are unique and start at 1"));
        }
        peers.push(PeerAddress {
            node_id,
            host: host.to_string(),
            base_port,
            peer_port,
            rack,
        });
    }
    Ok(peers)
}

/// A rack label: 1-64 of [A-Za-z0-9._-].
pub fn check_rack(rack: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&rack.len())
        && rack
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!("rack {rack:?} must be 1-64 of [A-Za-z0-9._-]"))
    }
}

/// The nodes as `--peers` names them (what `parse_peers` reads back).
pub fn format_peers(peers: &[PeerAddress]) -> String {
    peers
        .iter()
        .map(|p| {
            let rack = p.rack.as_ref().map_or(String::new(), |r| format!("@{r}"));
            format!(
                "{}={}:{}/{}{rack}",
                p.node_id, p.host, p.base_port, p.peer_port
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Default for NodeConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        NodeConfig {
            node_id: 1,
            data_dir: PathBuf::from("keel-data"),
            host: "127.0.0.1".to_string(),
            base_port: 9700,
            peer_port: None,
            shards: cores.max(1),
            pin_cores: false,
            io_memory_bytes: crate::runtime::DEFAULT_IO_MEMORY_BYTES,
            log: LogConfig::default(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            tick_ms: DEFAULT_TICK_MS,
            peers: Vec::new(),
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            election_ticks: 10,
            heartbeat_ticks: 2,
            leader_balance_delay: Some(DEFAULT_LEADER_BALANCE_DELAY),
            retention_bytes: None,
            retention_age: None,
            learner_bytes_per_second: DEFAULT_LEARNER_BYTES_PER_SECOND,
            join: None,
            rack: None,
            joined: None,
            peer_secret: None,
            tls_files: TlsFileNames::default(),
            tls: None,
            client_auth: false,
            superusers: Vec::new(),
            local_users: std::collections::BTreeMap::new(),
            metrics_port: None,
        }
    }
}

/// The broker's configuration file (TOML). Every key is optional; command-line flags win
/// over the file, the file over the defaults. Unknown keys are an error.
///
/// ```toml
/// node_id = 1
/// data_dir = "/var/lib/keel"
/// host = "10.0.0.5"
/// port = 9700            # shard i listens for clients on port + i
/// peer_port = 9800       # and for the other nodes on peer_port + i (default: port + 100)
/// shards = 4
/// pin_cores = true
/// io_memory = "2MiB"
/// segment_size = "128MiB"
/// max_frame = "8MiB"
/// max_batch = "1MiB"
/// tick_ms = 10
/// election_ticks = 10    # election timeout: 100-200 ms at 10 ms ticks
/// heartbeat_ticks = 2
/// leader_balance_delay = "5s"   # or "off"
/// retention_bytes = "10GiB"      # per group log; unset keeps everything
/// retention_age = "7d"           # sealed segments older than this go; unset keeps them
/// learner_rate = "8MiB"          # per second, to each replica being moved here; "0": unpaced
/// peers = "1=10.0.0.5:9700/9800,2=10.0.0.6:9700/9800,3=10.0.0.7:9700/9800"
/// # or, for a node added to a running cluster (instead of peers):
/// # join = "10.0.0.5:9700"      # any node's client port; its first start joins there
/// # rack = "east-1"
/// peer_secret_file = "/etc/keel/peer.secret"   # the same secret file on every node
/// replication_factor = 3         # replicas per data group; the same on every node
/// # tls_cert = "/etc/keel/node.crt"   # with tls_key: clients speak TLS
/// # tls_key = "/etc/keel/node.key"
/// # tls_ca = "/etc/keel/ca.crt"       # mutual TLS between nodes; client certificates
/// # client_auth = true                # clients authenticate (SCRAM or a certificate)
/// # superusers = ["admin"]            # allowed everything
/// # users_file = "/etc/keel/users"    # this node's own users (`keel user hash`)
/// metrics_port = 9900            # GET http://host:9900/metrics (Prometheus); unset: off
/// ```
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Node id.
    pub node_id: Option<u32>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Listen and advertise address.
    pub host: Option<String>,
    /// Client port of shard 0.
    pub port: Option<u16>,
    /// Peer port of shard 0.
    pub peer_port: Option<u16>,
    /// Number of shards.
    pub shards: Option<u32>,
    /// Pin shards to CPUs.
    pub pin_cores: Option<bool>,
    /// Registered I/O memory per shard ("2MiB").
    pub io_memory: Option<String>,
    /// Segment size ("128MiB").
    pub segment_size: Option<String>,
    /// Largest frame ("8MiB").
    pub max_frame: Option<String>,
    /// Largest batch ("1MiB").
    pub max_batch: Option<String>,
    /// Milliseconds between Raft ticks.
    pub tick_ms: Option<u64>,
    /// Every node of the cluster: "1=host:port/peer_port,2=host:port,3=host:port".
    pub peers: Option<String>,
    /// Replicas of each data group (1, 3 or 5).
    pub replication_factor: Option<u32>,
    /// Ticks before an election.
    pub election_ticks: Option<usize>,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: Option<usize>,
    /// How long a preferred leader is up to date before it takes its group ("5s", "off").
    pub leader_balance_delay: Option<String>,
    /// Bytes a group's log keeps before its oldest segments are removed ("10GiB").
    pub retention_bytes: Option<String>,
    /// Age after which sealed segments are removed ("7d").
    pub retention_age: Option<String>,
    /// Bytes per second sent to a learner catching up ("24MiB"; "0": unpaced).
    pub learner_rate: Option<String>,
    /// A node of a running cluster to join ("10.0.0.5:9700").
    pub join: Option<String>,
    /// This node's rack when it joins.
    pub rack: Option<String>,
    /// A file holding the cluster's shared peer secret (at least 32 bytes).
    pub peer_secret_file: Option<PathBuf>,
    /// The node's certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA (PEM).
    pub tls_ca: Option<PathBuf>,
    /// Clients must authenticate.
    pub client_auth: Option<bool>,
    /// Principals allowed everything.
    pub superusers: Option<Vec<String>>,
    /// A file of this node's own users (`keel user hash`).
    pub users_file: Option<PathBuf>,
    /// Port of the metrics endpoint.
    pub metrics_port: Option<u16>,
}

impl ConfigFile {
    /// Reads and parses a configuration file.
    pub fn read(path: &std::path::Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Applies the file's settings over `config`.
    pub fn apply(&self, config: &mut NodeConfig) -> Result<(), ConfigError> {
        let size = |value: &Option<String>, key: &str| -> Result<Option<u64>, ConfigError> {
            value
                .as_deref()
                .map(|text| {
                    crate::units::parse_size(text).map_err(|e| ConfigError(format!("{key}: {e}")))
                })
                .transpose()
        };
        let to_u32 = |value: u64, key: &str| {
            u32::try_from(value).map_err(|_| ConfigError(format!("{key}: {value} is too large")))
        };
        if let Some(node_id) = self.node_id {
            config.node_id = node_id;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(host) = &self.host {
            config.host = host.clone();
        }
        if let Some(port) = self.port {
            config.base_port = port;
        }
        if let Some(port) = self.peer_port {
            config.peer_port = Some(port);
        }
        if let Some(shards) = self.shards {
            config.shards = shards;
        }
        if let Some(pin) = self.pin_cores {
            config.pin_cores = pin;
        }
        if let Some(bytes) = size(&self.io_memory, "io_memory")? {
            config.io_memory_bytes =
                usize::try_from(bytes).map_err(|_| ConfigError("io_memory too large".into()))?;
        }
        if let Some(bytes) = size(&self.segment_size, "segment_size")? {
            config.log.segment_size_bytes = bytes;
        }
        if let Some(bytes) = size(&self.max_frame, "max_frame")? {
            config.max_frame_bytes = to_u32(bytes, "max_frame")?;
        }
        if let Some(bytes) = size(&self.max_batch, "max_batch")? {
            config.max_batch_bytes = to_u32(bytes, "max_batch")?;
        }
        if let Some(tick) = self.tick_ms {
            config.tick_ms = tick;
        }
        if let Some(peers) = &self.peers {
            config.peers = parse_peers(peers).map_err(ConfigError)?;
        }
        if let Some(factor) = self.replication_factor {
            config.replication_factor = factor;
        }
        if let Some(ticks) = self.election_ticks {
            config.election_ticks = ticks;
        }
        if let Some(ticks) = self.heartbeat_ticks {
            config.heartbeat_ticks = ticks;
        }
        if let Some(bytes) = size(&self.retention_bytes, "retention_bytes")? {
            config.retention_bytes = Some(bytes);
        }
        if let Some(join) = &self.join {
            config.join = Some(join.clone());
        }
        if let Some(rack) = &self.rack {
            config.rack = Some(rack.clone());
        }
        for (value, slot) in [
            (&self.tls_cert, &mut config.tls_files.cert),
            (&self.tls_key, &mut config.tls_files.key),
            (&self.tls_ca, &mut config.tls_files.ca),
        ] {
            if let Some(path) = value {
                *slot = Some(path.clone());
            }
        }
        if let Some(path) = &self.peer_secret_file {
            config.peer_secret =
                Some(PeerSecret::load(path).map_err(|e| ConfigError(e.to_string()))?);
        }
        if let Some(on) = self.client_auth {
            config.client_auth = on;
        }
        if let Some(superusers) = &self.superusers {
            config.superusers = superusers.clone();
        }
        if let Some(path) = &self.users_file {
            config.local_users =
                crate::security::users_file::load_users(path).map_err(ConfigError)?;
        }
        if let Some(bytes) = size(&self.learner_rate, "learner_rate")? {
            config.learner_bytes_per_second = bytes;
        }
        if let Some(port) = self.metrics_port {
            config.metrics_port = Some(port);
        }
        if let Some(text) = &self.retention_age {
            config.retention_age = Some(
                crate::units::parse_duration(text)
                    .map_err(|e| ConfigError(format!("retention_age: {e}")))?,
            );
        }
        if let Some(text) = &self.leader_balance_delay {
            config.leader_balance_delay = parse_leader_balance_delay(text)
                .map_err(|e| ConfigError(format!("leader_balance_delay: {e}")))?;
        }
        Ok(())
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl NodeConfig {
    /// Authentication settings that work together: superusers and users only with
    /// client authentication, which needs a superuser (no one could create a user or a
    /// rule otherwise).
    fn validate_client_auth(&self) -> Result<(), ConfigError> {
        let fail = |message: &str| Err(ConfigError(message.to_string()));
        if !self.client_auth {
            if !self.superusers.is_empty() || !self.local_users.is_empty() {
                return fail(
                    "superusers and a users file are for client authentication: add --client-auth (TOML \
                     client_auth = true)",
                );
            }
            return Ok(());
        }
        if self.superusers.is_empty() {
            return fail(
                "client authentication needs a superuser who may create users and rules: \
                 --superuser NAME (a user of --users-file, or a client certificate's common \
                 name)",
            );
        }
        if let Some(bad) = self
            .superusers
            .iter()
            .find(|name| !crate::broker::access::valid_principal(name))
        {
            return Err(ConfigError(format!(
                "superuser {bad:?}: a name of 1-255 bytes without control characters, not *"
            )));
        }
        Ok(())
    }

    /// Reads the TLS files named in `tls_files` into `tls` (a certificate and its key
    /// go together; a CA needs them).
    pub fn load_tls(&mut self) -> Result<(), ConfigError> {
        let TlsFileNames { cert, key, ca } = self.tls_files.clone();
        let files = match (cert, key) {
            (Some(cert), Some(key)) => TlsFiles {
                node: u64::from(self.node_id),
                cert,
                key,
                ca,
            },
            (None, None) if ca.is_none() => return Ok(()),
            _ => {
                return Err(ConfigError(
                    "TLS needs the node's certificate and its key together (tls_cert, \
                     tls_key); tls_ca adds mutual TLS between nodes"
                        .into(),
                ))
            }
        };
        self.tls = Some(NodeTls::load(files).map_err(|e| ConfigError(e.to_string()))?);
        Ok(())
    }

    /// Whether peer connections are mutual TLS (a CA is configured).
    pub fn peer_tls(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| tls.files().ca.is_some())
    }

    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |message: String| Err(ConfigError(message));
        if self.node_id == 0 {
            return fail("node id must be at least 1".to_string());
        }
        if let Some(bytes) = self.retention_bytes {
            if bytes < 2 * self.log.segment_size_bytes {
                return fail(format!(
                    "retention_bytes ({bytes}) must be at least two segments ({} each): \
                     retention removes whole segments",
                    self.log.segment_size_bytes
                ));
            }
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
        self.check_peer_ports()?;
        self.check_metrics_port()?;
        if self.max_batch_bytes + 64 > self.log.max_entry_payload_bytes {
            return fail(format!(
                "max batch {} bytes must leave 64 bytes of room in the log's entry limit {}",
                self.max_batch_bytes, self.log.max_entry_payload_bytes
            ));
        }
        if self.max_frame_bytes < self.max_batch_bytes + 1024 {
            return fail("max frame must hold a whole batch".to_string());
        }
        let entry_frame_bytes =
            u64::from(self.log.max_entry_payload_bytes) + u64::from(PEER_FRAME_HEADROOM_BYTES);
        if u64::from(self.max_frame_bytes) < entry_frame_bytes {
            return fail(format!(
                "max frame ({} bytes) must hold the largest log entry ({} bytes) and {} bytes \
                 of a peer frame's own fields: entries travel to peers in frames",
                self.max_frame_bytes, self.log.max_entry_payload_bytes, PEER_FRAME_HEADROOM_BYTES
            ));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return fail(format!(
                "election ticks ({}) must exceed heartbeat ticks ({}), which must be at least 1",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if self.tick_ms == 0 {
            return fail("tick_ms must be at least 1".to_string());
        }
        if ![1, 3, 5].contains(&self.replication_factor) {
            return fail(format!(
                "replication factor must be 1, 3 or 5, not {} (an even number of replicas \
                 survives no more failures than one fewer)",
                self.replication_factor
            ));
        }
        let named = self.peers.iter().any(|p| p.node_id == self.node_id);
        if self.joined.is_some() {
            if named {
                return fail(format!(
                    "node {} is a bootstrap node of the cluster it joined (in its --peers): \
                     start it with --peers, not --join",
                    self.node_id
                ));
            }
        } else if self.join.is_some() {
            if !self.peers.is_empty() {
                return fail(
                    "give --peers (a bootstrap node) or --join (a node added later), not both"
                        .into(),
                );
            }
        } else if !self.peers.is_empty() && !named {
            return fail(format!("--peers must include this node ({})", self.node_id));
        }
        let in_cluster = !self.peers.is_empty() || self.join.is_some() || self.joined.is_some();
        if in_cluster && self.peer_secret.is_none() && !self.peer_tls() {
            return fail(
                "a node of a cluster needs the cluster's shared secret, the same file on \
                 every node: --peer-secret-file FILE (TOML peer_secret_file); make one with \
                 `head -c 32 /dev/urandom | base64 > FILE` (keel dev makes its own); or \
                 mutual TLS between the nodes (--tls-cert, --tls-key, --tls-ca)"
                    .to_string(),
            );
        }
        self.validate_client_auth()?;
        if let Some(rack) = &self.rack {
            check_rack(rack).map_err(ConfigError)?;
        }
        self.log
            .validate()
            .map_err(|e| ConfigError(e.to_string()))?;
        Ok(())
    }

    /// The peer port of shard 0 (see `peer_port`), as a `u32`: with the default it can
    /// exceed a port's range, which `validate` refuses for a node of a cluster.
    pub fn peer_base_port(&self) -> u32 {
        self.peer_port.map_or(
            u32::from(self.base_port) + u32::from(DEFAULT_PEER_PORT_OFFSET),
            u32::from,
        )
    }

    /// The metrics port is none of the client or peer ports of this node, nor of any node
    /// of `peers` on the same host.
    fn check_metrics_port(&self) -> Result<(), ConfigError> {
        let Some(port) = self.metrics_port.map(u32::from) else {
            return Ok(());
        };
        let shards = self.shards;
        let own_peers = (!self.peers.is_empty()).then(|| self.peer_base_port());
        let mut ranges = vec![(self.node_id, "client", u32::from(self.base_port))];
        ranges.extend(own_peers.map(|base| (self.node_id, "peer", base)));
        for node in self.peers.iter().filter(|p| p.host == self.host) {
            ranges.push((node.node_id, "client", u32::from(node.base_port)));
            ranges.push((node.node_id, "peer", u32::from(node.peer_port)));
        }
        match ranges
            .iter()
            .find(|(_, _, start)| (*start..*start + shards).contains(&port))
        {
            Some((node, kind, start)) => Err(ConfigError(format!(
                "metrics port {port} is one of node {node}'s {kind} ports ({start}..{}) on \
                 this host: give --metrics-port another",
                start + shards
            ))),
            None => Ok(()),
        }
    }

    /// A cluster node's ports fit, and on each host no node's client or peer ports
    /// overlap another range (its own or another node's: `keel dev` runs three nodes on
    /// one host). Every node is assumed to run as many shards as this one (replica group
    /// i is shard i of every node). This node's own entry in `peers` must name the ports
    /// it listens on, or the others would send to the wrong place.
    fn check_peer_ports(&self) -> Result<(), ConfigError> {
        if self.peers.is_empty() {
            return Ok(()); // a single node opens no peer port
        }
        let peer_base = self.peer_base_port();
        if peer_base + self.shards > 65_536 {
            return Err(ConfigError(format!(
                "peer ports {peer_base}..{} do not fit (give --peer-port)",
                peer_base + self.shards
            )));
        }
        if let Some(me) = self.peers.iter().find(|p| p.node_id == self.node_id) {
            if u32::from(me.base_port) != u32::from(self.base_port)
                || u32::from(me.peer_port) != peer_base
            {
                return Err(ConfigError(format!(
                    "--peers names this node ({}) with client port {} and peer port {}, \
                     but it listens on {} and {}",
                    self.node_id, me.base_port, me.peer_port, self.base_port, peer_base
                )));
            }
        }
        let mut nodes = self.peers.clone();
        if self.joined.is_some() && !nodes.iter().any(|p| p.node_id == self.node_id) {
            // A node that joined listens beside the bootstrap nodes: its ranges count too.
            nodes.push(PeerAddress {
                node_id: self.node_id,
                host: self.host.clone(),
                base_port: self.base_port,
                peer_port: u16::try_from(peer_base).unwrap_or(u16::MAX),
                rack: None,
            });
        }
        let ranges: Vec<(&str, u32, String)> = nodes
            .iter()
            .flat_map(|p| {
                [
                    (p.host.as_str(), u32::from(p.base_port), "client"),
                    (p.host.as_str(), u32::from(p.peer_port), "peer"),
                ]
                .map(|(host, start, kind)| (host, start, format!("node {}'s {kind}", p.node_id)))
            })
            .collect();
        for (i, (host, start, what)) in ranges.iter().enumerate() {
            for (other_host, other_start, other_what) in &ranges[i + 1..] {
                if host == other_host
                    && *start < other_start + self.shards
                    && *other_start < start + self.shards
                {
                    return Err(ConfigError(format!(
                        "on {host}, {what} ports {start}..{} overlap {other_what} ports \
                         {other_start}..{} ({} shards each)",
                        start + self.shards,
                        other_start + self.shards,
                        self.shards
                    )));
                }
            }
        }
        Ok(())
    }

    /// The address shard `shard` listens on for peers.
    pub fn peer_listen_address(&self, shard: u32) -> String {
        format!("{}:{}", self.host, self.peer_base_port() + shard)
    }

    /// The peer port address of shard `shard` on another node, if that node is known.
    pub fn peer_link_address(&self, node_id: u32, shard: u32) -> Option<String> {
        self.peers
            .iter()
            .find(|p| p.node_id == node_id)
            .map(|p| format!("{}:{}", p.host, u32::from(p.peer_port) + shard))
    }

    /// The address of shard `shard`.
    pub fn shard_address(&self, shard: u32) -> String {
        format!("{}:{}", self.host, u32::from(self.base_port) + shard)
    }

    /// The voters of every replica group: all nodes' ids (this one alone when single).
    pub fn voters(&self) -> Vec<u64> {
        if self.peers.is_empty() {
            vec![u64::from(self.node_id)]
        } else {
            self.peers.iter().map(|p| u64::from(p.node_id)).collect()
        }
    }

    /// The rack of each node of `--peers` that names one.
    pub fn racks(&self) -> BTreeMap<u64, String> {
        self.peers
            .iter()
            .filter_map(|p| Some((u64::from(p.node_id), p.rack.clone()?)))
            .collect()
    }

    /// The address of shard `shard` on node `node_id`, if that node is known.
    pub fn peer_shard_address(&self, node_id: u32, shard: u32) -> Option<String> {
        if node_id == self.node_id {
            return Some(self.shard_address(shard));
        }
        self.peers
            .iter()
            .find(|p| p.node_id == node_id)
            .map(|p| format!("{}:{}", p.host, u32::from(p.base_port) + shard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults with a peer secret (a node of a cluster needs one).
    fn secured() -> NodeConfig {
        NodeConfig {
            peer_secret: PeerSecret::from_bytes(&[4; 32]).ok(),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn a_node_of_a_cluster_needs_the_peer_secret() {
        let alone = NodeConfig::default();
        assert!(alone.validate().is_ok(), "a node alone needs none");
        let in_cluster = NodeConfig {
            peers: parse_peers("1=h:9700,2=h:9710").unwrap(),
            ..NodeConfig::default()
        };
        let error = in_cluster.validate().unwrap_err().0;
        assert!(error.contains("--peer-secret-file"), "{error}");
        let joining = NodeConfig {
            join: Some("h:9700".into()),
            ..NodeConfig::default()
        };
        assert!(joining.validate().is_err());
        let secured = NodeConfig {
            peer_secret: PeerSecret::from_bytes(&[4; 32]).ok(),
            ..in_cluster
        };
        assert!(secured.validate().is_ok());
    }

    #[test]
    fn the_metrics_port_is_no_port_of_a_node_on_the_same_host() {
        let node = |metrics_port| NodeConfig {
            node_id: 1,
            host: "h".into(),
            base_port: 9700,
            shards: 2,
            metrics_port: Some(metrics_port),
            peers: parse_peers("1=h:9700,2=h:9710,3=other:9900").unwrap(),
            peer_secret: PeerSecret::from_bytes(&[4; 32]).ok(),
            ..NodeConfig::default()
        };
        for taken in [9701, 9801, 9710, 9811] {
            let error = node(taken).validate().unwrap_err().0;
            assert!(error.contains(&format!("metrics port {taken}")), "{error}");
        }
        // Node 3's ports are on another host; 9900 is free here.
        assert!(node(9900).validate().is_ok());
        assert!(node(9702).validate().is_ok());
    }

    #[test]
    fn client_authentication_needs_a_superuser_and_superusers_need_it() {
        let open_with_superuser = NodeConfig {
            superusers: vec!["admin".into()],
            ..NodeConfig::default()
        };
        let error = open_with_superuser.validate().unwrap_err().0;
        assert!(error.contains("--client-auth"), "{error}");
        let nobody = NodeConfig {
            client_auth: true,
            ..NodeConfig::default()
        };
        let error = nobody.validate().unwrap_err().0;
        assert!(error.contains("--superuser"), "{error}");
        let everyone = NodeConfig {
            superusers: vec!["*".into()],
            ..nobody
        };
        assert!(everyone.validate().is_err(), "* is not a principal");
        let file: ConfigFile =
            toml::from_str("client_auth = true\nsuperusers = [\"admin\"]\n").unwrap();
        let mut config = NodeConfig::default();
        file.apply(&mut config).unwrap();
        assert!(config.client_auth && config.validate().is_ok());
        assert_eq!(config.superusers, ["admin"]);
    }

    #[test]
    fn a_file_sets_what_it_names_and_unknown_keys_are_refused() {
        let file: ConfigFile =
            toml::from_str("port = 9800\nshards = 3\nsegment_size = \"64MiB\"\n").unwrap();
        let mut config = NodeConfig::default();
        file.apply(&mut config).unwrap();
        assert_eq!(
            (
                config.base_port,
                config.shards,
                config.log.segment_size_bytes
            ),
            (9800, 3, 64 << 20)
        );
        assert_eq!(config.node_id, 1, "untouched keys keep their defaults");
        config.validate().unwrap();
        let error = toml::from_str::<ConfigFile>("prot = 1").unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
        let bad: ConfigFile = toml::from_str("segment_size = \"12XB\"").unwrap();
        assert!(bad
            .apply(&mut NodeConfig::default())
            .unwrap_err()
            .0
            .contains("segment_size"));
    }

    #[test]
    fn peers_parse_and_must_include_this_node() {
        let peers = parse_peers("1=127.0.0.1:9700, 2=10.0.0.2:9710").unwrap();
        assert_eq!(
            peers[1],
            PeerAddress {
                node_id: 2,
                host: "10.0.0.2".into(),
                base_port: 9710,
                peer_port: 9810,
                rack: None,
            }
        );
        let racked = parse_peers("1=a:9700/9800@east-1,2=b:9700@west").unwrap();
        assert_eq!(racked[0].rack.as_deref(), Some("east-1"));
        assert_eq!(racked[0].peer_port, 9800);
        assert_eq!(
            (racked[1].rack.as_deref(), racked[1].peer_port),
            (Some("west"), 9800)
        );
        assert!(parse_peers("1=a:1@").unwrap_err().contains("rack"));
        assert!(parse_peers("1=a:1@bad rack").unwrap_err().contains("rack"));
        assert!(parse_peers("1=a:1,1=b:2").unwrap_err().contains("unique"));
        assert_eq!(parse_peers(&format_peers(&racked)).unwrap(), racked);
        assert!(
            parse_peers("x=a:1").is_err()
                && parse_peers("1=a").is_err()
                && parse_peers("1=a:port").is_err()
        );
        let config = NodeConfig {
            node_id: 3,
            peers,
            ..secured()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .0
            .contains("include this node"));
        let joining = NodeConfig {
            join: Some("10.0.0.2:9710".into()),
            ..config.clone()
        };
        assert!(joining.validate().unwrap_err().0.contains("not both"));
        let joined = NodeConfig {
            joined: Some(Default::default()),
            base_port: 9720,
            ..joining.clone()
        };
        let overlapping = NodeConfig {
            base_port: 9701,
            ..joined.clone()
        };
        assert!(overlapping.validate().unwrap_err().0.contains("overlap"));
        assert!(joined.validate().is_ok(), "a joined node is not in --peers");
        let bootstrap = NodeConfig {
            node_id: 2,
            host: "10.0.0.2".into(),
            base_port: 9710,
            ..joined
        };
        assert!(bootstrap
            .validate()
            .unwrap_err()
            .0
            .contains("bootstrap node"));
        let config = NodeConfig {
            election_ticks: 2,
            heartbeat_ticks: 2,
            ..secured()
        };
        assert!(config.validate().unwrap_err().0.contains("election ticks"));
    }

    #[test]
    fn peer_ports_parse_with_a_slash_or_default_to_port_plus_100() {
        let peers = parse_peers("1=h:9700/9000,2=[::1]:9710,3=h:65500/1").unwrap();
        let ports: Vec<(&str, u16, u16)> = peers
            .iter()
            .map(|p| (p.host.as_str(), p.base_port, p.peer_port))
            .collect();
        assert_eq!(
            ports,
            [("h", 9700, 9000), ("[::1]", 9710, 9810), ("h", 65500, 1)]
        );
        for bad in [
            "1=h:9700/",
            "1=h:9700/x",
            "1=h:9700/0",
            "1=h:0",
            "1=h:65500",
        ] {
            assert!(parse_peers(bad).is_err(), "{bad}");
        }
        assert!(parse_peers("1=h:65500")
            .unwrap_err()
            .contains("host:port/peer_port"));
    }

    fn cluster_node(node_id: u32, peers: &str) -> NodeConfig {
        NodeConfig {
            node_id,
            shards: 2,
            peers: parse_peers(peers).unwrap(),
            ..secured()
        }
    }

    #[test]
    fn peer_ports_overlapping_client_ports_are_refused() {
        // keel dev's layout: three nodes on one host, 10 ports apart, peers 100 above.
        let dev = "1=h:9700,2=h:9710,3=h:9720";
        let mut config = cluster_node(2, dev);
        config.base_port = 9710;
        config.validate().unwrap();
        assert_eq!(config.peer_listen_address(1), "127.0.0.1:9811");
        assert_eq!(config.peer_link_address(3, 1).as_deref(), Some("h:9821"));
        assert_eq!(config.peer_link_address(4, 0), None);
        // A node's peer ports on its own client ports, or on another node's.
        let mut config = cluster_node(1, "1=h:9700/9701,2=h:9710");
        config.peer_port = Some(9701);
        assert!(config.validate().unwrap_err().0.contains("overlap"));
        let mut config = cluster_node(1, "1=h:9700/9711,2=h:9710");
        config.peer_port = Some(9711);
        let error = config.validate().unwrap_err().0;
        assert!(
            error.contains("node 1's peer ports 9711..9713 overlap node 2's client"),
            "{error}"
        );
        // The same ports on different hosts are fine.
        let mut config = cluster_node(1, "1=a:9700/9711,2=b:9710");
        config.peer_port = Some(9711);
        config.validate().unwrap();
        // This node's entry must name the ports it listens on.
        let config = cluster_node(1, "1=h:9700/9900,2=h:9710");
        let error = config.validate().unwrap_err().0;
        assert!(error.contains("peer port 9900"), "{error}");
        // A single node opens no peer port: its default need not fit.
        let config = NodeConfig {
            base_port: 65_500,
            shards: 2,
            ..secured()
        };
        config.validate().unwrap();
        let mut config = cluster_node(1, "1=h:65400/65500,2=h:9710");
        config.base_port = 65_400;
        config.peer_port = Some(65_500);
        config.validate().unwrap();
        config.shards = 40;
        assert!(config.validate().unwrap_err().0.contains("peer ports"));
        let file: ConfigFile = toml::from_str("peer_port = 9000").unwrap();
        let mut config = NodeConfig::default();
        file.apply(&mut config).unwrap();
        assert_eq!(config.peer_base_port(), 9000);
    }

    #[test]
    fn impossible_settings_are_explained() {
        let config = NodeConfig {
            shards: 0,
            ..secured()
        };
        assert!(config.validate().unwrap_err().0.contains("shards"));
        let config = NodeConfig {
            base_port: 65_535,
            shards: 4,
            ..secured()
        };
        assert!(config.validate().unwrap_err().0.contains("ports"));
        let mut config = NodeConfig {
            max_frame_bytes: 2 << 20,
            ..secured()
        };
        config.validate().unwrap();
        config.log.max_entry_payload_bytes = 2 << 20;
        let error = config.validate().unwrap_err().0;
        assert!(error.contains("largest log entry"), "{error}");
    }
}
