//! The producer's spill journal with real processes: a 3-node cluster loses every node
//! while `keel produce --spill-dir` writes a numbered sequence; the producer keeps
//! accepting (spilling); the producer process itself is killed with SIGKILL and started
//! again during the outage; the cluster comes back; at the end every number the producer
//! accepted is in the partition exactly once and in order.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel::client::{ClientError, ClusterClient};
use support::{retry, start_cluster};

/// A `keel produce --spill-dir ... --report` process and the lines it reported.
struct ProducerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    reports: Arc<Mutex<Vec<String>>>,
}

impl ProducerProcess {
    fn start(bootstrap: &str, spill_dir: &std::path::Path) -> ProducerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["produce", "journaled", "--bootstrap", bootstrap, "--report"])
            .args(["--delivery-timeout", "1s", "--drain-timeout", "60s"])
            .arg("--spill-dir")
            .arg(spill_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keel produce");
        let stdout = child.stdout.take().expect("stdout");
        let reports: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = reports.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        ProducerProcess {
            stdin: child.stdin.take(),
            child,
            reports,
        }
    }

    fn feed(&mut self, range: std::ops::Range<u32>) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        for n in range {
            writeln!(stdin, "j{n}").unwrap();
        }
        stdin.flush().unwrap();
    }

    /// Waits until `count` records have a reported fate; returns the reports.
    fn wait_for_reports(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let reports = self.reports.lock().unwrap().clone();
            if reports.len() >= count {
                return reports;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} reported: {:?}",
                reports.len(),
                reports.last()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn spilled_records_survive_a_cluster_outage_and_a_producer_crash_in_order_once() {
    outage_scenario(3);
}

#[test]
fn spilled_records_survive_a_lost_quorum_and_a_producer_crash_in_order_once() {
    // The leader stays up, alone: it takes requests but cannot commit them.
    outage_scenario(2);
}

/// Kills `down` of the three nodes mid-stream — with 2, the two that do not lead the
/// partition — (and the producer process during the outage), brings them back, and
/// checks the partition.
fn outage_scenario(down: usize) {
    let root = tempfile::tempdir().unwrap();
    let spill_dir = root.path().join("journal");
    let mut nodes = start_cluster(root.path(), 3, 1);
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let bootstrap = bootstrap.join(",");
    let mut client = ClusterClient::new(&bootstrap);
    retry("create topic", || client.create_topic("journaled", 1));

    let mut producer = ProducerProcess::start(&bootstrap, &spill_dir);
    producer.feed(0..300);
    let reports = producer.wait_for_reports(300);
    assert!(
        reports.iter().all(|r| r.contains(" stored ")),
        "{reports:?}"
    );

    // Nodes die; the producer goes on accepting, into its journal.
    let leader = {
        client.refresh_metadata().unwrap();
        let address = client.metadata().unwrap().places[&("journaled".to_string(), 0)]
            .address
            .clone();
        nodes.iter().position(|n| n.address(0) == address).unwrap()
    };
    let victims: Vec<usize> = if down == 3 {
        vec![0, 1, 2]
    } else {
        (0..3).filter(|&i| i != leader).collect()
    };
    for &i in &victims {
        nodes[i].kill();
    }
    producer.feed(300..800);
    let reports = producer.wait_for_reports(800);
    assert!(
        reports.iter().all(|r| !r.contains(" failed ")),
        "{reports:?}"
    );
    assert!(reports[300..].iter().any(|r| r.ends_with(" spilled")));

    // The producer process is killed too, then started again over its journal.
    producer.child.kill().unwrap();
    producer.child.wait().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["produce", "journaled", "--spill-status", "--spill-dir"])
        .arg(&spill_dir)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(!status.contains(" 0 batches pending"), "{status}");
    let mut producer = ProducerProcess::start(&bootstrap, &spill_dir);
    producer.feed(800..1000);
    let reports = producer.wait_for_reports(200);
    assert!(
        reports.iter().all(|r| r.ends_with(" spilled")),
        "newer records go behind the journal: {reports:?}"
    );

    // The cluster comes back; the producer drains its journal and exits.
    let nodes: Vec<_> = nodes
        .into_iter()
        .enumerate()
        .map(|(i, n)| if victims.contains(&i) { n.restart() } else { n })
        .collect();
    drop(producer.stdin.take());
    let exit = producer.child.wait().unwrap();
    assert!(exit.success());

    let mut client = ClusterClient::new(&bootstrap);
    let mut stored = Vec::new();
    let mut offset = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fetched = match client.fetch("journaled", 0, offset, 1 << 20, Duration::ZERO) {
            Ok(fetched) => fetched,
            Err(error @ ClientError::Broker { .. }) | Err(error @ ClientError::GaveUp { .. })
                if Instant::now() < deadline =>
            {
                let _ = error;
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(error) => panic!("fetch: {error}"),
        };
        if fetched.records.is_empty() {
            break;
        }
        for record in fetched.records {
            stored.push(String::from_utf8(record.value.to_vec()).unwrap());
            offset += 1;
        }
    }
    let expected: Vec<String> = (0..1000).map(|n| format!("j{n}")).collect();
    assert_eq!(stored, expected, "every accepted record once, in order");
    drop(nodes);
}

