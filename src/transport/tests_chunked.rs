//! The peer transport over real sockets in one process: a snapshot larger than the frame
//! limit crosses a link in chunks and arrives whole, in order with the frames around it;
//! a link holds one such frame at a time; a broken chunk sequence, or chunks before the
//! hello, close the connection and deliver nothing.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use raft::eraftpb::{Message, MessageType, Snapshot};

use crate::config::{NodeConfig, PeerAddress};
use crate::protocol::frame::{encode_frame, FrameDecoder};
use crate::protocol::peer_chunk_codec::encode_peer_chunk;
use crate::protocol::peer_codec::{
    decode_peer_frame, encode_peer_challenge, encode_peer_frame, encode_peer_hello, PeerChallenge,
    PeerHello,
};
use crate::transport::peer_links::Dropped;
use crate::transport::peer_listener::{serve_peers, Deliver, PeerIngress};
use crate::transport::PeerLinks;

/// The frame limit of both nodes.
const LIMIT: u32 = 64 * 1024;

type Received = Rc<RefCell<Vec<(u64, Message)>>>;

fn on_executor<G, F>(test: G)
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .spawn(test)
        .expect("an executor")
        .join()
        .expect("the test ran to its end");
}

/// Node 2's peer port for group 0: its port, and what it delivered (node, message).
fn listening_node() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("its address").port();
    let received: Received = Rc::default();
    let sink = received.clone();
    let deliver: Deliver = Rc::new(move |_group, node, messages| {
        sink.borrow_mut()
            .extend(messages.into_iter().map(|m| (node, m)))
    });
    let ingress = PeerIngress {
        this_node: 2,
        groups: Rc::new(std::cell::RefCell::new(vec![0])),
        nodes: Rc::new(RefCell::new(vec![1, 2])),
        max_frame_bytes: LIMIT,
        secret: Some(test_secret()),
        tls: None,
    };
    let stopping = Rc::new(Cell::new(false));
    glommio::spawn_local(serve_peers(
        listener,
        ingress,
        (deliver, Rc::new(|_, _| {})),
        stopping,
    ))
    .detach();
    (port, received)
}

/// The two nodes' shared peer secret.
fn test_secret() -> crate::security::PeerSecret {
    crate::security::PeerSecret::from_bytes(&[3; 32]).expect("a secret")
}

fn node_one_config(peer_port: u16) -> NodeConfig {
    let peer = |node_id, peer_port| PeerAddress {
        node_id,
        host: "127.0.0.1".to_string(),
        base_port: 1,
        peer_port,
        rack: None,
    };
    NodeConfig {
        node_id: 1,
        max_frame_bytes: LIMIT,
        peers: vec![peer(1, 1), peer(2, peer_port)],
        peer_secret: Some(test_secret()),
        ..NodeConfig::default()
    }
}

fn heartbeat(commit: u64) -> Message {
    let mut message = Message {
        from: 1,
        to: 2,
        term: 3,
        commit,
        ..Default::default()
    };
    message.set_msg_type(MessageType::MsgHeartbeat);
    message
}

/// A snapshot message of `data_bytes` bytes of state, at `index`.
fn snapshot_message(index: u64, data_bytes: usize) -> Message {
    let mut snapshot = Snapshot {
        data: (0..data_bytes)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into(),
        ..Default::default()
    };
    snapshot.mut_metadata().index = index;
    snapshot.mut_metadata().term = 3;
    snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2];
    let mut message = Message {
        from: 1,
        to: 2,
        term: 3,
        ..Default::default()
    };
    message.set_msg_type(MessageType::MsgSnapshot);
    message.set_snapshot(snapshot);
    message
}

/// Waits until `received` holds `count` messages (or 10 s).
async fn wait_for(received: &Received, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.borrow().len() < count && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_snapshot_larger_than_the_frame_limit_arrives_whole_and_in_order() {
    on_executor(|| async {
        let (port, received) = listening_node();
        let config = node_one_config(port);
        let to_two = (2, 0, config.peer_link_address(2, 0).unwrap());
        let links = PeerLinks::start(&config, 0, &[to_two]);
        let first = vec![heartbeat(1), snapshot_message(40, 1 << 20), heartbeat(2)];
        assert_eq!(links.send(2, first.clone()), None, "queued");
        // The link holds one chunked frame: a second one before it is written is dropped
        // (and reported as a snapshot the replica must send again).
        assert_eq!(
            links.send(2, vec![snapshot_message(41, 200_000)]),
            Some(Dropped { snapshot: true })
        );
        wait_for(&received, 3).await;
        let from_one = |messages: Vec<Message>| -> Vec<(u64, Message)> {
            messages.into_iter().map(|m| (1, m)).collect()
        };
        assert_eq!(*received.borrow(), from_one(first));
        // Written: the next one goes.
        let second = vec![snapshot_message(90, 300_000), heartbeat(3)];
        assert_eq!(links.send(2, second.clone()), None);
        wait_for(&received, 5).await;
        assert_eq!(received.borrow()[3..].to_vec(), from_one(second));
    });
}

/// A connection to node 2's peer port past its challenge, and node 1's hello proven
/// over it.
async fn open_as_node_one(port: u16) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("a connection");
    let mut decoder = FrameDecoder::new(1024);
    let mut buffer = [0u8; 256];
    let frame = loop {
        if let Some(frame) = decoder.next_frame().expect("a challenge frame") {
            break frame;
        }
        let count = stream.read(&mut buffer).await.expect("a challenge");
        assert!(count > 0, "closed before its challenge");
        decoder.push(&buffer[..count]);
    };
    let challenge = decode_peer_frame(&frame)
        .expect("a peer frame")
        .challenge
        .expect("a challenge");
    let proof = test_secret().hello_proof(&challenge.nonce, 2, 1, 0);
    (stream, encode_peer_hello(&PeerHello::proven(1, 0, proof)))
}

