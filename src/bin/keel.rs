//! The `keel` command line: parses arguments and calls into the library.

#[path = "keel/access_cmd.rs"]
mod access_cmd;
#[path = "keel/cluster_cmd.rs"]
mod cluster_cmd;
#[path = "keel/dev_secure.rs"]
mod dev_secure;
#[path = "keel/floor_cmd.rs"]
mod floor_cmd;
#[path = "keel/group_cmd.rs"]
mod group_cmd;
#[path = "keel/plot_cmd.rs"]
mod plot_cmd;
#[path = "keel/status_watch.rs"]
mod status_watch;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use keel::bench::catchup_bench::{run_catchup_bench, CatchupBenchOptions, CatchupBenchReport};
use keel::bench::failover_bench::{run_failover_bench, FailoverBenchOptions};
use keel::bench::hgrm;
use keel::bench::log_bench::{run_log_bench, LogBenchOptions};
use keel::bench::produce_bench::{run_produce_bench, ProduceBenchOptions};
use keel::client::ClusterClient;
use keel::config::{
    parse_leader_balance_delay, parse_peers, ConfigFile, NodeConfig, DEFAULT_PEER_PORT_OFFSET,
};
use keel::constants::{DEFAULT_MAX_ENTRY_PAYLOAD_BYTES, DEFAULT_SEGMENT_SIZE_BYTES};
use keel::log::check::check_log_directory;
use keel::log::{Preallocation, SyncMethod};
use keel::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use keel::protocol::wire::Acks;
use keel::runtime::{run_on_executor, DEFAULT_IO_MEMORY_BYTES};
use keel::security::PeerSecret;
use keel::shard::{run_node, NodeError};
use keel::units::{parse_duration, parse_size};

/// Keel: a Raft-replicated message broker for latency-sensitive producers.
#[derive(Parser)]
#[command(name = "keel", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker node (one shard per core; shard i listens for clients on --port + i
    /// and, in a cluster, for the other nodes on --peer-port + i).
    Broker(BrokerArgs),
    /// Run a local cluster on loopback, three nodes by default (client ports 9700, 9710,
    /// 9720 and peer ports 9800, 9810, 9820; `--nodes 6`: six nodes, each holding the
    /// groups placed on it), for trying Keel out and for benchmarks. Ctrl-C stops it.
    Dev(DevArgs),
    /// Create, list and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Send lines from stdin (one record each) to a partition.
    Produce(ProduceArgs),
    /// Print the records of a partition from an offset, or with --group those the group
    /// assigns this consumer.
    Consume(ConsumeArgs),
    /// Inspect the cluster; move replicas between its nodes.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Add nodes to a running cluster, drain them, take them out of service.
    #[command(subcommand)]
    Node(cluster_cmd::NodeCommand),
    /// List, describe, reset and delete consumer groups.
    #[command(subcommand)]
    Group(group_cmd::GroupCommand),
    /// Create, delete and list the users clients authenticate as (--client-auth).
    #[command(subcommand)]
    User(access_cmd::UserCommand),
    /// Add, remove and list access rules: who may do what on which topics and groups.
    #[command(subcommand)]
    Acl(access_cmd::AclCommand),
    /// Inspect CommitLog directories.
    #[command(subcommand)]
    Log(LogCommand),
    /// Measure Keel's speed on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Compare this host's kernel settings with tuning/README.md's recommendations.
    #[command(subcommand)]
    Tune(TuneCommand),
}

