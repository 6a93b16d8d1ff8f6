//! Starting and stopping real `keel broker` processes for the integration tests.

#![allow(dead_code)]

pub mod certs;
pub mod netns;
pub mod writers;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A broker process, killed when dropped.
pub struct Broker {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub port: u16,
    pub shards: u32,
    pub segment_size: String,
    pub extra_args: Vec<String>,
    /// The address it listens on.
    pub host: String,
    /// The network namespace it runs in (`None`: the test's own).
    pub namespace: Option<String>,
}

/// Where a broker's standard error goes: with `KEEL_TEST_LOGS=dir`, appended to
/// `dir/broker-<host>-<port>.log` and kept (set `KEEL_LOG` too for more than warnings);
/// otherwise to a file of this test process under the system's temporary directory,
/// removed with the broker, whose end is shown if the broker exits before it serves.
fn broker_log_path(spec: &Broker) -> PathBuf {
    let name = format!("broker-{}-{}.log", spec.host, spec.port);
    match std::env::var("KEEL_TEST_LOGS") {
        Ok(dir) => Path::new(&dir).join(name),
        Err(_) => std::env::temp_dir().join(format!("keel-test-{}-{name}", std::process::id())),
    }
}

fn broker_log(spec: &Broker) -> Stdio {
    let path = broker_log_path(spec);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// The peer secret file every broker of this test process is given (`--peer-secret-file`):
/// the same for all, so any of them may form or join a cluster with the others.
pub fn peer_secret_file() -> PathBuf {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("keel-test-{}-peer.secret", std::process::id()));
        std::fs::write(&path, "keel-test-peer-secret-0123456789abcdef\n").expect("secret file");
        let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&path, owner_only).expect("secret file mode");
        path
    })
    .clone()
}

/// The last lines a broker wrote to its standard error.
fn broker_log_tail(spec: &Broker) -> String {
    let written = std::fs::read_to_string(broker_log_path(spec)).unwrap_or_default();
    let lines: Vec<&str> = written.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The `keel` binary the tests start: this build's, or the one `KEEL_TEST_BINARY` names
/// (an older build, to show that a test fails without a fix).
pub fn keel_binary() -> String {
    std::env::var("KEEL_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_keel").to_string())
}

