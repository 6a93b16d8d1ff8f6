//! A shard's peer port: connections from the same shard of the other nodes, carrying
//! their Raft messages for this shard's replica group.
//!
//! ```text
//! accept ─▶ write the challenge (a fresh nonce) ─▶ first frame within
//!          PEER_HELLO_TIMEOUT ─▶ ingress::admit_hello (the secret's proof first)
//!             refused (or no hello in time) ─▶ log, close
//!             admitted ─▶ each frame ─▶ chunks::ChunkAssembler ─▶ ingress::admit ─▶ deliver
//!                           chunk: held until its frame is whole     refusals ─▶ log
//!                           bad chunk sequence ─▶ log, close         (rate-limited)
//! ```
//!
//! Frames are read and delivered one after the other, in order (Raft needs a peer's
//! messages in the order they were sent). After the hello, a frame too large for the
//! frame limit (a snapshot of a large state) comes as consecutive chunks; the connection
//! joins them (`chunks`) and decodes and checks the whole frame like any other. Chunks are
//! only taken from an admitted connection: before its hello a connection can make the
//! shard hold no more than one frame, of at most `MAX_PEER_HELLO_FRAME_BYTES`. Bounds:
//! `MAX_PEER_CONNECTIONS_AWAITING_HELLO` connections without a hello yet (each closed
//! after `PEER_HELLO_TIMEOUT`, the TLS handshake included; a new one beyond evicts the
//! oldest, `transport::opening`),
//! `MAX_PEER_CONNECTIONS_PER_SHARD` admitted ones; more are closed at once; one chunked
//! frame being joined per connection, of at most `MAX_CHUNKED_PEER_FRAME_BYTES`, and
//! `MAX_JOINING_PEER_BYTES_PER_SHARD` across them (`chunks::JoiningBudget`: a chunk that
//! would pass it closes its connection). A frame
//! above `max_frame_bytes` is skipped (the sender's splitting and chunking should make
//! that impossible) and a malformed one dropped; an empty one, or a chunk sequence with a
//! gap, an overlap, a wrong total or a frame inside it, closes the connection. Never
//! panics on input: everything from the network is checked by the codec, by `chunks` and
//! by `ingress`.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use raft::eraftpb::Message;

use crate::constants::{
    MAX_CHUNKED_PEER_FRAME_BYTES, MAX_JOINING_PEER_BYTES_PER_SHARD,
    MAX_PEER_CONNECTIONS_AWAITING_HELLO, MAX_PEER_CONNECTIONS_PER_SHARD,
    MAX_PEER_HELLO_FRAME_BYTES, PEER_HELLO_TIMEOUT,
};
use crate::protocol::frame::{append_frame, FrameDecoder};
use crate::protocol::peer_codec::{decode_peer_frame, encode_peer_challenge, PeerChallenge};
use crate::protocol::ProtocolError;
use crate::security::stream::Stream;
use crate::security::tls::NodeTls;
use crate::security::{peer_secret::random_bytes, PeerSecret, NONCE_BYTES};
use crate::transport::chunks::{ChunkAssembler, JoiningBudget};
use crate::transport::ingress::{admit, admit_hello, HelloCheck, RefusalLogLimiter};
use crate::transport::opening::{Opening, OpeningSlot};

const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Hands admitted messages to a replica group: (group, sending node, messages in order).
pub type Deliver = Rc<dyn Fn(u32, u64, Vec<Message>)>;

/// Called with (group, peer's node id) when its admitted connection ends (closed,
/// reset, or refused for a fault of its own).
pub type Lost = Rc<dyn Fn(u32, u64)>;

/// Who may send what to this listener.
#[derive(Clone, Debug)]
pub struct PeerIngress {
    /// This node's id.
    pub this_node: u64,
    /// The replica groups the listener's shard runs (more as groups are placed on it):
    /// a connection belongs to one of them, named by its hello.
    pub groups: Rc<RefCell<Vec<u32>>>,
    /// Every node of the cluster (`--peers` and those that joined since), this one
    /// included.
    pub nodes: Rc<RefCell<Vec<u64>>>,
    /// Largest frame accepted.
    pub max_frame_bytes: u32,
    /// The cluster's shared secret: a hello must prove it (without one, none is admitted
    /// but over mutual TLS).
    pub secret: Option<PeerSecret>,
    /// With a CA: every connection is mutual TLS, its certificate naming the hello's node.
    pub tls: Option<Arc<NodeTls>>,
}

struct Listener {
    ingress: PeerIngress,
    deliver: Deliver,
    lost: Lost,
    awaiting_hello: Rc<Opening>,
    admitted: Cell<usize>,
    /// Chunked frames being joined, across this shard's connections.
    joining: JoiningBudget,
    refusal_log: RefCell<RefusalLogLimiter>,
}

