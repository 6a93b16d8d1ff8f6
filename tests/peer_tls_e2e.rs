//! Issue 13: nodes authenticate each other with mutual TLS. A three-node cluster of real
//! processes, each with its own certificate from the cluster's CA (naming keel-node-N)
//! and no peer secret, replicates over mutual TLS. At a follower's peer port: a plain
//! connection, a certificate from another CA and node 2's certificate claiming to be
//! node 3 are each refused before any Raft message is looked at; node 2's certificate
//! claiming node 2 is admitted. Each time the cluster is undisturbed (same leader and
//! term, writes acknowledged by all).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel::client::{ClientSecurity, ClusterClient, GroupStatus};
use keel::protocol::codec::{encode_record_batch, BatchProducer, RecordData};
use keel::protocol::frame::{encode_frame, FrameDecoder};
use keel::protocol::peer_codec::{
    decode_peer_frame, encode_peer_frame, encode_peer_hello, PeerHello,
};
use keel::protocol::wire::Acks;
use keel::security::certs::{Authority, Validity};
use keel::security::tls::{client_config, node_name};
use raft::eraftpb::{Message, MessageType};
use support::certs::write_pair;
use support::{retry, settled, start_cluster_with};

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A mutual TLS connection to `node`'s peer port at `address` with `identity`, or the
/// handshake's error.
fn tls_to_peer(
    address: &str,
    node: u64,
    ca: &Path,
    identity: &(PathBuf, PathBuf),
) -> std::io::Result<TlsStream> {
    let config = client_config(ca, Some((&identity.0, &identity.1))).unwrap();
    let name = rustls_pki_types::ServerName::try_from(node_name(node)).unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = TcpStream::connect(address)?;
    tcp.set_read_timeout(Some(Duration::from_secs(3)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Reads the receiver's challenge frame.
fn read_challenge(stream: &mut impl Read) -> std::io::Result<()> {
    let mut decoder = FrameDecoder::new(1024);
    let mut buffer = [0u8; 256];
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            let challenge = decode_peer_frame(&frame).unwrap().challenge;
            assert!(challenge.is_some(), "a challenge first");
            return Ok(());
        }
        let count = stream.read(&mut buffer)?;
        if count == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        decoder.push(&buffer[..count]);
    }
}

/// Whether the other side ended the connection (closed it, perhaps after a TLS alert)
/// rather than keeping it open and silent for the read timeout.
fn ended_by_peer(stream: &mut impl Read) -> bool {
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) => {
                return !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
            }
        }
    }
}

fn timeout_now(from: u64, to: u64, term: u64) -> Message {
    let mut message = Message {
        from,
        to,
        term,
        ..Default::default()
    };
    message.set_msg_type(MessageType::MsgTimeoutNow);
    message
}

fn produce(client: &mut ClusterClient, n: u32) {
    let records = [RecordData {
        value: format!("record-{n}").into_bytes(),
        ..Default::default()
    }];
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
    retry("produce", || {
        client.produce("guarded", 0, &batch, crc, Acks::Quorum)
    });
}

fn leader_of(rows: &[GroupStatus]) -> (u32, u64) {
    let leader = rows.iter().find(|r| r.role == "leader").unwrap();
    (leader.node, leader.term)
}

