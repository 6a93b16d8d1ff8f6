//! Issue 13: clients over TLS. A real broker process with a certificate from a CA made
//! here; clients trusting that CA write and read; a plain client, a client trusting
//! another CA, a client presenting a certificate from another CA or an expired one, and
//! a broker whose own certificate has expired are refused with rustls's reason; the
//! broker keeps serving the others. SIGHUP reads new files without dropping the open
//! connections.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel::client::{ClientError, ClientSecurity, ClusterClient};
use keel::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use keel::protocol::wire::Acks;
use keel::security::certs::{Authority, Validity};
use keel::security::tls::client_config;
use support::certs::{expired, write_ca, write_pair};
use support::{free_ports, retry, Broker};

/// A broker on a free port with node 1's certificate from `ca` (valid in `validity`),
/// and `ca_file` as its --tls-ca if given; its certificate and key files.
fn tls_broker(
    dir: &Path,
    ca: &Authority,
    validity: Validity,
    ca_file: Option<&Path>,
) -> (Broker, PathBuf, PathBuf) {
    let issued = ca.issue_node(1, &["127.0.0.1"], validity).unwrap();
    let (cert, key) = write_pair(dir, "node", &issued);
    let mut args: Vec<String> = vec![
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ];
    if let Some(ca_file) = ca_file {
        args.extend(["--tls-ca".into(), ca_file.display().to_string()]);
    }
    let broker = Broker::start_with_args(&dir.join("data"), free_ports(1), 1, "4MiB", &args);
    (broker, cert, key)
}

fn client(address: &str, ca: &Path, identity: Option<&(PathBuf, PathBuf)>) -> ClusterClient {
    let identity = identity.map(|(c, k)| (c.as_path(), k.as_path()));
    let tls = client_config(ca, identity).expect("client TLS settings");
    let mut client = ClusterClient::with_security(
        address,
        ClientSecurity {
            tls: Some(tls),
            credentials: None,
        },
    );
    client.set_request_timeout(Duration::from_secs(5));
    client
}

fn produce(client: &mut ClusterClient, value: &str) -> Result<u64, ClientError> {
    let records = [RecordData {
        value: value.as_bytes().to_vec(),
        ..Default::default()
    }];
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
    client.produce("secured", 0, &batch, crc, Acks::Quorum)
}

/// The TLS error a client meets (never a retry loop's "gave up": it is not retried).
fn tls_refusal(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Tls { reason, .. }) => reason,
        other => panic!("a TLS refusal expected, got {other:?}"),
    }
}