impl Listener {
    fn log_refusal(&self, peer: Option<SocketAddr>, what: &str, reason: &dyn std::fmt::Display) {
        let Some(suppressed) = self.refusal_log.borrow_mut().should_log(Instant::now()) else {
            return;
        };
        tracing::warn!(
            groups = ?self.ingress.groups,
            peer = ?peer,
            suppressed_since_last = suppressed,
            "peer port: {what}: {reason}"
        );
    }
}

/// Accepts peer connections until `stopping` is set.
pub async fn serve_peers(
    listener: TcpListener,
    ingress: PeerIngress,
    (deliver, lost): (Deliver, Lost),
    stopping: Rc<Cell<bool>>,
) {
    let state = Rc::new(Listener {
        ingress,
        deliver,
        lost,
        awaiting_hello: Opening::new(MAX_PEER_CONNECTIONS_AWAITING_HELLO),
        admitted: Cell::new(0),
        joining: JoiningBudget::new(MAX_JOINING_PEER_BYTES_PER_SHARD),
        refusal_log: RefCell::new(RefusalLogLimiter::default()),
    });
    while !stopping.get() {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(groups = ?state.ingress.groups, %error, "peer accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (slot, evicted) = state.awaiting_hello.enter();
        if evicted {
            state.log_refusal(
                stream.peer_addr().ok(),
                "oldest connection without a hello closed",
                &"too many connections without a hello",
            );
        }
        let state = state.clone();
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().ok();
            if let Err(error) = handle_peer_connection(&state, stream, peer, slot).await {
                tracing::debug!(?peer, %error, "peer connection closed");
            }
        })
        .detach();
    }
}

/// What ended the reading of a frame.
enum ReadEnd {
    /// The connection is closed (or broken).
    Closed,
    /// Refused while opening (why).
    Refused(String),
}

/// A connection past its opening: the stream, the first frame, the challenge's nonce,
/// and the reading state to go on with.
struct Opened {
    stream: Stream,
    first: Vec<u8>,
    nonce: [u8; NONCE_BYTES],
    decoder: FrameDecoder,
    buffer: Vec<u8>,
}

/// The connection as this listener speaks it: mutual TLS with a CA, plain otherwise.
async fn open_stream(state: &Listener, tcp: TcpStream) -> Result<Stream, ReadEnd> {
    let Some(config) = state
        .ingress
        .tls
        .as_ref()
        .and_then(|tls| tls.peer_acceptor())
    else {
        return Ok(Stream::Plain(tcp));
    };
    match futures_rustls::TlsAcceptor::from(config).accept(tcp).await {
        Ok(tls) => Ok(Stream::Server(Box::new(tls))),
        Err(error) => Err(ReadEnd::Refused(format!("TLS handshake failed: {error}"))),
    }
}

/// Opens the connection: the TLS handshake (with a CA), the challenge, the first frame.
async fn open(state: &Listener, tcp: TcpStream) -> Result<Opened, ReadEnd> {
    let mut stream = open_stream(state, tcp).await?;
    let nonce =
        random_bytes::<NONCE_BYTES>().map_err(|error| ReadEnd::Refused(error.to_string()))?;
    // Until the hello is checked, a connection may not make the shard hold a large frame.
    let mut decoder = FrameDecoder::new(MAX_PEER_HELLO_FRAME_BYTES);
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    send_challenge(state, &mut stream, &nonce).await?;
    let first = loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(error) => return Err(ReadEnd::Refused(format!("first frame: {error}"))),
        }
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return Err(ReadEnd::Closed),
            Ok(count) => decoder.push(&buffer[..count]),
        }
    };
    decoder.set_max_frame_bytes(state.ingress.max_frame_bytes);
    Ok(Opened {
        stream,
        first,
        nonce,
        decoder,
        buffer,
    })
}