#[test]
fn nodes_speak_mutual_tls_and_a_certificate_speaks_only_for_its_node() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let ca = Authority::new("cluster CA").unwrap();
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let valid = Validity::days_from_now(30);
    let mut identities = Vec::new();
    for node in 1..=3u64 {
        let issued = ca.issue_node(node, &["127.0.0.1"], valid).unwrap();
        identities.push(write_pair(dir, &format!("node-{node}"), &issued));
    }
    let cert = format!("{}/node-{{node}}.crt", dir.display());
    let key = format!("{}/node-{{node}}.key", dir.display());
    let ca_arg = ca_file.display().to_string();
    let args = [
        "--leader-balance-delay",
        "off",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-ca",
        &ca_arg,
    ];
    let nodes = start_cluster_with(dir, 3, 1, &args);
    let everyone: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let tls = client_config(&ca_file, None).unwrap();
    let security = ClientSecurity {
        tls: Some(tls),
        credentials: None,
    };
    let mut client = ClusterClient::with_security(&everyone.join(","), security);
    retry("create topic", || client.create_topic("guarded", 1));
    produce(&mut client, 0);
    // Replicated over mutual TLS: every node applies the write.
    let before = retry("every node applies", || {
        let rows = settled(&mut client);
        if rows
            .iter()
            .all(|r| r.applied == rows[0].applied && r.applied > 0)
        {
            Ok(rows)
        } else {
            Err(format!("{rows:?}"))
        }
    });
    let (leader, term) = leader_of(&before);
    let follower = before.iter().find(|r| r.role == "follower").unwrap().node;
    let other = (1..=3).find(|&n| n != leader && n != follower).unwrap();
    let follower_port = nodes[follower as usize - 1].peer_address(0);
    let undisturbed = |client: &mut ClusterClient, n: u32, step: &str| {
        std::thread::sleep(Duration::from_millis(500));
        produce(client, n);
        let after = settled(client);
        assert_eq!(leader_of(&after), (leader, term), "{step}: {after:?}");
    };

    // A plain connection: the handshake fails, the connection ends.
    let mut plain = TcpStream::connect(&follower_port).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let hello = encode_peer_hello(&PeerHello::over_tls(other, 0));
    let _ = plain.write_all(&encode_frame(&hello).unwrap());
    assert!(ended_by_peer(&mut plain), "a plain connection is ended");

    // A certificate from another CA: refused in the handshake.
    let stranger = Authority::new("another CA").unwrap();
    let forged = write_pair(
        dir,
        "forged",
        &stranger
            .issue_node(u64::from(other), &["127.0.0.1"], valid)
            .unwrap(),
    );
    let refused = tls_to_peer(&follower_port, u64::from(follower), &ca_file, &forged).and_then(
        |mut stream| {
            read_challenge(&mut stream)?;
            Ok(ended_by_peer(&mut stream))
        },
    );
    assert!(
        !matches!(refused, Ok(false)),
        "another CA's certificate: {refused:?}"
    );

    // The other node's certificate claiming to be the leader, with the leader's
    // TimeoutNow: refused, the message never stepped.
    let other_identity = &identities[other as usize - 1];
    let mut posing = tls_to_peer(
        &follower_port,
        u64::from(follower),
        &ca_file,
        other_identity,
    )
    .expect("a certificate from the CA is taken");
    read_challenge(&mut posing).unwrap();
    let mut out = encode_frame(&encode_peer_hello(&PeerHello::over_tls(leader, 0))).unwrap();
    let message = timeout_now(u64::from(leader), u64::from(follower), term);
    out.extend(encode_frame(&encode_peer_frame(leader, 0, &[message])).unwrap());
    let _ = posing.write_all(&out);
    let _ = posing.flush();
    assert!(
        ended_by_peer(&mut posing),
        "node {other}'s certificate claiming node {leader}"
    );
    undisturbed(&mut client, 1, "refused connections");

    // Its own node: admitted (the connection stays open).
    let mut own = tls_to_peer(
        &follower_port,
        u64::from(follower),
        &ca_file,
        other_identity,
    )
    .unwrap();
    read_challenge(&mut own).unwrap();
    own.write_all(&encode_frame(&encode_peer_hello(&PeerHello::over_tls(other, 0))).unwrap())
        .unwrap();
    own.flush().unwrap();
    assert!(
        !ended_by_peer(&mut own),
        "node {other}'s certificate as node {other}"
    );
    drop(own);
    undisturbed(&mut client, 2, "an admitted connection");
}
