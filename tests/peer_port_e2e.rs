//! Issue 11 item 3: Raft messages are accepted only from the nodes of the cluster, on
//! the peer port. A three-node cluster of real processes; at a follower we aim the two
//! messages that once did harm through its client port — a `MsgTimeoutNow` (it made the
//! follower campaign and take over) and a `MsgHeartbeat` with commit 1,000,000,000
//! (raft-rs aborted the node in `commit_to`) — then at its peer port without a hello,
//! and with a hello naming a node of the cluster but messages from another. Each time:
//! refused or dropped, the node keeps serving, no election (leader and term unchanged),
//! and a produce afterwards is acknowledged by the whole cluster.
//!
//! Issue 13: a peer connection opens with the receiver's challenge; a hello without the
//! proof of the cluster's secret over it (none, another secret's, another connection's)
//! is refused and the connection closed before any Raft message on it is looked at.
//!
//! Issue 11 H10: appends bigger than the frame limit travel in several frames, so big
//! batches in flight together and a follower far behind cost no election.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use keel::client::{ClusterClient, GroupStatus};
use keel::protocol::codec::{decode_response, encode_record_batch, BatchProducer, RecordData};
use keel::protocol::frame::{encode_frame, FrameDecoder};
use keel::protocol::peer_codec::{
    decode_peer_frame, encode_peer_frame, encode_peer_hello, PeerChallenge, PeerHello,
};
use keel::protocol::wire::{Acks, ErrorCode};
use keel::security::PeerSecret;
use raft::eraftpb::{Message, MessageType};
use support::{peer_secret_file, retry, settled, start_cluster_with, Broker};

fn raft_message(msg_type: MessageType, from: u64, to: u64, term: u64, commit: u64) -> Message {
    let mut message = Message {
        from,
        to,
        term,
        commit,
        ..Default::default()
    };
    message.set_msg_type(msg_type);
    message
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream
}

/// Whether the other side closed the connection (rather than keeping it open and
/// silent) within the read timeout.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// A connection to a peer port, and the challenge the receiver opened it with.
fn open_peer(address: &str) -> (TcpStream, PeerChallenge) {
    let mut stream = connect(address);
    let mut decoder = FrameDecoder::new(1024);
    let mut buffer = [0u8; 256];
    let frame = loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            break frame;
        }
        let count = stream.read(&mut buffer).expect("a challenge");
        assert!(count > 0, "closed before its challenge");
        decoder.push(&buffer[..count]);
    };
    let challenge = decode_peer_frame(&frame)
        .unwrap()
        .challenge
        .expect("the receiver's first frame is a challenge");
    assert_eq!(challenge.nonce.len(), 32);
    (stream, challenge)
}

/// A hello from `node` proving `secret` over `challenge`.
fn proven_hello(secret: &PeerSecret, challenge: &PeerChallenge, node: u32) -> Vec<u8> {
    let proof = secret.hello_proof(&challenge.nonce, challenge.node_id, node, 0);
    encode_frame(&encode_peer_hello(&PeerHello::proven(node, 0, proof))).unwrap()
}

/// Sends `payload` as one frame on a fresh client connection: the answer's error code
/// and message, and whether the broker then closed the connection.
fn on_client_port(address: &str, payload: &[u8]) -> (ErrorCode, String, bool) {
    let mut stream = connect(address);
    stream.write_all(&encode_frame(payload).unwrap()).unwrap();
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buffer = [0u8; 4096];
    let answer = loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            break frame;
        }
        let count = stream
            .read(&mut buffer)
            .expect("an answer on the client port");
        assert!(count > 0, "closed without an answer");
        decoder.push(&buffer[..count]);
    };
    let response = decode_response(&answer).unwrap();
    let error = response.error().expect("an error answer");
    let message = error.message().unwrap_or_default().to_string();
    (error.code(), message, closed_by_peer(&mut stream))
}

fn produce_one(client: &mut ClusterClient, n: u64) -> u64 {
    let records = [RecordData {
        value: format!("after-{n}").into_bytes(),
        ..Default::default()
    }];
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
    retry("produce", || {
        client.produce("guarded", 0, &batch, crc, Acks::Quorum)
    })
}