/// The cluster stays healthy but its answers never reach the producer (dropped by routes
/// in the nodes' network namespaces): the leader stores and acknowledges a batch whose
/// acknowledgement is lost. The producer spills it (and what follows), and when answers
/// get through again the replayed batch is recognized as the one already stored.
#[test]
fn a_batch_stored_but_never_acknowledged_is_spilled_and_replayed_once() {
    use keel::client::{Delivered, Producer, ProducerConfig, SpillConfig};
    use keel::protocol::codec::RecordData;
    use support::netns::TestNet;
    use support::Broker;

    let net = TestNet::create(3);
    let root = tempfile::tempdir().unwrap();
    let peers: Vec<String> = (0..3)
        .map(|i| format!("{}={}:9700", i + 1, net.address(i)))
        .collect();
    let peers = peers.join(",");
    let nodes: Vec<Broker> = (0..3)
        .map(|i| {
            let args = ["--node-id", &(i + 1).to_string(), "--peers", &peers];
            Broker::start_in_namespace(
                &net.namespace(i),
                &net.address(i),
                &root.path().join(format!("node-{}", i + 1)),
                9700,
                &args.map(String::from),
            )
        })
        .collect();
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let bootstrap = bootstrap.join(",");
    let mut client = ClusterClient::new(&bootstrap);
    retry("create topic", || client.create_topic("unanswered", 1));
    let mut config = ProducerConfig::new(&bootstrap);
    config.delivery_timeout = Duration::from_secs(1);
    config.spill = Some(SpillConfig::new(root.path().join("journal"), 64 << 20));
    let producer = Producer::open(config).unwrap();
    let send = |range: std::ops::Range<u32>| {
        range
            .map(|n| {
                producer.send(
                    "unanswered",
                    0,
                    RecordData {
                        value: format!("u{n}").into_bytes(),
                        ..Default::default()
                    },
                )
            })
            .collect::<Vec<_>>()
    };
    for delivery in send(0..200) {
        assert!(matches!(delivery.wait(), Ok(Delivered::Stored(_))));
    }
    net.drop_answers_to_host();
    let results: Vec<_> = send(200..600).iter().map(|d| d.wait()).collect();
    assert!(
        results.iter().all(|r| matches!(r, Ok(Delivered::Spilled))),
        "no answer gets through, so everything is spilled: {:?}",
        results
            .iter()
            .find(|r| !matches!(r, Ok(Delivered::Spilled)))
    );
    // The application's metrics show the journal (read at the scrape).
    let mut registry = prometheus_client::registry::Registry::default();
    producer.register_metrics(&mut registry);
    let pending = producer.spill_status().unwrap().pending_batches;
    let mut scraped = String::new();
    prometheus_client::encoding::text::encode(&mut scraped, &registry).unwrap();
    // Nothing is answered meanwhile: the journal cannot change under the scrape.
    assert_eq!(producer.spill_status().unwrap().pending_batches, pending);
    assert!(
        pending > 0 && scraped.contains(&format!("keel_client_spill_pending_batches {pending}\n")),
        "{pending} pending: {scraped}"
    );
    net.restore_answers_to_host();
    let deadline = Instant::now() + Duration::from_secs(60);
    while producer.spill_status().unwrap().pending_batches > 0 {
        assert!(Instant::now() < deadline, "journal did not drain");
        std::thread::sleep(Duration::from_millis(100));
    }
    for delivery in send(600..700) {
        assert!(matches!(delivery.wait(), Ok(Delivered::Stored(_))));
    }
    drop(producer);
    let mut client = ClusterClient::new(&bootstrap);
    let mut stored = Vec::new();
    loop {
        let fetched = client
            .fetch(
                "unanswered",
                0,
                stored.len() as u64,
                1 << 20,
                Duration::ZERO,
            )
            .unwrap();
        if fetched.records.is_empty() {
            break;
        }
        stored.extend(
            fetched
                .records
                .into_iter()
                .map(|r| String::from_utf8(r.value.to_vec()).unwrap()),
        );
    }
    let expected: Vec<String> = (0..700).map(|n| format!("u{n}")).collect();
    assert_eq!(stored, expected, "every record once, in order");
    drop(nodes);
}