/// Stands for node 1's proven hello in a list of frames to send.
const HELLO: Vec<u8> = Vec::new();

/// Whether the listener closed the connection after `frames` (within 5 s; `HELLO` is
/// node 1's hello proven over the connection's challenge).
async fn closed_after(port: u16, frames: &[Vec<u8>]) -> bool {
    let (mut stream, hello) = open_as_node_one(port).await;
    for frame in frames {
        let frame = if frame.is_empty() { &hello } else { frame };
        let bytes = encode_frame(frame).expect("a frame");
        if stream.write_all(&bytes).await.is_err() {
            return true;
        }
    }
    let _ = stream.flush().await;
    let mut byte = [0u8; 1];
    let read = async { matches!(stream.read(&mut byte).await, Ok(0) | Err(_)) };
    let timeout = async {
        glommio::timer::sleep(Duration::from_secs(5)).await;
        false
    };
    futures_lite::future::or(read, timeout).await
}

#[test]
fn a_broken_chunk_sequence_or_chunks_before_the_hello_close_the_connection() {
    on_executor(|| async {
        let (port, received) = listening_node();
        let hello = HELLO;
        let frame = encode_peer_frame(1, 0, &[heartbeat(7)]);
        let head = encode_peer_chunk(100, 0, &[1; 40]);
        let cases = [
            (
                "a gap",
                vec![
                    hello.clone(),
                    head.clone(),
                    encode_peer_chunk(100, 50, &[1; 50]),
                ],
            ),
            (
                "an overlap",
                vec![
                    hello.clone(),
                    head.clone(),
                    encode_peer_chunk(100, 30, &[1; 70]),
                ],
            ),
            (
                "another total",
                vec![
                    hello.clone(),
                    head.clone(),
                    encode_peer_chunk(90, 40, &[1; 50]),
                ],
            ),
            (
                "a frame inside",
                vec![hello.clone(), head.clone(), frame.clone()],
            ),
            (
                "over the bound",
                vec![hello.clone(), encode_peer_chunk(u64::MAX, 0, &[1; 40])],
            ),
            ("no hello", vec![head.clone()]),
        ];
        for (case, frames) in cases {
            assert!(
                closed_after(port, &frames).await,
                "{case}: the connection stays open"
            );
        }
        assert!(received.borrow().is_empty(), "nothing delivered");
        // A good sequence on a fresh connection is still delivered.
        let whole = encode_peer_frame(1, 0, &[heartbeat(8)]);
        let half = whole.len() / 2;
        let total = whole.len() as u64;
        let (mut stream, hello) = open_as_node_one(port).await;
        let good = vec![
            hello,
            encode_peer_chunk(total, 0, &whole[..half]),
            encode_peer_chunk(total, half as u64, &whole[half..]),
            frame,
        ];
        for frame in &good {
            stream
                .write_all(&encode_frame(frame).unwrap())
                .await
                .unwrap();
        }
        stream.flush().await.unwrap();
        wait_for(&received, 2).await;
        let commits: Vec<u64> = received.borrow().iter().map(|(_, m)| m.commit).collect();
        assert_eq!(commits, vec![8, 7]);
    });
}

/// A snapshot whose connection fails while it is written is reported lost at once
/// (`take_lost_snapshots`), so the replica tells raft-rs and the snapshot is sent again,
/// rather than waiting for the resend timeout (before, the link only reported the peer
/// unreachable, which leaves raft-rs waiting on the snapshot).
#[test]
fn a_snapshot_whose_connection_fails_while_it_is_written_is_reported_lost() {
    on_executor(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("its address").port();
        let closed = Rc::new(Cell::new(false));
        let closing = closed.clone();
        glommio::spawn_local(async move {
            // Take the link's connection: challenge it, read its hello, then close it and
            // stop listening.
            let mut stream = listener.accept().await.expect("the link connects");
            let challenge = PeerChallenge {
                node_id: 2,
                nonce: vec![1; 32],
            };
            let frame = encode_frame(&encode_peer_challenge(&challenge, 0)).expect("a frame");
            stream
                .write_all(&frame)
                .await
                .expect("the challenge is written");
            let mut hello = [0u8; 16];
            let _ = stream.read(&mut hello).await;
            drop(stream);
            drop(listener);
            closing.set(true);
        })
        .detach();
        let config = node_one_config(port);
        let to_two = (2, 0, config.peer_link_address(2, 0).unwrap());
        let links = PeerLinks::start(&config, 0, &[to_two]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !closed.get() && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert!(closed.get(), "the link connected");
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(links.send(2, vec![snapshot_message(40, 8 << 20)]), None);
        let mut lost = Vec::new();
        while lost.is_empty() && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
            lost = links.take_lost_snapshots();
        }
        assert_eq!(lost, vec![2], "the snapshot to node 2 is reported lost");
    });
}