#[test]
fn clients_reach_a_tls_broker_only_with_its_ca_and_valid_certificates() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let ca = Authority::new("keel test CA").unwrap();
    let other = Authority::new("another CA").unwrap();
    let ca_file = write_ca(dir, "ca", &ca);
    let other_ca_file = write_ca(dir, "other-ca", &other);
    let valid = Validity::days_from_now(30);
    let (broker, _, _) = tls_broker(dir, &ca, valid, Some(&ca_file));
    let address = broker.address(0);

    // Trusting the CA: a topic, a write, a read.
    let mut trusted = client(&address, &ca_file, None);
    retry("create topic", || trusted.create_topic("secured", 1));
    let offset = produce(&mut trusted, "over TLS").expect("a write over TLS");
    let fetched = trusted
        .fetch("secured", 0, offset, 1 << 20, Duration::from_millis(100))
        .unwrap();
    assert_eq!(fetched.records.len(), 1);
    assert_eq!(&fetched.records[0].value[..], b"over TLS");
    // With a client certificate from the CA too.
    let named = write_pair(dir, "alice", &ca.issue_client("alice", valid).unwrap());
    let mut with_cert = client(&address, &ca_file, Some(&named));
    produce(&mut with_cert, "with a certificate").expect("a client certificate from the CA");

    // A plain client gets no answer it can read: the connection ends.
    let mut plain = ClusterClient::new(&address);
    plain.set_request_timeout(Duration::from_secs(2));
    let reason = tls_refusal(plain.list_topics());
    assert!(reason.contains("it speaks TLS"), "{reason}");

    // Trusting another CA: the broker's certificate is refused, with the reason.
    let reason = tls_refusal(client(&address, &other_ca_file, None).list_topics());
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    // A client certificate from another CA, or an expired one: the broker refuses it.
    let foreign = write_pair(
        dir,
        "mallory",
        &other.issue_client("mallory", valid).unwrap(),
    );
    let reason = tls_refusal(client(&address, &ca_file, Some(&foreign)).list_topics());
    assert!(reason.contains("alert"), "{reason}");
    let stale = write_pair(dir, "stale", &ca.issue_client("stale", expired()).unwrap());
    let reason = tls_refusal(client(&address, &ca_file, Some(&stale)).list_topics());
    assert!(reason.contains("alert"), "{reason}");
    let early = Validity {
        not_before: time::OffsetDateTime::now_utc() + time::Duration::days(2),
        not_after: time::OffsetDateTime::now_utc() + time::Duration::days(30),
    };
    let early = write_pair(dir, "early", &ca.issue_client("early", early).unwrap());
    let reason = tls_refusal(client(&address, &ca_file, Some(&early)).list_topics());
    assert!(reason.contains("alert"), "{reason}");
    retry("the broker says why", || {
        let logged = broker.log_tail();
        if logged.contains("client TLS handshake failed")
            && logged.contains("expired")
            && logged.contains("not valid yet")
        {
            Ok(())
        } else {
            Err(logged)
        }
    });

    // Garbage instead of a handshake: closed; the broker goes on serving.
    {
        use std::io::{Read, Write};
        let mut raw = std::net::TcpStream::connect(&address).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = raw.write_all(b"GET / HTTP/1.0\r\n\r\n\x00\x01garbage");
        let mut rest = Vec::new();
        let _ = raw.read_to_end(&mut rest);
    }
    produce(&mut trusted, "still serving").expect("served after the refusals");
}

#[test]
fn a_broker_with_an_expired_certificate_is_refused_and_sighup_reloads_its_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let ca = Authority::new("keel test CA").unwrap();
    let ca_file = write_ca(dir, "ca", &ca);
    let (broker, _, key) = tls_broker(dir, &ca, expired(), None);
    let address = broker.address(0);
    let reason = tls_refusal(client(&address, &ca_file, None).list_topics());
    assert!(reason.contains("certificate expired"), "{reason}");

    // New files, same paths; SIGHUP: new connections get the new certificate.
    let renewed = ca
        .issue_node(1, &["127.0.0.1"], Validity::days_from_now(30))
        .unwrap();
    write_pair(dir, "node", &renewed);
    broker.signal("HUP");
    let mut renewed_client = client(&address, &ca_file, None);
    retry("served with the renewed certificate", || {
        renewed_client.create_topic("secured", 1)
    });
    produce(&mut renewed_client, "renewed").expect("a write");

    // Files from a new CA: the client of the old CA keeps its open connection, a new
    // connection trusting the old CA is refused, one trusting the new CA served.
    let next_ca = Authority::new("next CA").unwrap();
    let next_ca_file = write_ca(dir, "next-ca", &next_ca);
    let next = next_ca
        .issue_node(1, &["127.0.0.1"], Validity::days_from_now(30))
        .unwrap();
    write_pair(dir, "node", &next);
    broker.signal("HUP");
    retry("the new CA's certificate served", || {
        let mut fresh = client(&address, &next_ca_file, None);
        fresh.list_topics().map(|_| ())
    });
    produce(&mut renewed_client, "same connection").expect("the open connection goes on");
    let reason = tls_refusal(client(&address, &ca_file, None).list_topics());
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    // A reload that fails (a key that is not the certificate's) keeps the files in use.
    std::fs::write(
        &key,
        ca.issue_client("x", Validity::days_from_now(1))
            .unwrap()
            .key_pem,
    )
    .unwrap();
    broker.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let mut after = client(&address, &next_ca_file, None);
    after
        .list_topics()
        .expect("still served with the files that worked");
    assert!(
        broker.log_tail().contains("not reloaded"),
        "{}",
        broker.log_tail()
    );
}

