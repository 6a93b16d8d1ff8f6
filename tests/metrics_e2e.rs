//! The metrics endpoint read by a real Prometheus server: a `keel dev` cluster under an
//! acks=quorum load is scraped by Prometheus (the Debian package, which `.ci/run`
//! installs), and the test asks Prometheus's HTTP API, not the endpoint, that the
//! produced-records counter equals what the producers had acknowledged, that each group's
//! leader role is set on exactly one node, and that every query of the shipped Grafana
//! dashboard returns data.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::writers::Writers;

/// Kills the process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGTERMs `keel dev` (its nodes stop with it) when dropped.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: kill(2) with our child's pid and SIGTERM.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// The Prometheus server the test runs; a missing one fails the test with how to get it.
fn prometheus_binary() -> String {
    let binary = std::env::var("KEEL_TEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let found = Command::new(&binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "this test needs a Prometheus server: apt-get install prometheus (.ci/run does), or \
         KEEL_TEST_PROMETHEUS=/path/to/prometheus"
    );
    binary
}

/// An HTTP GET on loopback: (status code, body).
fn http_get(port: u16, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of a chunked answer.
fn unchunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query through Prometheus's HTTP API: each sample's labels and value.
fn query(port: u16, promql: &str) -> Result<Vec<(serde_json::Value, f64)>, String> {
    let path = format!("/api/v1/query?query={}", url_encode(promql));
    let (status, body) = http_get(port, &path).map_err(|e| e.to_string())?;
    let answer: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{status} {e}: {body}"))?;
    if answer["status"] != "success" {
        return Err(format!("{promql}: {body}"));
    }
    let samples = answer["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("{promql}: no result in {body}"))?;
    Ok(samples
        .iter()
        .map(|s| {
            let value = s["value"][1].as_str().unwrap_or("NaN");
            (s["metric"].clone(), value.parse().unwrap_or(f64::NAN))
        })
        .collect())
}

/// Polls `check` every 250 ms for up to `within`; panics with its last complaint.
fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("{what}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn start_prometheus(dir: &Path, targets: &[String], port: u16) -> Killed {
    let config = dir.join("prometheus.yml");
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  \
             - job_name: keel\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let child = Command::new(prometheus_binary())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let prometheus = Killed(child);
    eventually(
        "Prometheus ready",
        Duration::from_secs(30),
        || match http_get(port, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    prometheus
}

/// `keel dev` with `shards` shards per node on ports from `port`; waits for its
/// metrics line and returns the metrics addresses it printed.
fn start_dev(dir: &Path, port: u16, shards: u32) -> (Dev, Vec<String>) {
    let mut child = Command::new(support::keel_binary())
        .args(["dev", "--port", &port.to_string(), "--shards"])
        .arg(shards.to_string())
        .arg("--data-dir")
        .arg(dir.join("dev"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let dev = Dev(child);
    let urls = loop {
        let line = lines.next().expect("keel dev's metrics line").unwrap();
        if let Some((_, urls)) = line.split_once("metrics (Prometheus) at ") {
            break urls.to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let targets = urls
        .split_whitespace()
        .map(|url| {
            let url = url.trim_start_matches("http://");
            url.trim_end_matches("/metrics").to_string()
        })
        .collect();
    (dev, targets)
}

#[test]
fn prometheus_sees_what_the_producers_had_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    // Client ports port..+22, peer ports +100.., metrics +200..+222; then Prometheus.
    let port = support::free_ports(240);
    let (_dev, targets) = start_dev(root.path(), port, 2);
    assert_eq!(targets.len(), 3, "{targets:?}");
    let bootstrap = format!("127.0.0.1:{port},127.0.0.1:{}", port + 10);
    let mut client = keel::client::ClusterClient::new(&bootstrap);
    support::retry("the topic", || client.create_topic("metered", 4));
    let _prometheus = start_prometheus(root.path(), &targets, port + 235);
    let prometheus = port + 235;

    // Every node scraped before the load starts, so the rates below cover it.
    eventually("every node scraped", Duration::from_secs(30), || {
        let up = query(prometheus, "sum(up{job=\"keel\"})")?;
        match up.first() {
            Some((_, n)) if *n == 3.0 => Ok(()),
            other => Err(format!("targets up: {other:?}")),
        }
    });
    let writers = Writers::start(&bootstrap, "metered", 4);
    let load_started = Instant::now();
    support::retry("writes going on", || {
        if writers.acked_count() >= 400 && load_started.elapsed() > Duration::from_secs(5) {
            Ok(())
        } else {
            Err("not yet")
        }
    });
    let (acked, errors) = writers.stop();
    assert!(errors.is_empty(), "the producers saw errors: {errors:?}");
    let acknowledged_records = 5.0 * acked.len() as f64;

    // Scraped at least once after the last acknowledgement, every node.
    eventually(
        "the produced-records counter as Prometheus has it",
        Duration::from_secs(20),
        || {
            let total = query(prometheus, "sum(keel_produce_records_total{result=\"ok\"})")?;
            let got = total.first().map_or(0.0, |s| s.1);
            if got == acknowledged_records {
                Ok(())
            } else {
                Err(format!(
                    "{got} records counted, {acknowledged_records} acknowledged"
                ))
            }
        },
    );

    eventually("one leader per group", Duration::from_secs(20), || {
        let replicas = query(prometheus, "count by (group) (keel_raft_term)")?;
        let leaders = query(
            prometheus,
            "sum by (group) (keel_raft_role{role=\"leader\"})",
        )?;
        // Two shards per node: two groups, each on all three nodes.
        if replicas.len() != 2 || replicas.iter().any(|r| r.1 != 3.0) {
            return Err(format!("replicas per group: {replicas:?}"));
        }
        if leaders.len() != 2 || leaders.iter().any(|l| l.1 != 1.0) {
            return Err(format!("leaders per group: {leaders:?}"));
        }
        Ok(())
    });

    let rate = query(
        prometheus,
        "sum(rate(keel_produce_records_total{result=\"ok\"}[1m]))",
    )
    .unwrap();
    assert!(
        rate.first().is_some_and(|s| s.1 > 0.0),
        "the load is within the dashboard's rate window: {rate:?}"
    );
    // A load while the dashboard's queries run, so their rate windows hold one however
    // long the checks above took.
    support::retry("a second topic", || client.create_topic("dashboard", 2));
    let load = Writers::start(&bootstrap, "dashboard", 2);
    check_dashboard_queries(prometheus);
    let (_, errors) = load.stop();
    assert!(errors.is_empty(), "{errors:?}");
}

/// Every query of `deploy/grafana-dashboard.json` returns data (a number, not only NaN)
/// through Prometheus, with Grafana's `$__rate_interval` as 1m.
fn check_dashboard_queries(prometheus: u16) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("expr").to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in exprs {
        let promql = expr.replace("$__rate_interval", "1m");
        eventually(&promql, Duration::from_secs(20), || {
            let samples = query(prometheus, &promql)?;
            if samples.iter().any(|s| s.1.is_finite()) {
                Ok(())
            } else {
                Err(format!("no data: {samples:?}"))
            }
        });
    }
}

#[test]
fn a_broker_logs_json_lines_and_serves_its_metrics_on_the_port_it_is_given() {
    let root = tempfile::tempdir().unwrap();
    let port = support::free_ports(2);
    // The metrics port may not be one of the node's own ports.
    let refused = Command::new(support::keel_binary())
        .args(["broker", "--port", &port.to_string(), "--metrics-port"])
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(root.path().join("refused"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("metrics port"), "{stderr}");

    let mut child = Command::new(support::keel_binary())
        .args(["broker", "--port", &port.to_string(), "--shards", "1"])
        .args(["--metrics-port", &(port + 1).to_string(), "--data-dir"])
        .arg(root.path().join("node"))
        .env("KEEL_LOG", "info")
        .env("KEEL_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _broker = Killed(child);
    // Read on a thread of its own (it keeps the broker's stderr open); the test waits
    // for the lines up to "serving" 20 s at most.
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Still read once the test stops listening: a closed stderr would end
            // the broker at its next log line.
            let _ = sender.send(line);
        }
    });
    let mut messages = Vec::new();
    loop {
        let line = received
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no \"serving\" line; logged: {messages:?}"));
        let object: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["timestamp"].is_string(), "{line}");
        let message = object["fields"]["message"].as_str().unwrap_or_default();
        messages.push(message.to_string());
        if message == "serving" {
            break;
        }
    }
    assert!(
        messages.iter().any(|m| m.starts_with("metrics at http://")),
        "{messages:?}"
    );
    let (status, body) = http_get(port + 1, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("# TYPE keel_raft_term gauge")
            && body.contains("keel_produce_requests_total"),
        "{body}"
    );
}

/// The sum of a counter's series in a node's /metrics answer.
fn counter_sum(port: u16, name: &str) -> Result<f64, String> {
    let (status, body) = http_get(port, "/metrics").map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    Ok(body
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Every group led, every replica answering and caught up.
fn caught_up(client: &mut keel::client::ClusterClient) -> Result<(), String> {
    let rows = client.cluster_status().map_err(|e| e.to_string())?;
    let leaders = rows.iter().filter(|r| r.role == "leader").count();
    let behind = rows
        .iter()
        .filter(|r| r.role == "leader")
        .any(|r| r.followers.iter().any(|f| f.2 > 0));
    if rows.len() == 6 && leaders == 2 && !behind && rows.iter().all(|r| r.role != "down") {
        Ok(())
    } else {
        Err(format!("not settled: {rows:?}"))
    }
}

/// The README's rolling restart: each node in turn stopped with SIGTERM (it hands the
/// groups it leads over) and started again. The nodes that stay up hold no election
/// (their `keel_raft_elections_started_total` does not move).
#[test]
fn a_rolling_restart_with_sigterm_makes_no_election() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes =
        support::start_cluster_with(root.path(), 3, 2, &["--metrics-port", "{metrics}"]);
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let mut client = keel::client::ClusterClient::new(&bootstrap.join(","));
    support::retry("topic", || client.create_topic("rolling", 4));
    support::retry("a settled cluster", || caught_up(&mut client));
    for restarted in 0..nodes.len() {
        let others: Vec<u16> = (0..nodes.len())
            .filter(|&i| i != restarted)
            .map(|i| nodes[i].metrics_port().expect("a metrics port"))
            .collect();
        let elections = |ports: &[u16]| -> f64 {
            ports
                .iter()
                .map(|&p| counter_sum(p, "keel_raft_elections_started_total").unwrap())
                .sum()
        };
        let before = elections(&others);
        let status = nodes[restarted].terminate(Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "node {} stops",
            restarted + 1
        );
        let node = nodes.remove(restarted).restart();
        nodes.insert(restarted, node);
        support::retry("caught up after the restart", || caught_up(&mut client));
        assert_eq!(
            elections(&others),
            before,
            "an election on the nodes that stayed up while node {} restarted",
            restarted + 1
        );
    }
}

/// A broker whose stderr is gone (its reader closed: a log collector restarted) goes on
/// serving: its log lines are dropped, not a reason to stop.
#[test]
fn a_broker_whose_stderr_closed_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let port = support::free_ports(1);
    let mut child = Command::new(support::keel_binary())
        .args([
            "broker",
            "--port",
            &port.to_string(),
            "--shards",
            "1",
            "--data-dir",
        ])
        .arg(root.path().join("node"))
        .env("KEEL_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut broker = Killed(child);
    let mut lines = BufReader::new(stderr).lines();
    let serving = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("serving"));
    assert!(serving, "the broker did not say it serves");
    drop(lines); // the read end closes: every later write to stderr fails
    let address = format!("127.0.0.1:{port}");
    let mut client = keel::client::ClusterClient::new(&address);
    support::retry("a topic", || client.create_topic("after-stderr", 1));
    for round in 0..20 {
        let (batch, crc) = keel::protocol::codec::encode_record_batch(
            keel::protocol::codec::BatchProducer::default(),
            0,
            &[keel::protocol::codec::RecordData {
                value: format!("r{round}").into_bytes(),
                ..Default::default()
            }],
        );
        let stored = client.produce(
            "after-stderr",
            0,
            &batch,
            crc,
            keel::protocol::wire::Acks::Quorum,
        );
        assert!(
            stored.is_ok() && matches!(broker.0.try_wait(), Ok(None)),
            "round {round}: {stored:?}, broker {:?}",
            broker.0.try_wait()
        );
        // New connections log at debug level too.
        let _ = keel::client::ClusterClient::new(&address).refresh_metadata();
    }
}