#[derive(Subcommand)]
enum TuneCommand {
    /// Read /proc and /sys (changing nothing; no privileges needed) and print each
    /// setting with its current value, the recommended value and ok/differs/unknown.
    ///
    /// Exit status: 0 every readable setting is as recommended, 1 some differ.
    Check {
        /// Read the host files under this directory instead of / (a copy of another
        /// host's /proc and /sys, or a test fixture).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Keel's data directory (the file-system check looks at its mount).
        #[arg(long, default_value = keel::tune::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Set every setting `check` finds different (and can change by writing a /proc or
    /// /sys file) to the recommended value. Prints the commands; changes nothing without
    /// --yes. Old values are kept for `revert`; sysctls persist in
    /// /etc/sysctl.d/90-keel.conf.
    Apply {
        /// The host's root (see `check`).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Make the changes (needs root).
        #[arg(long)]
        yes: bool,
    },
    /// Put back what `apply` changed (and remove its sysctl file). Prints the commands;
    /// changes nothing without --yes.
    Revert {
        /// The host's root (see `check`).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Make the changes (needs root).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct BrokerArgs {
    /// A TOML configuration file (flags given here win over it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the shards' logs [default: keel-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    host: Option<String>,
    /// Client port of shard 0; shard i listens for clients on port + i [default: 9700].
    #[arg(long)]
    port: Option<u16>,
    /// Peer port of shard 0: in a cluster, shard i takes the other nodes' Raft messages on
    /// peer-port + i, never on its client port (a node without --peers opens none). Must
    /// not overlap any node's client ports on the same host [default: --port + 100].
    #[arg(long)]
    peer_port: Option<u16>,
    /// Number of shards [default: one per CPU].
    #[arg(long)]
    shards: Option<u32>,
    /// This node's id [default: 1].
    #[arg(long)]
    node_id: Option<u32>,
    /// Pin each shard to its own CPU.
    #[arg(long)]
    pin_cores: bool,
    /// Registered I/O memory per shard [default: 2MiB].
    #[arg(long, value_parser = parse_size)]
    io_memory: Option<u64>,
    /// Segment file size of each shard's log [default: 128MiB].
    #[arg(long, value_parser = parse_size)]
    segment_size: Option<u64>,
    /// Every node of the cluster, this one included:
    /// "1=host:port/peer_port,2=host:port/peer_port,3=host:port/peer_port" (each node's
    /// shard-0 client port and shard-0 peer port; without "/peer_port" the peer port is
    /// port + 100; "@rack" after it puts the node in a rack, and no two replicas of a
    /// group share a rack while enough racks remain). This node's entry must name its own
    /// --port and --peer-port. Without --peers the node is a cluster of one.
    #[arg(long)]
    peers: Option<String>,
    /// Replicas of each data group: 1, 3 or 5 (fewer in a smaller cluster). A cluster of
    /// more nodes spreads its groups out, each node holding some. Every node of a
    /// cluster must give the same value [default: 3].
    #[arg(long)]
    replication_factor: Option<u32>,
    /// Milliseconds between Raft ticks [default: 10].
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Ticks before a follower starts an election (randomized up to twice) [default: 10].
    #[arg(long)]
    election_ticks: Option<usize>,
    /// Ticks between a leader's heartbeats [default: 2].
    #[arg(long)]
    heartbeat_ticks: Option<usize>,
    /// Leader balancing: group i prefers the (i mod N)-th node as leader; a leader hands
    /// the group over once the preferred node has been up to date this long ("off": never)
    /// [default: 5s].
    #[arg(long, value_parser = parse_balance_delay)]
    leader_balance_delay: Option<BalanceDelay>,
    /// Retention: bytes each group's log keeps; beyond, its oldest segments are removed
    /// (a follower that falls behind gets a snapshot) [default: keep everything].
    #[arg(long, value_parser = parse_size)]
    retention_bytes: Option<u64>,
    /// Retention: sealed segments whose newest entry is older than this are removed
    /// ("7d", "12h") [default: keep them].
    #[arg(long, value_parser = parse_duration)]
    retention_age: Option<Duration>,
    /// Bytes per second a leader sends to each replica being moved here while it catches
    /// up ("0": unpaced) [default: 8MiB].
    #[arg(long, value_parser = parse_size)]
    learner_rate: Option<u64>,
    /// Serve the node's metrics at http://HOST:PORT/metrics (Prometheus text format;
    /// HOST is --host) [default: off].
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Join a running cluster through one of its nodes (HOST:PORT, a client port)
    /// instead of --peers: on the first start (empty data directory) the node registers
    /// itself with the controller and learns the cluster's nodes, shards and replication
    /// factor; later starts read them from the data directory. It holds no replica until
    /// `keel cluster rebalance` (or a move) gives it some.
    #[arg(long)]
    join: Option<String>,
    /// This node's rack when it joins (a bootstrap node names its rack in --peers).
    #[arg(long)]
    rack: Option<String>,
    /// A file holding the cluster's shared secret, the same on every node (at least 32
    /// bytes; `head -c 32 /dev/urandom | base64 > FILE`, readable by the broker only).
    /// Required with --peers or --join: a peer connection's hello and a join must prove
    /// it, so no one without it can speak Raft to a node or add one.
    #[arg(long)]
    peer_secret_file: Option<PathBuf>,
    /// The node's TLS certificate chain (PEM): with --tls-key, the client port speaks TLS
    /// only. It serves the peer port too, so it names the host clients reach and the
    /// node (DNS name keel-node-N).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The cluster's CA (PEM): with it the nodes speak mutual TLS on their peer ports
    /// (a peer's certificate must chain to it and name its node), and clients may
    /// present certificates from it. SIGHUP reads the three files again.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Clients must authenticate: SCRAM-SHA-256 (`keel user create`; clients give --user
    /// and --password-file) or a client certificate from --tls-ca (its common name is
    /// the principal). Every request is then checked against the access rules (`keel
    /// acl`): deny by default, superusers allowed everything. Without it every client
    /// may do everything, and the node says so at start.
    #[arg(long)]
    client_auth: bool,
    /// A principal allowed everything (repeatable): a user of --users-file or a client
    /// certificate's common name. Needed with --client-auth.
    #[arg(long = "superuser", value_name = "NAME")]
    superusers: Vec<String>,
    /// This node's own users, one credential line each (`keel user hash NAME
    /// --password-file FILE`): the superuser's, who creates the others.
    #[arg(long)]
    users_file: Option<PathBuf>,
}

#[derive(Args)]
struct DevArgs {
    /// Directory for the nodes' data (node-1, node-2, node-3 inside).
    #[arg(long, default_value = "keel-dev")]
    data_dir: PathBuf,
    /// Client port of node 1's shard 0; node n uses port + 10 * (n - 1), its peer
    /// port is 100 above that (shard i: both + i) and its metrics port 200 above.
    #[arg(long, default_value_t = 9700)]
    port: u16,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Shards per node.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// Replicas of each data group (1, 3 or 5); with more nodes than this, each node
    /// holds only some of the groups.
    #[arg(long, default_value_t = 3)]
    replication_factor: u32,
    /// Segment size of every log.
    #[arg(long, default_value = "64MiB")]
    segment_size: String,
    /// Bytes per second sent to each replica being moved while it catches up ("0":
    /// unpaced).
    #[arg(long, default_value = "8MiB")]
    learner_rate: String,
    /// Secure mode: makes a CA, node and client certificates into DATA_DIR/tls (once;
    /// kept for later runs) and starts the nodes with TLS for clients and mutual TLS
    /// between them; prints the flags clients give.
    #[arg(long)]
    secure: bool,
    /// With --secure, how the nodes prove themselves to each other: "tls" (mutual TLS:
    /// their traffic is encrypted too) or "secret" (the cluster's shared secret: peers are
    /// authenticated, their traffic is not encrypted, as on a private network; clients
    /// still speak TLS and authenticate with SCRAM, without client certificates).
    #[arg(long, default_value = "tls", value_parser = ["tls", "secret"], requires = "secure")]
    peer_security: String,
}

#[derive(Args)]
struct ConnectArgs {
    /// Addresses of shards of the cluster, comma-separated (tried in turn); the default
    /// finds `keel dev`'s three nodes and a lone `keel broker`.
    #[arg(long, default_value = "127.0.0.1:9700,127.0.0.1:9710,127.0.0.1:9720")]
    bootstrap: String,
    /// Connect over TLS, trusting the brokers' certificates from this CA (PEM; the
    /// brokers' --tls-ca, or the CA that signed their --tls-cert).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for brokers that take client certificates as
    /// the client's identity (with --tls-key and --tls-ca).
    #[arg(long, requires = "tls_key", requires = "tls_ca")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Authenticate as this user (SCRAM-SHA-256), for brokers started with
    /// --client-auth.
    #[arg(long, requires = "password_file")]
    user: Option<String>,
    /// A file holding --user's password (its first line), or - for stdin.
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
}

impl ConnectArgs {
    /// How to connect: TLS with --tls-ca, SCRAM with --user. A file that cannot be read
    /// ends the command (exit 2) saying which and why.
    fn security(&self) -> keel::client::ClientSecurity {
        let exit = |error: &dyn std::fmt::Display| -> ! {
            eprintln!("keel: {error}");
            std::process::exit(2);
        };
        let tls = self.tls_ca.as_ref().map(|ca| {
            let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
            keel::security::tls::client_config(ca, identity).unwrap_or_else(|e| exit(&e))
        });
        let credentials =
            self.user
                .as_ref()
                .zip(self.password_file.as_ref())
                .map(|(user, file)| keel::client::Credentials {
                    user: user.clone(),
                    password: access_cmd::read_password(file).unwrap_or_else(|e| exit(&e)),
                });
        keel::client::ClientSecurity { tls, credentials }
    }

    /// A cluster client for these flags.
    fn client(&self) -> ClusterClient {
        ClusterClient::with_security(&self.bootstrap, self.security())
    }
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name (letters, digits, '.', '_', '-').
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas of the topic's data: 1, 3 or 5 [default: the cluster's]. Another
        /// number than the cluster's gives the topic a replica group of its own.
        #[arg(long)]
        replication_factor: Option<u16>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List topics.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Records to a partition: one per line of stdin, or --generate.
///
/// A record larger than --max-batch-bytes as a batch of its own is refused before it is
/// sent: its number (from 1: the line number with stdin), its size and the limit go to
/// stderr ("RecordTooLarge"), and the next lines are still sent. Exit status: 0 when
/// every record was stored (or spilled, with --spill-dir); 1 when any was refused or
/// failed, when the journal skipped batches that can never be delivered (their topic was
/// deleted; each is logged), or on an error that stopped the command.
#[derive(Args)]
struct ProduceArgs {
    /// Topic.
    topic: String,
    /// Partition.
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// When the broker answers: quorum, leader or none.
    #[arg(long, default_value = "quorum")]
    acks: String,
    /// Records per batch (fewer when they would exceed --max-batch-bytes).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// The brokers' largest batch (their max batch bytes); a record that does not fit in
    /// one on its own is refused before sending.
    #[arg(long, value_parser = parse_size, default_value_t = u64::from(keel::config::DEFAULT_MAX_BATCH_BYTES))]
    max_batch_bytes: u64,
    /// Instead of reading stdin, send this many generated records ("message-<n>" padded
    /// to --size).
    #[arg(long)]
    generate: Option<u64>,
    /// Size of each generated record.
    #[arg(long, value_parser = parse_size, default_value = "100")]
    size: u64,
    /// Keep records the cluster cannot take (all nodes down, no quorum) in a durable
    /// journal in this directory and send them, in order, once it is back (also on the
    /// next start with the same directory).
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// Most bytes the spill journal may hold; beyond, records fail ("spill full").
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    spill_limit: u64,
    /// With --spill-dir: how long a record may wait for the cluster before it is
    /// spilled.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    delivery_timeout: Duration,
    /// With --spill-dir: print each record's fate to stdout as it is known, in order:
    /// "<n> stored <offset>", "<n> spilled" or "<n> failed <why>" (n counts from 0).
    #[arg(long)]
    report: bool,
    /// Print the spill journal in --spill-dir (pending batches, bytes, oldest age) and
    /// exit without sending anything.
    #[arg(long)]
    spill_status: bool,
    /// With --spill-dir: once the input ends, how long to wait for the journal to drain
    /// into the cluster before exiting (what is left is sent on the next start).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    drain_timeout: Duration,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args)]
struct ConsumeArgs {
    /// Topic.
    topic: String,
    /// Partition.
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// First offset.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Keep waiting for new records.
    #[arg(long)]
    follow: bool,
    /// Print the offset before each value (with --group: partition, offset, value).
    #[arg(long)]
    offsets: bool,
    /// Consume as a member of this consumer group: the partitions it assigns, from the
    /// group's committed offsets, committing what was printed (--partition and --offset
    /// do not apply).
    #[arg(long, conflicts_with_all = ["partition", "offset"])]
    group: Option<String>,
    /// With --group: without a heartbeat this long (this process killed), the group
    /// gives its partitions to the other members (1s to 5min).
    #[arg(long, value_parser = parse_duration, default_value = "10s", requires = "group")]
    session_timeout: Duration,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Subcommand)]
enum LogCommand {
    /// Report what opening a log directory would find and do, without changing it.
    ///
    /// Exit status: 0 clean, 1 recovery would repair something (a torn tail, leftovers),
    /// 2 corrupt (the log would refuse to open), 3 unreadable.
    Check {
        /// The log directory (one replica group's CommitLog).
        dir: PathBuf,
        /// Largest entry payload the log was configured with.
        #[arg(long, value_parser = parse_size, default_value_t = u64::from(DEFAULT_MAX_ENTRY_PAYLOAD_BYTES))]
        max_entry_bytes: u64,
        /// Read and check every entry of every segment (opening the log trusts the index
        /// files of sealed segments and scans only the newest one).
        #[arg(long)]
        deep: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// CommitLog append throughput and append-to-durable latency on a real disk.
    ///
    /// Writes to --dir (on the disk to measure) and removes what it wrote. The latency run
    /// is open-loop: each entry's latency counts from its intended send time.
    Log(LogBenchArgs),
    /// Produce latency (open loop at --rate, from intended send times) or maximum
    /// throughput (--rate 0, closed loop with --window requests in flight) against a
    /// running broker.
    Produce(ProduceBenchArgs),
    /// A consumer group: drain rate of --records records written first (records/s,
    /// MB/s), then end-to-end latency (from each record's intended send time to its
    /// consumption, open loop at --rate records/s, acks=quorum) for a group of
    /// --members members.
    Consume(ConsumeBenchArgs),
    /// Fail-over time: starts a local three-node cluster, writes with acks=quorum, kills
    /// the leader repeatedly (SIGKILL) and times each gap from the kill to the first write
    /// acknowledged by the new leader.
    Failover(FailoverBenchArgs),
    /// A follower far behind catching up: starts a local three-node cluster, stops a
    /// follower, writes a backlog without it, restarts it, and measures a steady
    /// producer (acks=quorum, latency from each request's due time) before and during the
    /// catch-up, with the term before and after (an election moves it).
    Catchup(CatchupBenchArgs),
    /// Loopback round trip between two processes (1 KiB request, 16-byte answer): the
    /// network part of the floor under a replicated write.
    Rtt(RttBenchArgs),
    /// The least CPU a replicated write costs on this host: three processes on loopback
    /// doing only a quorum write's unavoidable work (receive, send to two followers, one
    /// synced 4 KiB write each, answer) with blocking calls; CPU and context switches per
    /// request over an open-loop run, to set beside a cluster's.
    QuorumFloor(floor_cmd::QuorumFloorArgs),
    /// Percentile plot (SVG) of one or more `.hgrm` histograms, overlaid with a legend:
    /// `keel bench plot before=a.hgrm after=b.hgrm -o cmp.svg`.
    Plot(plot_cmd::PlotArgs),
}

#[derive(Args)]
struct ConsumeBenchArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic (created if missing).
    #[arg(long, default_value = "keel-bench-consume")]
    topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Members of the group (threads, one connection per shard each).
    #[arg(long, default_value_t = 4)]
    members: usize,
    /// Records written, then drained by the group (0 skips the drain).
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    /// Times the records are drained, each by a new group (the median is reported). With
    /// records that fit a shard's 64 MiB tail cache (--records 55000 at 1 KiB on one
    /// shard), the drains read memory only; with more, mostly the disk.
    #[arg(long, default_value_t = 1)]
    drains: usize,
    /// Size of each record's value.
    #[arg(long, value_parser = parse_size, default_value = "1KiB")]
    record_bytes: u64,
    /// Records per second of the end-to-end run (0 skips it).
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Length of the end-to-end run.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Where to write the end-to-end latency histogram.
    #[arg(long, default_value = "bench-results/consume-latency.hgrm")]
    hgrm: PathBuf,
}

#[derive(Args)]
struct RttBenchArgs {
    /// Round trips to time.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Serve echo answers on this address (the child process the benchmark starts).
    #[arg(long, hide = true)]
    serve: Option<String>,
}

#[derive(Args)]
struct CatchupBenchArgs {
    /// Bytes written while the follower is down.
    #[arg(long, value_parser = parse_size, default_value = "300MiB")]
    backlog: u64,
    /// The steady producer's records per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Records per steady request (one request every records/rate seconds).
    #[arg(long, default_value_t = 10)]
    records_per_request: u64,
    /// Length of the baseline phase (every node up).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    baseline: Duration,
    /// Data directory for the nodes (emptied first).
    #[arg(long, default_value = "keel-bench-catchup")]
    data_dir: PathBuf,
    /// Port of node 1; node n uses port + 10 * (n - 1).
    #[arg(long, default_value_t = 9900)]
    port: u16,
    /// Directory for the two histograms (catchup-baseline.hgrm, catchup-during.hgrm).
    #[arg(long, default_value = "bench-results")]
    hgrm_dir: PathBuf,
}

#[derive(Args)]
struct FailoverBenchArgs {
    /// Leader kills to measure.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Data directory for the nodes (emptied first).
    #[arg(long, default_value = "keel-bench-failover")]
    data_dir: PathBuf,
    /// Port of node 1; node n uses port + 10 * (n - 1).
    #[arg(long, default_value_t = 9800)]
    port: u16,
    /// The timeline plot: acknowledged writes per 10 ms around each kill (SVG).
    #[arg(long, default_value = "bench-results/failover-timeline.svg")]
    plot: PathBuf,
}

#[derive(Args)]
struct ProduceBenchArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic to write to (created with one partition if missing).
    #[arg(long, default_value = "keel-bench")]
    topic: String,
    /// Requests per second; 0 runs closed loop for maximum throughput.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Length of the run.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Size of each record's value.
    #[arg(long, value_parser = parse_size, default_value = "1KiB")]
    record_bytes: u64,
    /// Records per request.
    #[arg(long, default_value_t = 1)]
    records_per_request: usize,
    /// Requests in flight in closed loop.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// quorum, leader or none.
    #[arg(long, default_value = "quorum")]
    acks: String,
    /// Where to write the latency histogram.
    #[arg(long, default_value = "bench-results/produce-latency.hgrm")]
    hgrm: PathBuf,
}

#[derive(Args)]
struct LogBenchArgs {
    /// Directory on the disk to measure (created; the benchmark's files are removed after).
    #[arg(long, default_value = "keel-bench-data")]
    dir: PathBuf,
    /// Payload to write in the throughput run (0 skips it).
    #[arg(long, value_parser = parse_size, default_value = "2GiB")]
    throughput_bytes: u64,
    /// Entry payload in the throughput run.
    #[arg(long, value_parser = parse_size, default_value = "256KiB")]
    throughput_entry_bytes: u64,
    /// Entries per batch (one flush each) in the throughput run.
    #[arg(long, default_value_t = 16)]
    batch_entries: u32,
    /// Entries per second in the latency run (0 skips it).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the latency run.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Entry payload in the latency run.
    #[arg(long, value_parser = parse_size, default_value = "1KiB")]
    entry_bytes: u64,
    /// How new segments are prepared: adaptive, zero-fill (fastest fdatasync) or fallocate.
    #[arg(long, default_value = "adaptive")]
    preallocation: Preallocation,
    /// How a flush makes its writes durable: dsync (O_DSYNC writes, one ring operation
    /// each) or fdatasync (plain writes, then one fdatasync per flush).
    #[arg(long, default_value = "dsync")]
    sync: SyncMethod,
    /// Segment file size.
    #[arg(long, value_parser = parse_size, default_value_t = DEFAULT_SEGMENT_SIZE_BYTES)]
    segment_size: u64,
    /// Where to write the latency histogram.
    #[arg(long, default_value = "bench-results/log-latency.hgrm")]
    hgrm: PathBuf,
    /// Registered I/O memory of the executor.
    #[arg(long, value_parser = parse_size, default_value_t = DEFAULT_IO_MEMORY_BYTES as u64)]
    io_memory: u64,
}

/// mimalloc serves every allocation of the process: at full load glibc's malloc, free
/// and chunk consolidation were a fifth of a leader's CPU samples (1 KiB records make
/// entries of about 1.1 KiB, just above glibc's per-thread cache), and the cluster's
/// maximum throughput rose by a fifth with mimalloc (README, "What a request costs").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Log output on stderr: what `KEEL_LOG` lets through (an `EnvFilter`, default `warn`),
/// as text, or with `KEEL_LOG_FORMAT=json` one JSON object per line (time, level, target,
/// message and fields, the spans it is in) for log shippers.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let format = std::env::var("KEEL_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogOutput);
    match format.as_str() {
        "json" => builder.json().with_current_span(false).init(),
        "" | "text" => builder.init(),
        other => {
            builder.init();
            tracing::warn!(
                KEEL_LOG_FORMAT = other,
                "unknown log format (json or text): logging as text"
            );
        }
    }
}