/// The cluster is as it was: every node answers, the same leader in the same term, and
/// a write is committed by all three.
fn assert_undisturbed(client: &mut ClusterClient, before: &[GroupStatus], step: &str, n: u64) {
    std::thread::sleep(Duration::from_millis(500)); // what an election would take
    produce_one(client, n);
    let commit_before = before.iter().map(|r| r.commit).max().unwrap_or(0);
    let after = retry("all caught up", || {
        let rows = settled(client);
        let commit = rows.iter().map(|r| r.commit).max().unwrap_or(0);
        if commit > commit_before && rows.iter().all(|r| r.applied == commit) {
            Ok(rows)
        } else {
            Err(format!("not caught up: {rows:?}"))
        }
    });
    let leader = |rows: &[GroupStatus]| {
        let leader = rows.iter().find(|r| r.role == "leader").unwrap();
        (leader.node, leader.term)
    };
    assert_eq!(
        leader(&after),
        leader(before),
        "{step}: no leader change, term unchanged: {after:?}"
    );
}

/// Three nodes with a topic "guarded" written once and settled: the nodes, a client of
/// them, and the groups' status.
fn guarded_cluster(root: &std::path::Path) -> (Vec<Broker>, ClusterClient, Vec<GroupStatus>) {
    let nodes = start_cluster_with(root, 3, 1, &["--leader-balance-delay", "off"]);
    let everyone: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let mut client = ClusterClient::new(&everyone.join(","));
    retry("create topic", || client.create_topic("guarded", 1));
    produce_one(&mut client, 0);
    let before = settled(&mut client);
    (nodes, client, before)
}

#[test]
fn peer_messages_are_accepted_only_from_a_hello_of_a_cluster_node_on_the_peer_port() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, mut client, before) = guarded_cluster(root.path());
    let leader = before.iter().find(|r| r.role == "leader").unwrap().clone();
    let follower = before.iter().find(|r| r.role == "follower").unwrap().node;
    let third = before
        .iter()
        .map(|r| r.node)
        .find(|&n| n != leader.node && n != follower)
        .unwrap();
    let follower_node: &Broker = &nodes[follower as usize - 1];
    let (leader_id, follower_id) = (u64::from(leader.node), u64::from(follower));
    // As if from the leader: take over now; commit up to an index far past the log.
    let timeout_now = raft_message(
        MessageType::MsgTimeoutNow,
        leader_id,
        follower_id,
        leader.term,
        0,
    );
    let heartbeat = raft_message(
        MessageType::MsgHeartbeat,
        leader_id,
        follower_id,
        leader.term,
        1_000_000_000,
    );
    let timeout_frame = encode_peer_frame(leader.node, 0, std::slice::from_ref(&timeout_now));
    let heartbeat_frame = encode_peer_frame(leader.node, 0, std::slice::from_ref(&heartbeat));

    // 1. On the follower's client port: an error answer, the connection closed.
    for (what, frame) in [
        ("timeout-now", &timeout_frame),
        ("heartbeat", &heartbeat_frame),
    ] {
        let (code, message, closed) = on_client_port(&follower_node.address(0), frame);
        assert_eq!(code, ErrorCode::InvalidRequest, "{what}: {message}");
        assert!(message.contains("peer port"), "{what}: {message}");
        assert!(closed, "{what}: the client connection is closed");
    }
    // A frame too short to hold a file identifier is refused, not a crash.
    let (code, _, _) = on_client_port(&follower_node.address(0), b"abc");
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert_undisturbed(&mut client, &before, "client port", 1);

    // 2. On the follower's peer port without a hello: the connection is closed.
    let peer_port = follower_node.peer_address(0);
    for frame in [&timeout_frame, &heartbeat_frame] {
        let (mut stream, challenge) = open_peer(&peer_port);
        assert_eq!(u64::from(challenge.node_id), follower_id);
        stream.write_all(&encode_frame(frame).unwrap()).unwrap();
        assert!(closed_by_peer(&mut stream), "no hello: closed");
    }
    // Nor with a proven hello claiming the follower's own id or an unknown node.
    let secret = PeerSecret::load(&peer_secret_file()).unwrap();
    for claimed in [follower, 77] {
        let (mut stream, challenge) = open_peer(&peer_port);
        stream
            .write_all(&proven_hello(&secret, &challenge, claimed))
            .unwrap();
        let _ = stream.write_all(&encode_frame(&timeout_frame).unwrap());
        assert!(closed_by_peer(&mut stream), "hello from {claimed}: closed");
    }
    // Issue 13: nor with a hello of a node of the cluster without the secret's proof
    // over this connection's challenge: none, another secret's, another challenge's.
    let other = PeerSecret::from_bytes(b"not-the-cluster-secret-0123456789").unwrap();
    let (_, earlier) = open_peer(&peer_port);
    let unproven = encode_frame(&encode_peer_hello(&PeerHello::new(third, 0))).unwrap();
    for (what, hello) in [
        (
            "no proof",
            Box::new(move |_: &PeerChallenge| unproven.clone())
                as Box<dyn Fn(&PeerChallenge) -> Vec<u8>>,
        ),
        (
            "another secret",
            Box::new(move |c: &PeerChallenge| proven_hello(&other, c, third)),
        ),
        (
            "a replayed proof",
            Box::new({
                let secret = secret.clone();
                move |_: &PeerChallenge| proven_hello(&secret, &earlier, third)
            }),
        ),
    ] {
        let (mut stream, challenge) = open_peer(&peer_port);
        let mut out = hello(&challenge);
        out.extend(encode_frame(&timeout_frame).unwrap());
        let _ = stream.write_all(&out);
        assert!(closed_by_peer(&mut stream), "{what}: closed");
    }
    assert_undisturbed(&mut client, &before, "peer port without a proven hello", 2);

    // 3. A proven hello of a node of the cluster, messages from another: dropped (as is
    //    a frame whose from_node is not the hello's).
    let (mut stream, challenge) = open_peer(&peer_port);
    stream
        .write_all(&proven_hello(&secret, &challenge, third))
        .unwrap();
    let mut out = Vec::new();
    for message in [&timeout_now, &heartbeat] {
        // from = the leader, on the third node's connection.
        out.extend(
            encode_frame(&encode_peer_frame(third, 0, std::slice::from_ref(message))).unwrap(),
        );
        // from_node = the leader's, on the third node's connection.
        out.extend(
            encode_frame(&encode_peer_frame(
                leader.node,
                0,
                std::slice::from_ref(message),
            ))
            .unwrap(),
        );
    }
    stream.write_all(&out).unwrap();
    assert!(
        !closed_by_peer(&mut stream),
        "an admitted connection stays open; its bad frames are dropped"
    );
    assert_undisturbed(
        &mut client,
        &before,
        "messages not from the hello's node",
        3,
    );
    drop(stream);
    drop(nodes);
}