/// `keel dev --secure`: certificates made, nodes with TLS and mutual TLS, and the flags
/// it prints are what a client needs (without them the CLI is not served).
#[test]
fn keel_dev_secure_prints_the_flags_that_reach_it() {
    let first_peer_frame = dev_secure_serves(&[], 230);
    assert_eq!(
        first_peer_frame, None,
        "a mutual-TLS peer port waits for a ClientHello"
    );
}

/// `keel dev --secure --peer-security secret`: clients speak TLS as before, the nodes
/// keep to the shared secret: a peer port opens with its challenge, in the clear.
#[test]
fn keel_dev_secure_with_secret_peers_serves_tls_clients() {
    let first_peer_frame = dev_secure_serves(&["--peer-security", "secret"], 240);
    assert!(
        first_peer_frame.is_some_and(|n| n > 0),
        "a shared-secret peer port sends its challenge first"
    );
}

/// Starts `keel dev --secure` with `extra`, creates a topic with the flags it prints
/// (and fails to without them); the bytes node 1's peer port sends unasked within 1 s
/// (`None`: nothing).
fn dev_secure_serves(extra: &[&str], ports: u16) -> Option<usize> {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let root = tempfile::tempdir().unwrap();
    let port = free_ports(ports);
    let mut dev = Command::new(support::keel_binary())
        .args(["dev", "--secure", "--port", &port.to_string()])
        .args(extra)
        .arg("--data-dir")
        .arg(root.path().join("dev"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dev.stderr.take().unwrap()).lines();
    let flags = loop {
        let line = lines.next().expect("keel dev's flags line").unwrap();
        if let Some((_, flags)) = line.split_once("clients add: ") {
            break flags.to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let bootstrap = format!("127.0.0.1:{port},127.0.0.1:{}", port + 10);
    let keel = |extra: &[&str]| {
        Command::new(support::keel_binary())
            .args(["topic", "create", "dev-secure", "--bootstrap", &bootstrap])
            .args(extra)
            .output()
            .unwrap()
    };
    let flags: Vec<&str> = flags.split_whitespace().collect();
    assert!(flags.contains(&"--tls-ca"), "{flags:?}");
    let created = retry("a topic over TLS", || {
        let out = keel(&flags);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    assert!(created.contains("created topic dev-secure"), "{created}");
    assert!(!keel(&[]).status.success(), "a plain client is not served");
    let mut peer = std::net::TcpStream::connect(("127.0.0.1", port + 100)).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut first = [0u8; 256];
    let sent = match peer.read(&mut first) {
        Ok(bytes) => Some(bytes),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("the peer port failed the connection: {e}"),
    };
    let _ = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status();
    let _ = dev.wait();
    sent
}

/// Issue 13, hostile input: hundreds of connections that never finish a TLS handshake
/// (silent, garbage, a truncated ClientHello) are held open against a TLS broker; a
/// client that completes its handshake at once is still served (the oldest unfinished
/// handshakes are evicted), and the broker keeps running.
#[test]
fn a_flood_of_unfinished_handshakes_never_keeps_a_real_client_out() {
    use std::io::Write;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let ca = Authority::new("keel test CA").unwrap();
    let ca_file = write_ca(dir, "ca", &ca);
    let (mut broker, _, _) = tls_broker(dir, &ca, Validity::days_from_now(30), None);
    let address = broker.address(0);
    let mut client_before = client(&address, &ca_file, None);
    retry("create topic", || client_before.create_topic("secured", 1));
    // A ClientHello record header announcing 512 bytes, and 10 of them.
    let truncated: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
    let mut flood = Vec::new();
    for i in 0..300 {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        match i % 3 {
            0 => {}
            1 => {
                let _ = stream.write_all(truncated);
            }
            _ => {
                let _ = stream.write_all(b"\x16\x03\x03garbage-before-a-hello");
            }
        }
        flood.push(stream);
    }
    let started = std::time::Instant::now();
    let mut during = client(&address, &ca_file, None);
    produce(&mut during, "during the flood").expect("a real client is served during the flood");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served within 5 s: {:?}",
        started.elapsed()
    );
    produce(&mut client_before, "an open connection").expect("open connections go on");
    assert!(broker.is_running(), "the broker survives the flood");
    assert!(
        broker.log_tail().contains("too many at once"),
        "{}",
        broker.log_tail()
    );
    drop(flood);
}