/// stderr for log lines, whose write errors are dropped: a node whose stderr's reader
/// went away (a log collector restarted, a closed pipe) goes on serving. (The log
/// library reports a failed write with `eprintln!`, which panics on a closed stderr, and
/// a panic ends the process.)
struct LogOutput;

impl std::io::Write for LogOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Broker(args) => broker(args),
        Command::Dev(args) => dev(args),
        Command::Topic(command) => topic(command),
        Command::Produce(args) => produce(args),
        Command::Consume(args) => match &args.group {
            Some(group) => group_cmd::consume_group(group_cmd::GroupConsumeArgs {
                group,
                topic: &args.topic,
                offsets: args.offsets,
                follow: args.follow,
                session_timeout: args.session_timeout,
                connect: &args.connect,
            }),
            None => consume(args),
        },
        Command::Group(command) => group_cmd::group(command),
        Command::User(command) => access_cmd::user(command),
        Command::Acl(command) => access_cmd::acl(command),
        Command::Cluster(command) => cluster_cmd::cluster(command),
        Command::Node(command) => cluster_cmd::node(command),
        Command::Log(LogCommand::Check {
            dir,
            max_entry_bytes,
            deep,
        }) => {
            let max = u32::try_from(max_entry_bytes).unwrap_or(u32::MAX);
            let (report, verdict) = check_log_directory(&dir, max, deep);
            print!("{report}");
            ExitCode::from(verdict as u8)
        }
        Command::Bench(BenchCommand::Log(args)) => bench_log(args),
        Command::Bench(BenchCommand::Produce(args)) => bench_produce(args),
        Command::Bench(BenchCommand::Consume(args)) => bench_consume(args),
        Command::Bench(BenchCommand::Failover(args)) => bench_failover(args),
        Command::Bench(BenchCommand::Rtt(args)) => bench_rtt(args),
        Command::Bench(BenchCommand::QuorumFloor(args)) => floor_cmd::quorum_floor(args),
        Command::Bench(BenchCommand::Plot(args)) => plot_cmd::plot_command(args),
        Command::Bench(BenchCommand::Catchup(args)) => bench_catchup(args),
        Command::Tune(TuneCommand::Apply { root, yes }) => {
            let changes = keel::tune::apply::plan_apply(&keel::tune::check(&root));
            tune_changes("apply", &changes, yes, || {
                keel::tune::apply::apply(&root, &changes)
            })
        }
        Command::Tune(TuneCommand::Revert { root, yes }) => {
            match keel::tune::apply::plan_revert(&root) {
                Ok(changes) => tune_changes("revert", &changes, yes, || {
                    keel::tune::apply::revert(&root, &changes)
                }),
                Err(error) => fail("tune revert", error),
            }
        }
        Command::Tune(TuneCommand::Check {
            root,
            json,
            data_dir,
        }) => {
            let findings = keel::tune::check_data_dir(&root, &data_dir);
            if json {
                println!("{}", keel::tune::to_json(&findings));
            } else {
                print!("{}", keel::tune::to_table(&findings));
            }
            if findings
                .iter()
                .any(|f| f.status == keel::tune::Status::Differs)
            {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

fn to_u32(value: u64, what: &str) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("{what} {value} is too large"))
}