async fn handle_peer_connection(
    state: &Rc<Listener>,
    tcp: TcpStream,
    peer: Option<SocketAddr>,
    slot: OpeningSlot,
) -> std::io::Result<()> {
    let deadline = async {
        Err(ReadEnd::Refused(
            slot.out_of_time(PEER_HELLO_TIMEOUT, "hello").await,
        ))
    };
    let opened = futures_lite::future::or(open(state, tcp), deadline).await;
    drop(slot);
    let Opened {
        stream,
        first,
        nonce,
        decoder,
        buffer,
    } = match opened {
        Ok(opened) => opened,
        Err(ReadEnd::Refused(reason)) => {
            state.log_refusal(peer, "connection closed", &reason);
            return Ok(());
        }
        Err(ReadEnd::Closed) => return Ok(()),
    };
    let ingress = &state.ingress;
    let hello = decode_peer_frame(&first)
        .map_err(|e| e.to_string())
        .and_then(|frame| {
            let check = HelloCheck {
                this_node: ingress.this_node,
                groups: &ingress.groups.borrow(),
                voters: &ingress.nodes.borrow(),
                secret: ingress.secret.as_ref(),
                nonce: &nonce,
                certificate: stream.peer_certificate(),
            };
            admit_hello(&frame, &check).map_err(|e| e.to_string())
        });
    let (node, group) = match hello {
        Ok(admitted) => admitted,
        Err(reason) => {
            state.log_refusal(peer, "connection refused", &reason);
            return Ok(());
        }
    };
    if state.admitted.get() >= MAX_PEER_CONNECTIONS_PER_SHARD {
        state.log_refusal(peer, "connection closed", &"too many peer connections");
        return Ok(());
    }
    state.admitted.set(state.admitted.get() + 1);
    tracing::debug!(group, node, ?peer, "peer connection admitted");
    let result = serve_admitted(state, (node, group), stream, decoder, buffer, peer).await;
    state.admitted.set(state.admitted.get() - 1);
    (state.lost)(group, node);
    result
}

async fn serve_admitted(
    state: &Rc<Listener>,
    (node, group): (u64, u32),
    mut stream: Stream,
    mut decoder: FrameDecoder,
    mut buffer: Vec<u8>,
    peer: Option<SocketAddr>,
) -> std::io::Result<()> {
    let ingress = &state.ingress;
    let mut chunks = ChunkAssembler::new(MAX_CHUNKED_PEER_FRAME_BYTES);
    // Bytes of this connection's partial frame counted in the shard's joining budget.
    let mut joining = 0;
    while let Ok(read) = next_frame(state, &mut stream, &mut decoder, &mut buffer, peer).await {
        let accepted = chunks.accept(read);
        let now_joining = chunks.received_bytes();
        if let Err(over) = state.joining.update(joining, now_joining) {
            state.log_refusal(peer, "connection closed", &over);
            break;
        }
        joining = now_joining;
        let bytes = match accepted {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(error) => {
                state.log_refusal(peer, "connection closed", &error);
                break;
            }
        };
        let frame = match decode_peer_frame(&bytes) {
            Ok(frame) => frame,
            Err(error) => {
                state.log_refusal(peer, "frame dropped", &error);
                continue;
            }
        };
        let (messages, refusals) = admit(
            node,
            ingress.this_node,
            group,
            &ingress.nodes.borrow(),
            frame,
        );
        for refusal in &refusals {
            state.log_refusal(peer, "dropped", refusal);
        }
        if !messages.is_empty() {
            (state.deliver)(group, node, messages);
        }
        // A leader's appends can keep the socket full: give way between frames when the
        // executor asks (a tick is due).
        glommio::yield_if_needed().await;
    }
    let _ = state.joining.update(joining, 0);
    Ok(())
}

/// Writes this node's challenge, the one frame it sends on a peer connection.
async fn send_challenge(
    state: &Listener,
    stream: &mut Stream,
    nonce: &[u8],
) -> Result<(), ReadEnd> {
    let challenge = PeerChallenge {
        node_id: u32::try_from(state.ingress.this_node).unwrap_or(u32::MAX),
        nonce: nonce.to_vec(),
    };
    // The group is the hello's to name; the challenge's frame says none in particular.
    let mut frame = Vec::new();
    append_frame(&mut frame, &encode_peer_challenge(&challenge, 0)).map_err(|_| ReadEnd::Closed)?;
    stream
        .write_all(&frame)
        .await
        .map_err(|_| ReadEnd::Closed)?;
    stream.flush().await.map_err(|_| ReadEnd::Closed)
}

/// The next frame of the connection; an oversized one is logged and skipped.
async fn next_frame(
    state: &Listener,
    stream: &mut Stream,
    decoder: &mut FrameDecoder,
    buffer: &mut [u8],
    peer: Option<SocketAddr>,
) -> Result<Vec<u8>, ReadEnd> {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(error @ ProtocolError::FrameTooLarge { .. }) => {
                state.log_refusal(peer, "frame skipped", &error);
                continue;
            }
            Err(error) => {
                state.log_refusal(peer, "connection closed", &error);
                return Err(ReadEnd::Closed);
            }
        }
        match stream.read(buffer).await {
            Ok(0) | Err(_) => return Err(ReadEnd::Closed),
            Ok(count) => decoder.push(&buffer[..count]),
        }
    }
}