fn value(text: &str) -> keel::protocol::codec::RecordData {
    keel::protocol::codec::RecordData {
        value: text.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Every value of a partition, from offset 0 to the end.
fn partition_values(client: &mut ClusterClient, topic: &str) -> Vec<String> {
    let mut values = Vec::new();
    loop {
        let offset = values.len() as u64;
        let fetched = retry("fetch", || {
            client.fetch(topic, 0, offset, 1 << 20, Duration::ZERO)
        });
        if fetched.records.is_empty() {
            return values;
        }
        values.extend(
            fetched
                .records
                .into_iter()
                .map(|r| String::from_utf8(r.value.to_vec()).unwrap()),
        );
    }
}

fn wait_for_empty_journal(producer: &keel::client::Producer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while producer.spill_status().unwrap().pending_batches > 0 {
        assert!(
            Instant::now() < deadline,
            "journal did not drain: {:?}",
            producer.spill_status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A record reported spilled is counted in the journal's status already: the status was
/// copied after the producer's whole round of sends, so a reader woken by the report
/// could see the journal without it (`a_batch_stored_but_never_acknowledged...` read 0
/// pending, then 1, in one run). And the oldest batch's age is the age now.
#[test]
fn a_record_reported_spilled_is_in_the_journal_status_at_once() {
    use keel::client::{Delivered, Producer, ProducerConfig, SpillConfig};
    let root = tempfile::tempdir().unwrap();
    // No broker listens there: every record is spilled once its delivery time is up.
    let port = support::free_ports(1);
    let mut config = ProducerConfig::new(&format!("127.0.0.1:{port}"));
    config.delivery_timeout = Duration::from_millis(200);
    config.spill = Some(SpillConfig::new(root.path().join("journal"), 1 << 20));
    let producer = Producer::open(config).unwrap();
    for n in 1..=10u64 {
        let delivered = producer.send("nowhere", 0, value(&format!("s{n}"))).wait();
        assert!(
            matches!(delivered, Ok(Delivered::Spilled)),
            "{n}: {delivered:?}"
        );
        let pending = producer.spill_status().unwrap().pending_batches;
        assert_eq!(pending, n, "record {n} reported spilled, not counted");
    }
    // The oldest batch's age grows while nothing changes (it froze at the last change).
    let before = producer.spill_status().unwrap().oldest_age.unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = producer.spill_status().unwrap().oldest_age.unwrap();
    assert!(
        after >= before + Duration::from_millis(250),
        "oldest batch {before:?} old, then {after:?} 300 ms later"
    );
}

/// Issue 11, item 16 (b): records refused because the journal is full must not use up
/// sequence numbers: once the cluster is back and the journal drained, later records are
/// stored (before: the gap they left got every later batch of the partition refused as
/// out of order, forever).
#[test]
fn records_refused_by_a_full_journal_leave_no_gap_in_the_sequence() {
    use keel::client::{Delivered, Producer, ProducerConfig, SpillConfig};
    let root = tempfile::tempdir().unwrap();
    let port = support::free_ports(1);
    let mut broker = support::Broker::start(&root.path().join("node"), port, 1);
    let bootstrap = broker.address(0);
    let mut client = ClusterClient::new(&bootstrap);
    retry("create topic", || client.create_topic("full", 1));
    let mut config = ProducerConfig::new(&bootstrap);
    config.delivery_timeout = Duration::from_secs(1);
    let mut spill = SpillConfig::new(root.path().join("journal"), 16 << 10);
    spill.file_bytes = 1 << 20;
    config.spill = Some(spill);
    let producer = Producer::open(config).unwrap();
    let padded = |n: u32| format!("f{n}-{}", "x".repeat(2000));
    let mut accepted = Vec::new();
    for n in 0..3 {
        assert!(matches!(
            producer.send("full", 0, value(&padded(n))).wait(),
            Ok(Delivered::Stored(_))
        ));
        accepted.push(padded(n));
    }
    broker.kill();
    let deliveries: Vec<_> = (3..40)
        .map(|n| (n, producer.send("full", 0, value(&padded(n)))))
        .collect();
    let mut refused = 0;
    for (n, delivery) in deliveries {
        match delivery.wait() {
            Ok(Delivered::Spilled) => accepted.push(padded(n)),
            Ok(other) => panic!("{n}: {other:?} with the broker down"),
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 0, "the 16 KiB journal never filled up");
    let _broker = broker.restart();
    wait_for_empty_journal(&producer);
    for n in 40..43 {
        let result = producer.send("full", 0, value(&padded(n))).wait();
        assert!(
            matches!(result, Ok(Delivered::Stored(_))),
            "{n}: {result:?}"
        );
        accepted.push(padded(n));
    }
    drop(producer);
    assert_eq!(partition_values(&mut client, "full"), accepted);
}

/// Issue 11, item 16 (b): the journal holds batches of a topic deleted meanwhile, of one
/// deleted and created again (which forgot the producer), and of one still there. The
/// deleted topic's batches are skipped and reported instead of holding up the rest; the
/// re-created topic's are sent again under a new epoch; all the others are stored
/// (before: replay stalled on the first deleted topic's batch, forever).
#[test]
fn a_journal_with_batches_of_a_deleted_topic_skips_them_and_replays_the_rest() {
    use keel::client::{Delivered, Producer, ProducerConfig, SpillConfig};
    let root = tempfile::tempdir().unwrap();
    let port = support::free_ports(1);
    let mut broker = support::Broker::start(&root.path().join("node"), port, 1);
    let bootstrap = broker.address(0);
    let mut client = ClusterClient::new(&bootstrap);
    for topic in ["doomed", "reborn", "kept"] {
        retry("create topic", || client.create_topic(topic, 1));
    }
    let mut config = ProducerConfig::new(&bootstrap);
    config.delivery_timeout = Duration::from_secs(1);
    config.spill = Some(SpillConfig::new(root.path().join("journal"), 64 << 20));
    let producer = Producer::open(config.clone()).unwrap();
    for n in 0..3 {
        let result = producer.send("reborn", 0, value(&format!("old{n}"))).wait();
        assert!(matches!(result, Ok(Delivered::Stored(_))));
    }
    broker.kill();
    let mut deliveries = Vec::new();
    for n in 0..5 {
        for topic in ["doomed", "reborn", "kept"] {
            deliveries.push(producer.send(topic, 0, value(&format!("{topic}{n}"))));
        }
    }
    for delivery in deliveries {
        assert_eq!(delivery.wait().unwrap(), Delivered::Spilled);
    }
    drop(producer);
    let _broker = broker.restart();
    retry("delete topic", || client.delete_topic("doomed"));
    retry("delete topic", || client.delete_topic("reborn"));
    retry("create topic", || client.create_topic("reborn", 1));
    let producer = Producer::open(config).unwrap();
    wait_for_empty_journal(&producer);
    let skipped = producer.spill_skipped();
    assert!(skipped.batches >= 1 && skipped.records == 5, "{skipped:?}");
    assert!(
        skipped
            .last_reason
            .as_deref()
            .is_some_and(|r| r.contains("UnknownTopic")),
        "{skipped:?}"
    );
    let expected = |topic: &str| (0..5).map(|n| format!("{topic}{n}")).collect::<Vec<_>>();
    assert_eq!(partition_values(&mut client, "kept"), expected("kept"));
    assert_eq!(partition_values(&mut client, "reborn"), expected("reborn"));
}