fn bench_log(args: LogBenchArgs) -> ExitCode {
    let options = match log_bench_options(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("keel bench log: {message}");
            return ExitCode::from(2);
        }
    };
    let io_memory = usize::try_from(args.io_memory).unwrap_or(DEFAULT_IO_MEMORY_BYTES);
    let run_options = options.clone();
    let outcome = run_on_executor("keel-bench-log", io_memory, move || async move {
        run_log_bench(&run_options).await
    });
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(error)) => {
            eprintln!("keel bench log: {error}");
            return ExitCode::from(1);
        }
        Err(error) => {
            eprintln!("keel bench log: {error}");
            return ExitCode::from(1);
        }
    };
    println!(
        "keel bench log (sync: {}, preallocation: {:?})",
        match options.sync {
            SyncMethod::DsyncWrites => "O_DSYNC writes",
            SyncMethod::Fdatasync => "fdatasync per flush",
        },
        options.preallocation
    );
    if let Some(throughput) = report.throughput_megabytes_per_second {
        println!(
            "throughput: {throughput:.0} MB/s durable ({} KiB entries, {} per flush, four flushes in flight)",
            options.throughput_entry_bytes / 1024,
            options.throughput_batch_entries
        );
        println!("result throughput_mb_per_s={throughput:.1}");
    }
    if let Some(histogram) = &report.latency {
        println!(
            "append-to-durable, open loop at {}/s of {} B entries for {:?}: {}",
            options.latency_rate_per_second,
            options.latency_entry_bytes,
            options.latency_duration,
            hgrm::summary_line(histogram)
        );
        println!(
            "flushes: {} ({:.2} entries per flush)",
            report.latency_flushes,
            histogram.len() as f64 / report.latency_flushes.max(1) as f64
        );
        if let Some(flush_time) = &report.flush_time {
            println!(
                "flush time (write + fdatasync): {}",
                hgrm::summary_line(flush_time)
            );
        }
        if let Some(lateness) = &report.generator_lateness {
            println!(
                "generator lateness (timer and scheduling): {}",
                hgrm::summary_line(lateness)
            );
        }
        println!(
            "result latency_p50_us={} latency_p99_us={} latency_p999_us={} latency_max_us={}",
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.value_at_quantile(0.999),
            histogram.max()
        );
        let title = format!(
            "keel bench log: append-to-durable, {} B entries at {}/s for {:?}, open loop",
            options.latency_entry_bytes, options.latency_rate_per_second, options.latency_duration
        );
        if let Err(error) = plot_cmd::write_histogram(histogram, &options.hgrm_path, &title) {
            eprintln!("keel bench log: {error}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn log_bench_options(args: &LogBenchArgs) -> Result<LogBenchOptions, String> {
    if args.rate > 1_000_000 {
        return Err(format!(
            "--rate {} is above the supported 1000000 per second",
            args.rate
        ));
    }
    Ok(LogBenchOptions {
        dir: args.dir.clone(),
        throughput_total_bytes: args.throughput_bytes,
        throughput_entry_bytes: to_u32(args.throughput_entry_bytes, "--throughput-entry-bytes")?
            .max(1),
        throughput_batch_entries: args.batch_entries.max(1),
        latency_rate_per_second: args.rate,
        latency_duration: args.duration,
        latency_entry_bytes: to_u32(args.entry_bytes, "--entry-bytes")?,
        preallocation: args.preallocation,
        sync: args.sync,
        segment_size_bytes: args.segment_size,
        hgrm_path: args.hgrm.clone(),
    })
}

fn broker_config(args: BrokerArgs) -> Result<NodeConfig, String> {
    let mut config = NodeConfig::default();
    if let Some(path) = &args.config {
        ConfigFile::read(path)
            .and_then(|file| file.apply(&mut config))
            .map_err(|e| e.to_string())?;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(host) = args.host {
        config.host = host;
    }
    if let Some(port) = args.port {
        config.base_port = port;
    }
    if let Some(port) = args.peer_port {
        config.peer_port = Some(port);
    }
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    if args.pin_cores {
        config.pin_cores = true;
    }
    if let Some(bytes) = args.io_memory {
        config.io_memory_bytes =
            usize::try_from(bytes).map_err(|_| "--io-memory too large".to_string())?;
    }
    if let Some(bytes) = args.segment_size {
        config.log.segment_size_bytes = bytes;
    }
    if let Some(peers) = &args.peers {
        config.peers = parse_peers(peers)?;
    }
    if let Some(factor) = args.replication_factor {
        config.replication_factor = factor;
    }
    if let Some(tick_ms) = args.tick_ms {
        config.tick_ms = tick_ms;
    }
    if let Some(ticks) = args.election_ticks {
        config.election_ticks = ticks;
    }
    if let Some(ticks) = args.heartbeat_ticks {
        config.heartbeat_ticks = ticks;
    }
    if let Some(bytes) = args.retention_bytes {
        config.retention_bytes = Some(bytes);
    }
    if let Some(age) = args.retention_age {
        config.retention_age = Some(age);
    }
    if let Some(join) = args.join {
        config.join = Some(join);
    }
    if let Some(rack) = args.rack {
        config.rack = Some(rack);
    }
    if let Some(path) = &args.peer_secret_file {
        config.peer_secret = Some(PeerSecret::load(path).map_err(|e| e.to_string())?);
    }
    for (value, slot) in [
        (args.tls_cert, &mut config.tls_files.cert),
        (args.tls_key, &mut config.tls_files.key),
        (args.tls_ca, &mut config.tls_files.ca),
    ] {
        if value.is_some() {
            *slot = value;
        }
    }
    config.load_tls().map_err(|e| e.to_string())?;
    if args.client_auth {
        config.client_auth = true;
    }
    if !args.superusers.is_empty() {
        config.superusers = args.superusers;
    }
    if let Some(path) = &args.users_file {
        config.local_users = keel::security::users_file::load_users(path)?;
    }
    if let Some(rate) = args.learner_rate {
        config.learner_bytes_per_second = rate;
    }
    if let Some(port) = args.metrics_port {
        config.metrics_port = Some(port);
    }
    if let Some(BalanceDelay(delay)) = args.leader_balance_delay {
        config.leader_balance_delay = delay;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Prints a tune plan; with `yes`, carries it out.
fn tune_changes(
    what: &str,
    changes: &[keel::tune::apply::Change],
    yes: bool,
    run: impl FnOnce() -> Result<(), keel::tune::apply::TuneError>,
) -> ExitCode {
    if changes.is_empty() {
        println!("nothing to {what}: every setting it can change is as it should be");
        return ExitCode::SUCCESS;
    }
    for change in changes {
        println!(
            "{}    # {}: {} -> {}",
            change.command(),
            change.setting,
            change.from,
            change.to
        );
    }
    if !yes {
        println!("(dry run: nothing changed; run again with --yes to {what})");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => {
            println!("done");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&format!("tune {what}"), error),
    }
}

/// `--leader-balance-delay`: a duration, or `None` for "off".
#[derive(Clone, Copy, Debug)]
struct BalanceDelay(Option<Duration>);

fn parse_balance_delay(text: &str) -> Result<BalanceDelay, String> {
    parse_leader_balance_delay(text).map(BalanceDelay)
}

fn broker(args: BrokerArgs) -> ExitCode {
    let config = match broker_config(args) {
        Ok(config) => config,
        Err(message) => {
            broker_says(true, &format!("keel broker: {message}"));
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(error) = signal_hook::flag::register(signal, stop.clone()) {
            broker_says(
                true,
                &format!("keel broker: cannot handle signals: {error}"),
            );
            return ExitCode::from(1);
        }
    }
    let peer_ports = if config.peers.is_empty() && config.join.is_none() {
        String::new()
    } else {
        format!(
            " (peers on {}..{})",
            config.peer_base_port(),
            config.peer_base_port() + config.shards - 1
        )
    };
    broker_says(
        false,
        &format!(
            "keel broker: node {} with {} shards on {}:{}..{}{peer_ports}, data in {}",
            config.node_id,
            config.shards,
            config.host,
            config.base_port,
            u32::from(config.base_port) + config.shards - 1,
            config.data_dir.display()
        ),
    );
    match run_node(config, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(NodeError::Config(error)) => {
            broker_says(true, &format!("keel broker: {error}"));
            ExitCode::from(2)
        }
        Err(error) => {
            broker_says(true, &format!("keel broker: {error}"));
            ExitCode::from(3)
        }
    }
}

/// A line of the broker's own on stderr: as text, or with `KEEL_LOG_FORMAT=json` as a log
/// event (an error, or at info level), so every line is one JSON object.
fn broker_says(error: bool, line: &str) {
    match (std::env::var("KEEL_LOG_FORMAT").as_deref(), error) {
        (Ok("json"), true) => tracing::error!("{line}"),
        (Ok("json"), false) => tracing::info!("{line}"),
        // Not eprintln!: it panics once stderr is closed.
        _ => {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
}

fn fail(what: &str, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("keel {what}: {error}");
    ExitCode::from(1)
}

fn topic(command: TopicCommand) -> ExitCode {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            connect,
        } => match connect.client().create_topic_with(
            &name,
            partitions,
            replication_factor.unwrap_or(0),
        ) {
            Ok(()) => {
                println!("created topic {name} with {partitions} partitions");
                ExitCode::SUCCESS
            }
            Err(error) => fail("topic create", error),
        },
        TopicCommand::List { connect } => match connect.client().list_topics() {
            Ok(topics) => {
                for (name, partitions) in topics {
                    println!("{name}\t{partitions} partitions");
                }
                ExitCode::SUCCESS
            }
            Err(error) => fail("topic list", error),
        },
        TopicCommand::Delete { name, connect } => match connect.client().delete_topic(&name) {
            Ok(()) => {
                println!("deleted topic {name}");
                ExitCode::SUCCESS
            }
            Err(error) => fail("topic delete", error),
        },
    }
}

fn parse_acks(text: &str) -> Result<Acks, String> {
    match text {
        "quorum" => Ok(Acks::Quorum),
        "leader" => Ok(Acks::Leader),
        "none" => Ok(Acks::None),
        other => Err(format!(
            "--acks must be quorum, leader or none, not {other:?}"
        )),
    }
}

fn produce(args: ProduceArgs) -> ExitCode {
    let acks = match parse_acks(&args.acks) {
        Ok(acks) => acks,
        Err(message) => return fail("produce", message),
    };
    if args.spill_status {
        let Some(dir) = &args.spill_dir else {
            return fail("produce", "--spill-status needs --spill-dir");
        };
        return match keel::client::spill_journal::inspect(dir) {
            Ok(status) => {
                println!(
                    "spill journal {}: {} batches pending, {} bytes, oldest {}",
                    dir.display(),
                    status.pending_batches,
                    status.bytes,
                    status.oldest_age.map_or("-".to_string(), |age| format!(
                        "{:.1}s ago",
                        age.as_secs_f64()
                    ))
                );
                ExitCode::SUCCESS
            }
            Err(error) => fail("produce", error),
        };
    }
    if args.spill_dir.is_some() {
        return produce_with_spill(&args, acks);
    }
    produce_plain(&args, acks)
}

/// The input records of `keel produce`: stdin's lines, or --generate's messages.
fn input_records(args: &ProduceArgs) -> impl Iterator<Item = Result<Vec<u8>, std::io::Error>> {
    let size = usize::try_from(args.size).unwrap_or(100);
    let generated = args.generate.map(|count| {
        (0..count).map(move |n| {
            let mut value = format!("message-{n}").into_bytes();
            value.resize(size.max(value.len()), b'.');
            Ok(value)
        })
    });
    let lines = args.generate.is_none().then(|| {
        std::io::stdin()
            .lines()
            .map(|line| line.map(String::into_bytes))
    });
    generated
        .into_iter()
        .flatten()
        .chain(lines.into_iter().flatten())
}

/// Says on stderr that input record `number` (from 1) was refused.
fn report_refused(number: u64, error: &keel::client::ClientError) {
    eprintln!("keel produce: record {number} refused: {error}");
}

/// `keel produce` without a journal: batches of up to --batch records (and
/// --max-batch-bytes), each sent and acknowledged before the next.
fn produce_plain(args: &ProduceArgs, acks: keel::protocol::wire::Acks) -> ExitCode {
    use keel::client::producer::check_record_size;
    use keel::protocol::codec::{record_bytes_bound, RECORD_BATCH_OVERHEAD_BOUND_BYTES};
    let limit = usize::try_from(args.max_batch_bytes).unwrap_or(usize::MAX);
    let mut client = args.connect.client();
    let mut input = input_records(args).peekable();
    let (mut sent, mut refused, mut number) = (0u64, 0u64, 0u64);
    while input.peek().is_some() {
        let mut records = Vec::with_capacity(args.batch.max(1));
        let mut bytes = RECORD_BATCH_OVERHEAD_BOUND_BYTES;
        while records.len() < args.batch.max(1) {
            let Some(next) = input.peek() else { break };
            let record = match next {
                Ok(value) => RecordData {
                    value: value.clone(),
                    ..Default::default()
                },
                Err(error) => return fail("produce", error),
            };
            let size = record_bytes_bound(&record);
            if !records.is_empty() && bytes + size > limit {
                break; // it starts the next batch
            }
            input.next();
            number += 1;
            if let Err(error) = check_record_size(&record, limit) {
                report_refused(number, &error);
                refused += 1;
                continue;
            }
            bytes += size;
            records.push(record);
        }
        if records.is_empty() {
            continue;
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let (batch, crc) = encode_record_batch(BatchProducer::default(), now_ms, &records);
        match client.produce(&args.topic, args.partition, &batch, crc, acks) {
            Ok(_) => sent += records.len() as u64,
            Err(error) => return fail("produce", error),
        }
    }
    eprintln!(
        "keel produce: {sent} records sent to {}/{}, {refused} refused",
        args.topic, args.partition
    );
    if refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The thread that waits for each record's fate, in order, prints it with --report (and
/// a refused record's reason to stderr without), and counts (stored, spilled, failed).
fn spawn_reporter(
    reporter_input: std::sync::mpsc::Receiver<(u64, keel::client::Delivery)>,
    report: bool,
) -> std::thread::JoinHandle<(u64, u64, u64)> {
    use keel::client::Delivered;
    std::thread::spawn(move || {
        let (mut stored, mut spilled, mut failed) = (0u64, 0u64, 0u64);
        let stdout = std::io::stdout();
        for (n, delivery) in reporter_input {
            let line = match delivery.wait() {
                Ok(Delivered::Stored(offset)) => {
                    stored += 1;
                    format!("{n} stored {offset}")
                }
                Ok(Delivered::Spilled) => {
                    spilled += 1;
                    format!("{n} spilled")
                }
                Err(error) => {
                    failed += 1;
                    if !report && matches!(error, keel::client::ClientError::RecordTooLarge { .. })
                    {
                        report_refused(n + 1, &error);
                    }
                    format!("{n} failed {error}")
                }
            };
            if report {
                let mut out = stdout.lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
        (stored, spilled, failed)
    })
}

/// `keel produce --spill-dir`: records go through the batching `Producer` with its spill
/// journal; each record's fate is printed in order with --report.
fn produce_with_spill(args: &ProduceArgs, acks: keel::protocol::wire::Acks) -> ExitCode {
    use keel::client::{Producer, ProducerConfig, SpillConfig};
    let Some(dir) = &args.spill_dir else {
        return fail("produce", "no spill directory");
    };
    let mut config = ProducerConfig::new(&args.connect.bootstrap);
    config.security = args.connect.security();
    config.acks = acks;
    config.delivery_timeout = args.delivery_timeout;
    config.max_batch_bytes = usize::try_from(args.max_batch_bytes).unwrap_or(usize::MAX);
    config.spill = Some(SpillConfig::new(dir, args.spill_limit));
    let producer = match Producer::open(config) {
        Ok(producer) => producer,
        Err(error) => return fail("produce", error),
    };
    let (results, reporter_input) =
        std::sync::mpsc::sync_channel::<(u64, keel::client::Delivery)>(100_000);
    let reporter = spawn_reporter(reporter_input, args.report);
    let mut n = 0u64;
    for value in input_records(args) {
        let value = match value {
            Ok(value) => value,
            Err(error) => return fail("produce", error),
        };
        let delivery = producer.send(
            &args.topic,
            args.partition,
            RecordData {
                value,
                ..Default::default()
            },
        );
        if results.send((n, delivery)).is_err() {
            break;
        }
        n += 1;
    }
    producer.flush();
    let drain_until = std::time::Instant::now() + args.drain_timeout;
    while producer
        .spill_status()
        .is_some_and(|s| s.pending_batches > 0)
        && std::time::Instant::now() < drain_until
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = producer.spill_status();
    let skipped = producer.spill_skipped();
    drop(results);
    let (stored, spilled, failed) = reporter.join().unwrap_or((0, 0, n));
    eprintln!(
        "keel produce: {stored} records stored, {spilled} spilled, {failed} failed \
         ({}/{}); journal: {} batches pending, {} skipped ({} records) as undeliverable{}",
        args.topic,
        args.partition,
        status.map_or(0, |s| s.pending_batches),
        skipped.batches,
        skipped.records,
        skipped
            .last_reason
            .map_or(String::new(), |reason| format!(" (last: {reason})"))
    );
    if failed > 0 || skipped.batches > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn consume(args: ConsumeArgs) -> ExitCode {
    let mut client = args.connect.client();
    let mut offset = args.offset;
    let stdout = std::io::stdout();
    loop {
        let wait = if args.follow {
            Duration::from_secs(5)
        } else {
            Duration::ZERO
        };
        let fetched = match client.fetch(&args.topic, args.partition, offset, 1 << 20, wait) {
            Ok(fetched) => fetched,
            Err(error) => return fail("consume", error),
        };
        let mut out = stdout.lock();
        for record in &fetched.records {
            let value = String::from_utf8_lossy(&record.value);
            let written = if args.offsets {
                writeln!(out, "{}\t{value}", record.offset)
            } else {
                writeln!(out, "{value}")
            };
            if written.is_err() {
                return ExitCode::SUCCESS; // the reader went away (a closed pipe)
            }
            offset = record.offset + 1;
        }
        if fetched.records.is_empty() && !args.follow && offset >= fetched.high_watermark {
            return ExitCode::SUCCESS;
        }
    }
}

fn bench_consume(args: ConsumeBenchArgs) -> ExitCode {
    let options = keel::bench::consume_bench::ConsumeBenchOptions {
        security: args.connect.security(),
        bootstrap: args.connect.bootstrap,
        topic: args.topic,
        partitions: args.partitions.max(1),
        members: args.members.max(1),
        records: args.records,
        drains: args.drains.max(1),
        record_bytes: usize::try_from(args.record_bytes).unwrap_or(1024),
        rate: args.rate,
        duration: args.duration,
    };
    let report = match keel::bench::consume_bench::run_consume_bench(&options) {
        Ok(report) => report,
        Err(error) => return fail("bench consume", error),
    };
    println!(
        "keel bench consume: {} member(s), {} B records, acks=quorum, fsync: every flush",
        options.members, options.record_bytes
    );
    if options.records > 0 {
        let rounds: Vec<String> = report
            .drain_rounds
            .iter()
            .map(|rate| format!("{rate:.0}"))
            .collect();
        println!(
            "drain of {} records: {:.0} records/s, {:.1} MB/s (median of {} drain(s), each a new group: {} records/s; {} record(s) read again after rebalances)",
            options.records,
            report.drain_records_per_second,
            report.drain_megabytes_per_second,
            rounds.len(),
            rounds.join(", "),
            report.drain_reread
        );
    }
    if options.rate > 0 {
        println!(
            "end to end at {} records/s (open loop, {} records): {}",
            options.rate,
            report.end_to_end_records,
            hgrm::summary_line(&report.latency)
        );
        let title = format!(
            "keel bench consume: end to end at {} records/s, {} members, acks=quorum, open loop",
            options.rate, options.members
        );
        if let Err(error) = plot_cmd::write_histogram(&report.latency, &args.hgrm, &title) {
            return fail("bench consume", error);
        }
    }
    println!(
        "result drain_records_per_s={:.0} drain_mb_per_s={:.1} e2e_p50_us={} e2e_p99_us={} e2e_p999_us={} e2e_max_us={}",
        report.drain_records_per_second,
        report.drain_megabytes_per_second,
        report.latency.value_at_quantile(0.5),
        report.latency.value_at_quantile(0.99),
        report.latency.value_at_quantile(0.999),
        report.latency.max()
    );
    ExitCode::SUCCESS
}

fn bench_produce(args: ProduceBenchArgs) -> ExitCode {
    let acks = match parse_acks(&args.acks) {
        Ok(acks) => acks,
        Err(message) => return fail("bench produce", message),
    };
    let options = ProduceBenchOptions {
        security: args.connect.security(),
        bootstrap: args.connect.bootstrap,
        topic: args.topic,
        rate: args.rate,
        duration: args.duration,
        record_bytes: usize::try_from(args.record_bytes).unwrap_or(1024),
        records_per_request: args.records_per_request.max(1),
        window: args.window.max(1),
        acks,
    };
    let report = match run_produce_bench(&options) {
        Ok(report) => report,
        Err(error) => return fail("bench produce", error),
    };
    let mode = if options.rate > 0 {
        format!("open loop at {} requests/s", options.rate)
    } else {
        format!("closed loop, {} requests in flight", options.window)
    };
    println!(
        "keel bench produce: {mode}, {} record(s) of {} B per request, acks={}, fsync: fdatasync per flush",
        options.records_per_request, options.record_bytes, args.acks
    );
    println!("latency: {}", hgrm::summary_line(&report.latency));
    println!(
        "throughput: {:.0} records/s, {:.1} MB/s; errors: {}",
        report.records_per_second, report.megabytes_per_second, report.errors
    );
    println!(
        "result p50_us={} p90_us={} p99_us={} p999_us={} max_us={} records_per_s={:.0} errors={}",
        report.latency.value_at_quantile(0.5),
        report.latency.value_at_quantile(0.9),
        report.latency.value_at_quantile(0.99),
        report.latency.value_at_quantile(0.999),
        report.latency.max(),
        report.records_per_second,
        report.errors
    );
    let title = format!(
        "keel bench produce: {mode}, {} x {} B per request, acks={}",
        options.records_per_request, options.record_bytes, args.acks
    );
    if let Err(error) = plot_cmd::write_histogram(&report.latency, &args.hgrm, &title) {
        return fail("bench produce", error);
    }
    if report.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `keel dev`: node n serves its metrics this far above its client port (9900, 9910,
/// ... by default; its peer ports are 100 above the client port).
const DEV_METRICS_PORT_OFFSET: u32 = 200;

fn dev(args: DevArgs) -> ExitCode {
    if args.nodes == 0 || args.nodes > 10 || args.shards == 0 || args.shards > 9 {
        return fail(
            "dev",
            "--nodes must be between 1 and 10 and --shards between 1 and 9 (node n's ports \
             are 10 apart: client, +100 peer, +200 metrics)",
        );
    }
    let executable = match std::env::current_exe() {
        Ok(path) => path,
        Err(error) => return fail("dev", error),
    };
    let port_of = |node: u32| u32::from(args.port) + 10 * (node - 1);
    let peer_port_of = |node: u32| port_of(node) + u32::from(DEFAULT_PEER_PORT_OFFSET);
    let metrics_port_of = |node: u32| port_of(node) + DEV_METRICS_PORT_OFFSET;
    if metrics_port_of(args.nodes) > 65_535 {
        return fail("dev", "ports do not fit");
    }
    let peers: Vec<String> = (1..=args.nodes)
        .map(|n| format!("{n}=127.0.0.1:{}/{}", port_of(n), peer_port_of(n)))
        .collect();
    let peers = peers.join(",");
    let secret_file = match PeerSecret::file_in(&args.data_dir) {
        Ok(path) => path,
        Err(error) => return fail("dev", error),
    };
    let tls_dir = if args.secure {
        match dev_secure::prepare(&args.data_dir, args.nodes) {
            Ok(dir) => Some(dir),
            Err(error) => return fail("dev", error),
        }
    } else {
        None
    };
    let mutual = args.peer_security == "tls";
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(error) = signal_hook::flag::register(signal, stop.clone()) {
            return fail("dev", error);
        }
    }
    let mut children = Vec::new();
    for node in 1..=args.nodes {
        let child = std::process::Command::new(&executable)
            .args([
                "broker",
                "--node-id",
                &node.to_string(),
                "--port",
                &port_of(node).to_string(),
                "--peer-port",
                &peer_port_of(node).to_string(),
            ])
            .args([
                "--shards",
                &args.shards.to_string(),
                "--segment-size",
                &args.segment_size,
                "--peers",
                &peers,
                "--replication-factor",
                &args.replication_factor.to_string(),
                "--learner-rate",
                &args.learner_rate,
                "--metrics-port",
                &metrics_port_of(node).to_string(),
            ])
            .arg("--peer-secret-file")
            .arg(&secret_file)
            .args(
                tls_dir
                    .as_deref()
                    .map_or_else(Vec::new, |dir| dev_secure::node_args(dir, node, mutual)),
            )
            .arg("--data-dir")
            .arg(args.data_dir.join(format!("node-{node}")))
            .spawn();
        match child {
            Ok(child) => children.push(child),
            Err(error) => {
                stop_children(&mut children);
                return fail("dev", error);
            }
        }
    }
    let bootstrap: Vec<String> = (1..=args.nodes)
        .map(|n| format!("127.0.0.1:{}", port_of(n)))
        .collect();
    let peer_ports: Vec<String> = (1..=args.nodes)
        .map(|n| peer_port_of(n).to_string())
        .collect();
    eprintln!(
        "keel dev: {} nodes x {} shards, {} replicas per group, data in {}; clients use \
         --bootstrap {}; the nodes talk to each other on peer ports {} (shard i: + i)\n\
         Ctrl-C stops the cluster.",
        args.nodes,
        args.shards,
        args.replication_factor.min(args.nodes),
        args.data_dir.display(),
        bootstrap.join(","),
        peer_ports.join(", ")
    );
    let metrics: Vec<String> = (1..=args.nodes)
        .map(|n| format!("http://127.0.0.1:{}/metrics", metrics_port_of(n)))
        .collect();
    eprintln!("keel dev: metrics (Prometheus) at {}", metrics.join(" "));
    match &tls_dir {
        Some(dir) if mutual => eprintln!(
            "keel dev --secure: clients speak TLS and authenticate, the nodes mutual TLS \
             (certificates and the superuser's password in {}); clients add: {}\n\
             (or, with the superuser's client certificate instead of its password: {})",
            dir.display(),
            dev_secure::client_flags(dir),
            dev_secure::certificate_flags(dir)
        ),
        Some(dir) => eprintln!(
            "keel dev --secure --peer-security secret: clients speak TLS and authenticate, \
             the nodes prove the shared secret to each other and send their traffic \
             unencrypted (the certificates and the superuser's password in {}); clients \
             add: {}",
            dir.display(),
            dev_secure::client_flags(dir)
        ),
        None => {}
    }
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(exited) = children
            .iter_mut()
            .position(|c| matches!(c.try_wait(), Ok(Some(_))))
        {
            eprintln!("keel dev: node {} exited; stopping the cluster", exited + 1);
            stop_children(&mut children);
            return ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_children(&mut children);
    ExitCode::SUCCESS
}

/// SIGTERM every child (they flush and stop), then wait for them.
fn stop_children(children: &mut [std::process::Child]) {
    for child in children.iter() {
        // SAFETY: kill(2) with a child's pid and SIGTERM; no memory is involved.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    for child in children.iter_mut() {
        let _ = child.wait();
    }
}

fn bench_catchup(args: CatchupBenchArgs) -> ExitCode {
    let executable = match std::env::current_exe() {
        Ok(path) => path,
        Err(error) => return fail("bench catchup", error),
    };
    let options = CatchupBenchOptions {
        executable,
        data_dir: args.data_dir.clone(),
        port: args.port,
        backlog_bytes: args.backlog,
        rate: args.rate.max(1),
        records_per_request: args.records_per_request.max(1),
        baseline: args.baseline,
    };
    println!(
        "keel bench catchup: 3 nodes on loopback, acks=quorum (fsync per flush); a follower \
         is down while {} MiB go in, then restarted; steady producer {} records/s, {} per \
         request, latency from each request's due time",
        args.backlog >> 20,
        options.rate,
        options.records_per_request
    );
    let report = match run_catchup_bench(&options) {
        Ok(report) => report,
        Err(error) => return fail("bench catchup", error),
    };
    for (name, histogram) in [("baseline", &report.baseline), ("during", &report.during)] {
        let path = args.hgrm_dir.join(format!("catchup-{name}.hgrm"));
        let title = format!(
            "keel bench catchup ({name}): {} records/s, {} per request, acks=quorum, {} MiB backlog",
            options.rate,
            options.records_per_request,
            args.backlog >> 20
        );
        if let Err(error) = plot_cmd::write_histogram(histogram, &path, &title) {
            return fail("bench catchup", error);
        }
    }
    print_catchup_report(&report, args.backlog);
    ExitCode::SUCCESS
}

fn print_catchup_report(report: &CatchupBenchReport, backlog: u64) {
    println!(
        "baseline (every node up): {}",
        hgrm::summary_line(&report.baseline)
    );
    println!(
        "during the catch-up:      {}",
        hgrm::summary_line(&report.during)
    );
    let seconds = report.catch_up.as_secs_f64();
    println!(
        "catch-up of {} MiB: {seconds:.1} s; leader (node, term) {:?} -> {:?}; {} errors",
        backlog >> 20,
        report.leader_before,
        report.leader_after,
        report.errors.len()
    );
    for error in report.errors.iter().take(5) {
        println!("  error: {error}");
    }
    let p99 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
    let term_moves = report.leader_after.1.saturating_sub(report.leader_before.1);
    println!(
        "result catchup_p99_ms={:.2} baseline_p99_ms={:.2} catchup_max_ms={:.2} errors={} \
         term_moves={term_moves} catchup_s={seconds:.2}",
        p99(&report.during),
        p99(&report.baseline),
        report.during.max() as f64 / 1000.0,
        report.errors.len()
    );
}

fn bench_failover(args: FailoverBenchArgs) -> ExitCode {
    let executable = match std::env::current_exe() {
        Ok(path) => path,
        Err(error) => return fail("bench failover", error),
    };
    let options = FailoverBenchOptions {
        executable,
        data_dir: args.data_dir.clone(),
        port: args.port,
        kills: args.kills.max(1),
    };
    let report = match run_failover_bench(&options) {
        Ok(report) => report,
        Err(error) => return fail("bench failover", error),
    };
    let _ = std::fs::remove_dir_all(&args.data_dir);
    let mut millis: Vec<f64> = report
        .times
        .iter()
        .map(|t| t.as_secs_f64() * 1000.0)
        .collect();
    println!(
        "keel bench failover: 3 nodes, acks=quorum, leader killed with SIGKILL {} times",
        millis.len()
    );
    println!(
        "fail-over times (ms): {}",
        millis
            .iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    millis.sort_by(f64::total_cmp);
    let p50 = millis.get(millis.len() / 2).copied().unwrap_or(0.0);
    let max = millis.last().copied().unwrap_or(0.0);
    println!("p50 {p50:.0} ms, max {max:.0} ms");
    println!(
        "result failover_p50_ms={p50:.0} failover_max_ms={max:.0} kills={}",
        millis.len()
    );
    if let Err(error) = plot_cmd::write_failover_timeline(&report, &args.plot) {
        return fail("bench failover", error);
    }
    ExitCode::SUCCESS
}

fn bench_rtt(args: RttBenchArgs) -> ExitCode {
    if let Some(address) = args.serve {
        return match std::net::TcpListener::bind(&address).and_then(keel::bench::rtt_bench::serve) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail("bench rtt", error),
        };
    }
    let executable = match std::env::current_exe() {
        Ok(path) => path,
        Err(error) => return fail("bench rtt", error),
    };
    match keel::bench::rtt_bench::run_rtt_bench(&executable, args.count.max(1)) {
        Ok(histogram) => {
            println!("keel bench rtt: loopback, two processes, 1 KiB request, 16 B answer");
            println!("round trip: {}", hgrm::summary_line(&histogram));
            println!(
                "result rtt_p50_us={} rtt_p99_us={}",
                histogram.value_at_quantile(0.5),
                histogram.value_at_quantile(0.99)
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail("bench rtt", error),
    }
}