/// `count` consecutive free ports on loopback, below the kernel's ephemeral port range
/// (`ip_local_port_range`). A port from that range can be taken, while its broker is
/// stopped, as the source port of any connection made meanwhile (the test's clients, the
/// other nodes reconnecting), and the broker then cannot start again on it. (A port
/// still held by a killed broker's io_uring teardown is the broker's own start to wait
/// out: `LISTEN_IN_USE_WAIT`.)
/// Bases start at a place drawn from the process id and are handed out once per process,
/// so tests running at the same time do not probe the same ports.
pub fn free_ports(count: u16) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Ports below 10,000 are left to the host's services; the last 200 below the range
    // to a broker's default peer ports (client port + 100).
    const FIRST: u32 = 10_000;
    let last = ephemeral_ports_start().saturating_sub(200);
    assert!(
        last > FIRST + 1_000,
        "no room below the ephemeral port range"
    );
    let span = last - FIRST - u32::from(count);
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..2_000 {
        let offset = NEXT.fetch_add(u32::from(count), Ordering::Relaxed);
        let base = (FIRST + (start + offset) % span) as u16;
        if (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range below the ephemeral ports");
}

/// The first port the kernel hands out as a connection's source port.
fn ephemeral_ports_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

impl Broker {
    /// Starts a broker with `shards` shards in `data_dir` and waits until it answers.
    pub fn start(data_dir: &Path, port: u16, shards: u32) -> Broker {
        Broker::start_with_segments(data_dir, port, shards, "4MiB")
    }

    /// Same, with the given segment size.
    pub fn start_with_segments(
        data_dir: &Path,
        port: u16,
        shards: u32,
        segment_size: &str,
    ) -> Broker {
        Broker::start_with_args(data_dir, port, shards, segment_size, &[])
    }

    /// Same, with more arguments (a cluster node: --node-id, --peers).
    pub fn start_with_args(
        data_dir: &Path,
        port: u16,
        shards: u32,
        segment_size: &str,
        extra_args: &[String],
    ) -> Broker {
        Broker::launch(Broker {
            child: None,
            data_dir: data_dir.to_path_buf(),
            port,
            shards,
            segment_size: segment_size.to_string(),
            extra_args: extra_args.to_vec(),
            host: "127.0.0.1".to_string(),
            namespace: None,
        })
    }

    /// A broker in network namespace `namespace`, listening on `host`.
    pub fn start_in_namespace(
        namespace: &str,
        host: &str,
        data_dir: &Path,
        port: u16,
        extra_args: &[String],
    ) -> Broker {
        Broker::launch(Broker {
            child: None,
            data_dir: data_dir.to_path_buf(),
            port,
            shards: 1,
            segment_size: "4MiB".to_string(),
            extra_args: extra_args.to_vec(),
            host: host.to_string(),
            namespace: Some(namespace.to_string()),
        })
    }

    /// Starts the process `spec` describes and waits until it answers.
    fn launch(spec: Broker) -> Broker {
        let stderr = broker_log(&spec);
        let mut spec = Broker::spawn(spec, stderr);
        spec.wait_until_serving();
        spec
    }

    /// Starts the process `spec` describes, its standard error to `stderr`.
    fn spawn(mut spec: Broker, stderr: Stdio) -> Broker {
        let mut command = match &spec.namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", namespace])
                    .arg(keel_binary());
                command
            }
            None => Command::new(keel_binary()),
        };
        let child = command
            .args([
                "broker",
                "--host",
                &spec.host,
                "--port",
                &spec.port.to_string(),
                "--shards",
                &spec.shards.to_string(),
            ])
            .args([
                "--segment-size",
                &spec.segment_size,
                "--io-memory",
                "512KiB",
            ])
            .args(&spec.extra_args)
            .args(if spec.extra_args.iter().any(|a| a == "--tls-ca") {
                // Mutual TLS between the nodes: no secret needed, none given.
                Vec::<std::ffi::OsString>::new()
            } else {
                vec![
                    "--peer-secret-file".into(),
                    peer_secret_file().into_os_string(),
                ]
            })
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start keel broker");
        spec.child = Some(child);
        spec
    }

    /// The same broker (data, ports, arguments), not started.
    fn same_spec(&self) -> Broker {
        Broker {
            child: None,
            data_dir: self.data_dir.clone(),
            port: self.port,
            shards: self.shards,
            segment_size: self.segment_size.clone(),
            extra_args: self.extra_args.clone(),
            host: self.host.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// Restarts the broker on the same data and ports.
    pub fn restart(mut self) -> Broker {
        self.kill();
        Broker::launch(self.same_spec())
    }

    /// Restarts the broker on the same data and ports (kill -9 first if it still runs),
    /// its standard error written to `stderr_path`. A broker that exits before it answers,
    /// or does not answer within 20 s, is an `Err` saying how it ended and what it wrote,
    /// at once rather than after the 20 s `restart` waits for.
    pub fn try_restart(mut self, stderr_path: &Path) -> Result<Broker, String> {
        self.kill();
        let stderr = std::fs::File::create(stderr_path).expect("broker stderr file");
        let mut broker = Broker::spawn(self.same_spec(), Stdio::from(stderr));
        let written = || std::fs::read_to_string(stderr_path).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answering = (0..broker.serving_shards())
                .all(|shard| std::net::TcpStream::connect(broker.address(shard)).is_ok());
            if answering {
                return Ok(broker);
            }
            let exited = broker
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                broker.child = None;
                return Err(format!(
                    "the broker exited ({status}) before it answered; its stderr:\n{}",
                    written()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the broker did not answer within 20 s; its stderr:\n{}",
                    written()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Address of shard `shard`.
    pub fn address(&self, shard: u32) -> String {
        format!("{}:{}", self.host, u32::from(self.port) + shard)
    }

    /// Its `--metrics-port`, if given.
    pub fn metrics_port(&self) -> Option<u16> {
        self.extra_args
            .iter()
            .position(|a| a == "--metrics-port")
            .and_then(|i| self.extra_args.get(i + 1))
            .and_then(|p| p.parse().ok())
    }

    /// Address of shard `shard`'s peer port (`--peer-port` if given, else port + 100).
    pub fn peer_address(&self, shard: u32) -> String {
        let peer_port = self
            .extra_args
            .iter()
            .position(|a| a == "--peer-port")
            .and_then(|i| self.extra_args.get(i + 1))
            .map_or(u32::from(self.port) + 100, |p| {
                p.parse().expect("peer port")
            });
        format!("{}:{}", self.host, peer_port + shard)
    }

    /// The shards it serves clients on once started: all of them, or for a node that
    /// joined a running cluster (`--join`), shard 0 (the others serve once a replica
    /// group is moved to them).
    fn serving_shards(&self) -> u32 {
        if self.extra_args.iter().any(|a| a == "--join") {
            1
        } else {
            self.shards
        }
    }

    fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for shard in 0..self.serving_shards() {
            while std::net::TcpStream::connect(self.address(shard)).is_err() {
                if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                    panic!(
                        "the broker on port {} exited ({status}) before it served; the end \
                         of its standard error:\n{}",
                        self.port,
                        broker_log_tail(self)
                    );
                }
                assert!(Instant::now() < deadline, "broker did not start serving");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The last lines it wrote to its standard error.
    pub fn log_tail(&self) -> String {
        broker_log_tail(self)
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (SIGSTOP, SIGCONT, ...) to the broker process.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{signal} {}: {status}", child.id());
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's resident memory (VmRSS of /proc/<pid>/status), in bytes.
    pub fn resident_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Whether the process is still running (not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGTERM, then the exit status (within `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if std::env::var("KEEL_TEST_LOGS").is_err() {
            let _ = std::fs::remove_file(broker_log_path(self));
        }
    }
}

/// Whether the tests run as root (mounting file systems needs it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A tmpfs mounted for a test, unmounted when dropped (even after a failed assertion).
pub struct SmallDisk {
    pub path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` ("16m") at `path`.
    pub fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs");
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    /// Grows (or shrinks) the tmpfs.
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("remount");
        assert!(status.success(), "remount tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `ranges` base ports, each with `count` free ports after it, the ranges disjoint.
pub fn free_port_ranges(ranges: usize, count: u16) -> Vec<u16> {
    let mut bases: Vec<u16> = Vec::new();
    while bases.len() < ranges {
        let base = free_ports(count);
        if bases
            .iter()
            .all(|&b| base + count <= b || b + count <= base)
        {
            bases.push(base);
        }
    }
    bases
}

/// A cluster of `nodes` broker processes on loopback, `shards` shards each.
pub fn start_cluster(root: &Path, nodes: u32, shards: u32) -> Vec<Broker> {
    start_cluster_with(root, nodes, shards, &[])
}

/// Same, every node started with `extra` arguments too.
pub fn start_cluster_with(root: &Path, nodes: u32, shards: u32, extra: &[&str]) -> Vec<Broker> {
    start_cluster_with_segments(root, nodes, shards, "4MiB", extra)
}

/// Same, with segments of `segment_size`.
pub fn start_cluster_with_segments(
    root: &Path,
    nodes: u32,
    shards: u32,
    segment_size: &str,
    extra: &[&str],
) -> Vec<Broker> {
    // Each node's client ports, then each node's peer ports, then a metrics port each.
    let bases = free_port_ranges(2 * nodes as usize, shards as u16);
    let (ports, peer_ports) = bases.split_at(nodes as usize);
    let metrics_ports = if extra.iter().any(|a| a.contains("{metrics}")) {
        free_port_ranges(nodes as usize, 1)
    } else {
        Vec::new()
    };
    let peers: Vec<String> = (0..nodes as usize)
        .map(|i| format!("{}=127.0.0.1:{}/{}", i + 1, ports[i], peer_ports[i]))
        .collect();
    let peers = peers.join(",");
    let children: Vec<Broker> = (0..nodes)
        .map(|i| {
            let mut args = vec![
                "--node-id".to_string(),
                (i + 1).to_string(),
                "--peers".to_string(),
                peers.clone(),
                "--peer-port".to_string(),
                peer_ports[i as usize].to_string(),
            ];
            // "{node}" in an argument stands for the node's id (its own certificate),
            // "{metrics}" for a free port of its own (--metrics-port).
            args.extend(extra.iter().map(|a| {
                let metrics = metrics_ports.get(i as usize).map(u16::to_string);
                a.replace("{node}", &(i + 1).to_string())
                    .replace("{metrics}", &metrics.unwrap_or_default())
            }));
            Broker::start_with_args(
                &root.join(format!("node-{}", i + 1)),
                ports[i as usize],
                shards,
                segment_size,
                &args,
            )
        })
        .collect();
    children
}

/// Node `node_id` (`shards` shards, on free ports, in `root/node-<id>`) started with
/// `--join through`: it joins the running cluster `through` belongs to.
pub fn join_node(root: &Path, node_id: u32, shards: u32, through: &str) -> Broker {
    let bases = free_port_ranges(2, shards as u16);
    let args = [
        "--node-id".to_string(),
        node_id.to_string(),
        "--peer-port".to_string(),
        bases[1].to_string(),
        "--join".to_string(),
        through.to_string(),
    ];
    Broker::start_with_args(
        &root.join(format!("node-{node_id}")),
        bases[0],
        shards,
        "4MiB",
        &args,
    )
}

/// Calls `attempt` until it succeeds, for up to 20 s (a cluster electing a leader, a
/// shard learning of a new topic); panics with `what` and the last error after that.
pub fn retry<T, E: std::fmt::Display>(what: &str, mut attempt: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => panic!("{what}: {error}"),
        }
    }
}

/// Group 0's status once all three replicas answer and agree on one leader.
pub fn settled(client: &mut keel::client::ClusterClient) -> Vec<keel::client::GroupStatus> {
    retry("a settled cluster", || {
        let rows = client.cluster_status()?;
        let leaders: Vec<_> = rows.iter().filter(|r| r.role == "leader").collect();
        let agreed = leaders.len() == 1
            && rows.len() == 3
            && rows
                .iter()
                .all(|r| r.leader == leaders[0].node && r.term == leaders[0].term);
        if agreed {
            Ok(rows)
        } else {
            Err(keel::client::ClientError::Unexpected(format!(
                "not settled: {rows:?}"
            )))
        }
    })
}

/// Every record of `partition` of `topic`, from offset 0 to the end, as text (offsets
/// checked dense and in order).
pub fn read_partition(
    client: &mut keel::client::ClusterClient,
    topic: &str,
    partition: u32,
) -> Vec<String> {
    let mut stored = Vec::new();
    let mut offset = 0;
    loop {
        let fetched = retry("fetch", || {
            client.fetch(topic, partition, offset, 1 << 20, Duration::ZERO)
        });
        if fetched.records.is_empty() {
            return stored;
        }
        for record in fetched.records {
            assert_eq!(record.offset, offset, "offsets are dense and in order");
            stored.push(String::from_utf8(record.value.to_vec()).unwrap());
            offset += 1;
        }
    }
}