/// Issue 11 H10: with the frame limit just above the largest entry (1100 KiB), four
/// producers keep batches of about 1 MiB in flight together, so the leader's appends of
/// one Ready pass (merged by raft-rs) hold several entries per follower, and one follower
/// is paused meanwhile. Everything is acknowledged (the appends reach the other follower
/// in frames below its limit), and the paused follower, resumed, catches up the same way.
#[test]
fn big_appends_and_a_follower_far_behind_travel_in_frames_below_the_limit() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("keel.toml");
    std::fs::write(&config, "max_frame = \"1100KiB\"\n").unwrap();
    let config = config.to_string_lossy().to_string();
    let args = ["--leader-balance-delay", "off", "--config", &config];
    let nodes = start_cluster_with(root.path(), 3, 1, &args);
    let everyone: Vec<String> = nodes.iter().map(|n| n.address(0)).collect();
    let bootstrap = everyone.join(",");
    let mut client = ClusterClient::new(&bootstrap);
    retry("create topic", || client.create_topic("backlog", 1));
    produce_one_to(&mut client, "backlog", 0);
    let before = settled(&mut client);
    let follower = before.iter().find(|r| r.role == "follower").unwrap().node;
    nodes[follower as usize - 1].signal("STOP");
    let producers: Vec<_> = (0..4)
        .map(|_| {
            let bootstrap = bootstrap.clone();
            std::thread::spawn(move || {
                let mut client = ClusterClient::new(&bootstrap);
                client.set_request_timeout(Duration::from_secs(10));
                let records: Vec<RecordData> = (0..10)
                    .map(|_| RecordData {
                        value: vec![b'b'; 100_000],
                        ..Default::default()
                    })
                    .collect();
                let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
                for _ in 0..5 {
                    client
                        .produce("backlog", 0, &batch, crc, Acks::Quorum)
                        .expect("a big batch acknowledged");
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().expect("every big batch acknowledged");
    }
    nodes[follower as usize - 1].signal("CONT");
    let caught_up = retry("the follower catches up", || {
        let rows = settled(&mut client);
        let leader_commit = rows.iter().find(|r| r.role == "leader").unwrap().commit;
        let behind = rows.iter().find(|r| r.node == follower).unwrap();
        if behind.applied == leader_commit {
            Ok(rows)
        } else {
            Err(format!("follower behind: {rows:?}"))
        }
    });
    let leader = |rows: &[GroupStatus]| {
        let leader = rows.iter().find(|r| r.role == "leader").unwrap();
        (leader.node, leader.term)
    };
    assert_eq!(
        leader(&caught_up),
        leader(&before),
        "no election on the way"
    );
}

fn produce_one_to(client: &mut ClusterClient, topic: &str, n: u64) -> u64 {
    let records = [RecordData {
        value: format!("first-{n}").into_bytes(),
        ..Default::default()
    }];
    let (batch, crc) = encode_record_batch(BatchProducer::default(), 0, &records);
    retry("produce", || {
        client.produce(topic, 0, &batch, crc, Acks::Quorum)
    })
}

/// Issue 13, hostile input on the peer port: hundreds of connections that never send a
/// hello (silent, garbage, a hello frame's length with no hello) are held open at the
/// leader's peer port while a follower is killed and restarted: the follower's new
/// connection still gets in (the oldest connections without a hello are evicted) and it
/// catches up; no election, the leader keeps serving.
#[test]
fn a_flood_of_connections_without_a_hello_never_keeps_a_node_out() {
    let root = tempfile::tempdir().unwrap();
    let (mut nodes, mut client, before) = guarded_cluster(root.path());
    let leader = before.iter().find(|r| r.role == "leader").unwrap().clone();
    let follower = before.iter().find(|r| r.role == "follower").unwrap().node;
    let leader_port = nodes[leader.node as usize - 1].peer_address(0);
    // Keeps 300 such connections open, opening a new one for each the leader closes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (stop, address) = (stop.clone(), leader_port.clone());
        std::thread::spawn(move || {
            let open = |i: usize| {
                let mut stream = TcpStream::connect(&address).ok()?;
                let _ = match i % 3 {
                    0 => Ok(()),
                    1 => stream.write_all(&[0xff, 0xff, 0xff, 0x00, 1, 2, 3]),
                    _ => stream.write_all(b"garbage before a hello"),
                };
                stream.set_nonblocking(true).ok()?;
                Some(stream)
            };
            let mut streams: Vec<Option<TcpStream>> = (0..300).map(open).collect();
            let mut opened = 300usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, slot) in streams.iter_mut().enumerate() {
                    let mut buffer = [0u8; 256];
                    let closed = match slot {
                        Some(stream) => {
                            matches!(stream.read(&mut buffer), Ok(0))
                                || matches!(stream.read(&mut buffer), Err(e) if e.kind() != ErrorKind::WouldBlock)
                        }
                        None => true,
                    };
                    if closed {
                        *slot = open(i);
                        opened += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            opened
        })
    };
    let index = follower as usize - 1;
    let restarted = nodes.remove(index).restart();
    nodes.insert(index, restarted);
    for n in 1..=5 {
        produce_one(&mut client, n);
    }
    retry(
        "the restarted follower caught up, as the leader sees it",
        || {
            let rows = settled(&mut client);
            let leader_row = rows.iter().find(|r| r.role == "leader").unwrap();
            let matched = leader_row
                .followers
                .iter()
                .find(|(node, _, _)| *node == follower)
                .map(|(_, matched, _)| *matched);
            if matched == Some(leader_row.commit) && leader_row.term == leader.term {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        },
    );
    let after = settled(&mut client);
    let now = after.iter().find(|r| r.role == "leader").unwrap();
    assert_eq!(
        (now.node, now.term),
        (leader.node, leader.term),
        "no election"
    );
    drop(flood);
}
