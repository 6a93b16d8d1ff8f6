//! A shard's client connections: accept, split the byte stream into frames, answer each
//! request in its own task (many in flight per connection, answered as they finish),
//! write the answers back in frames. Peer frames never come here (they go to the peer
//! port, `transport::peer_listener`): one on a client connection is answered
//! `InvalidRequest` and the connection closed.
//!
//! Bounds: frames up to `max_frame_bytes`; at most `MAX_IN_FLIGHT_PER_CONNECTION`
//! requests per connection being answered; at most `MAX_REQUEST_BYTES_PER_CONNECTION`
//! bytes of requests per connection from the frame read to its answer written, and
//! `MAX_REQUEST_BYTES_PER_SHARD` across the shard's connections from the frame read to
//! its answer ready (`RequestBudget`): reading pauses at each bound, so a client that
//! sends faster than it is answered (or never reads its answers) is slowed down, never
//! buffered without limit. Connections up to `MAX_CONNECTIONS_PER_SHARD` (more are closed
//! at once).
//!
//! ```text
//! read frame ─▶ admit: in-flight slot, connection bytes, shard bytes (reading waits)
//!   task: answer ─▶ frame dropped, shard bytes freed ─▶ queued for the writer
//!   writer: answer written ─▶ slot and connection bytes freed
//! ```
//!
//! With TLS (`tls_cert`, `tls_key`) every connection is TLS: the handshake comes first,
//! within `TLS_HANDSHAKE_TIMEOUT`, at most `MAX_TLS_HANDSHAKES_PER_SHARD` at once (a new
//! connection beyond evicts the oldest unfinished one, `transport::opening`: a flood of
//! handshakes costs the shard a bounded amount of work, never holds up served
//! connections, and a client that completes its handshake at once still gets in); a
//! failed one is logged (rate-limited, with rustls's reason: an expired certificate,
//! another CA) and closed.
//!
//! With `client_auth` a connection is served only once authenticated (SCRAM-SHA-256 or
//! a client certificate, `shard::client_auth`): until then the read loop looks at each
//! frame itself; a failed exchange is answered and the connection closed. It must
//! authenticate within `AUTHENTICATION_TIMEOUT` (from its start, however it trickles),
//! at most `MAX_AUTHENTICATING_PER_SHARD` at once (one beyond evicts the oldest, as TLS
//! handshakes do), its frames at most `MAX_UNAUTHENTICATED_FRAME_BYTES` until then.
//!
//! A frame longer than `max_frame_bytes` gets a `FrameTooLarge` answer (correlation id 0:
//! the request is never read) naming the limit and its size; its bytes are dropped as they
//! arrive, never buffered, and the connection goes on. A zero-length frame breaks the
//! framing: an error answer, then the connection is closed. A frame that fails
//! verification gets an error answer and the connection goes on.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Semaphore, StaticPermit};

use crate::constants::{
    AUTHENTICATION_TIMEOUT, MAX_AUTHENTICATING_PER_SHARD, MAX_REQUEST_BYTES_PER_CONNECTION,
    MAX_REQUEST_BYTES_PER_SHARD, MAX_TLS_HANDSHAKES_PER_SHARD, MAX_UNAUTHENTICATED_FRAME_BYTES,
    TLS_HANDSHAKE_TIMEOUT,
};
use crate::protocol::codec::decode_request;
use crate::protocol::frame::FrameDecoder;
use crate::protocol::peer_codec::is_peer_frame;
use crate::protocol::wire::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::stream::Stream;
use crate::shard::answer_frame::AnswerFrame;
use crate::shard::client_auth::{Admission, Caller, ConnectionAuth};
use crate::shard::hosted_groups::HostedGroups;
use crate::shard::requests::{error_response, handle_request, WireError};
use crate::transport::ingress::RefusalLogLimiter;
use crate::transport::opening::{Opening, OpeningSlot};

/// Requests of one connection being answered, or answered and waiting to be written, at
/// once.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 1024;

/// Open connections per shard.
pub const MAX_CONNECTIONS_PER_SHARD: usize = 10_000;

const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Answers ready together are written together, up to about this many bytes.
const WRITE_COALESCE_BYTES: usize = 256 * 1024;

/// Accepts connections until `stopping` is set.
pub async fn serve(groups: Rc<HostedGroups>, listener: TcpListener, stopping: Rc<Cell<bool>>) {
    let open = Rc::new(Cell::new(0usize));
    let refusal_log = Rc::new(RefusalLogs::default());
    let shard_bytes = Rc::new(ByteBound::new(MAX_REQUEST_BYTES_PER_SHARD));
    let handshaking = Opening::new(MAX_TLS_HANDSHAKES_PER_SHARD);
    let authenticating = Opening::new(MAX_AUTHENTICATING_PER_SHARD);
    while !stopping.get() {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(shard = groups.shard_id, %error, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= MAX_CONNECTIONS_PER_SHARD {
            tracing::warn!(
                shard = groups.shard_id,
                "too many connections; closing a new one"
            );
            continue;
        }
        let tls = groups
            .first()
            .config
            .tls
            .as_ref()
            .map(|tls| tls.client_port());
        let tls = tls.map(|config| {
            let (slot, evicted) = handshaking.enter();
            if evicted {
                let why = "the oldest unfinished TLS handshake closed for a new connection: \
                           too many at once";
                log_refusal(
                    &refusal_log.evictions,
                    groups.shard_id,
                    stream.peer_addr().ok(),
                    why,
                );
            }
            (config, slot)
        });
        open.set(open.get() + 1);
        let (groups, open, refusal_log) = (groups.clone(), open.clone(), refusal_log.clone());
        let authenticating = authenticating.clone();
        let budget = RequestBudget::new(shard_bytes.clone(), MAX_REQUEST_BYTES_PER_CONNECTION);
        glommio::spawn_local(async move {
            let stream = match tls {
                Some((config, slot)) => {
                    let accepted = accept_tls(
                        config,
                        stream,
                        &slot,
                        &refusal_log.refusals,
                        groups.shard_id,
                    );
                    accepted.await
                }
                None => Some(Stream::Plain(stream)),
            };
            if let Some(stream) = stream {
                let metrics = groups.metrics().clone();
                metrics.connection(true);
                let connection =
                    handle_connection(groups, stream, refusal_log, budget, authenticating);
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection closed");
                }
                metrics.connection(false);
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// The TLS side of a new connection, once its handshake ends within the timeout.
async fn accept_tls(
    config: std::sync::Arc<rustls::ServerConfig>,
    stream: TcpStream,
    slot: &OpeningSlot,
    refusal_log: &RefCell<RefusalLogLimiter>,
    shard_id: u32,
) -> Option<Stream> {
    let peer = stream.peer_addr().ok();
    let handshake = futures_rustls::TlsAcceptor::from(config).accept(stream);
    let timeout = async {
        let why = slot
            .out_of_time(TLS_HANDSHAKE_TIMEOUT, "TLS handshake")
            .await;
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
    };
    match futures_lite::future::or(handshake, timeout).await {
        Ok(tls) => Some(Stream::Server(Box::new(tls))),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            // Closed before a handshake (a port check, a client that gave up).
            tracing::debug!(shard = shard_id, ?peer, "closed before its TLS handshake");
            None
        }
        Err(error) => {
            let why = format!("client TLS handshake failed: {error}");
            log_refusal(refusal_log, shard_id, peer, &why);
            None
        }
    }
}

/// The client port's rate-limited logs: refusals (failed handshakes and exchanges, peer
/// frames), and evictions apart, so that a flood of failures never hides that the shard
/// is evicting connections.
#[derive(Default)]
struct RefusalLogs {
    refusals: RefCell<RefusalLogLimiter>,
    evictions: RefCell<RefusalLogLimiter>,
}

/// Logs what was refused on the client port (at most `PEER_REFUSAL_LOGS_PER_WINDOW`
/// lines per window: a flood of bad connections is not a flood of log lines).
fn log_refusal(
    refusal_log: &RefCell<RefusalLogLimiter>,
    shard_id: u32,
    peer: Option<std::net::SocketAddr>,
    what: &str,
) {
    if let Some(suppressed) = refusal_log.borrow_mut().should_log(Instant::now()) {
        tracing::warn!(
            shard = shard_id,
            ?peer,
            suppressed_since_last = suppressed,
            "{what}"
        );
    }
}

/// A semaphore counting bytes, of a fixed capacity.
pub struct ByteBound {
    semaphore: Rc<Semaphore>,
    capacity_bytes: u64,
}

impl ByteBound {
    /// A bound of `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> ByteBound {
        assert!(capacity_bytes > 0);
        ByteBound {
            semaphore: Rc::new(Semaphore::new(capacity_bytes)),
            capacity_bytes,
        }
    }

    /// Waits until `bytes` are free and holds them until the permit is dropped. More than
    /// the whole capacity counts as the whole capacity (a frame larger than the bound
    /// waits until nothing else is held, never forever). Fails once the bound is closed.
    async fn hold(&self, bytes: u64) -> std::io::Result<StaticPermit> {
        self.semaphore
            .acquire_static_permit(bytes.clamp(1, self.capacity_bytes))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    /// Bytes not held now.
    pub fn available_bytes(&self) -> u64 {
        self.semaphore.available()
    }

    /// Wakes every waiter with an error and refuses new ones (the connection ended).
    fn close(&self) {
        self.semaphore.close();
    }
}

/// What the requests of one connection may hold: its own bytes and a share of the
/// shard's. Both are taken before a frame is handed to its task, so reading pauses at
/// either bound.
pub struct RequestBudget {
    connection: ByteBound,
    shard: Rc<ByteBound>,
}

/// The bytes one request holds: the connection's part is freed once its answer is
/// written, the shard's once its answer is ready.
pub struct HeldRequest {
    /// Freed with the answer written.
    pub connection: StaticPermit,
    /// Freed with the answer ready (the request's frame dropped).
    pub shard: StaticPermit,
}

impl RequestBudget {
    /// A connection's budget of `connection_bytes` within the shard's `shard` bound.
    pub fn new(shard: Rc<ByteBound>, connection_bytes: u64) -> RequestBudget {
        RequestBudget {
            connection: ByteBound::new(connection_bytes),
            shard,
        }
    }

    /// Waits until a request of `bytes` fits within both bounds (the connection's first:
    /// a connection waiting for its own answers to be read holds none of the shard's).
    pub async fn admit(&self, bytes: u64) -> std::io::Result<HeldRequest> {
        let connection = self.connection.hold(bytes).await?;
        let shard = self.shard.hold(bytes).await?;
        Ok(HeldRequest { connection, shard })
    }

    /// Bytes the connection may still take.
    pub fn connection_available_bytes(&self) -> u64 {
        self.connection.available_bytes()
    }
}

/// An answer on its way to the writer with what its request holds until it is written.
struct QueuedAnswer {
    answer: AnswerFrame,
    /// Its in-flight slot, freed once it is written.
    slot: StaticPermit,
    /// Its request's connection bytes (none for the read loop's own error answers),
    /// freed once it is written.
    connection_bytes: Option<StaticPermit>,
}

async fn handle_connection(
    groups: Rc<HostedGroups>,
    stream: Stream,
    refusal_log: Rc<RefusalLogs>,
    budget: RequestBudget,
    authenticating: Rc<Opening>,
) -> std::io::Result<()> {
    stream.tcp().set_nodelay(true)?;
    let peer = stream.tcp().peer_addr().ok();
    let client_auth = groups.config().client_auth;
    let mut auth = ConnectionAuth::new(client_auth, stream.peer_certificate());
    // Until it authenticates, the connection holds a place among those authenticating.
    let mut auth_slot = (!auth.is_authenticated()).then(|| {
        let (slot, evicted) = authenticating.enter();
        if evicted {
            let why = "the oldest unauthenticated connection closed for a new one: too many \
                       at once";
            log_refusal(&refusal_log.evictions, groups.shard_id, peer, why);
        }
        AuthSlot {
            slot,
            deadline: Instant::now() + AUTHENTICATION_TIMEOUT,
        }
    });
    let (mut reader, writer) = futures_lite::io::split(stream);
    // Every queued answer holds an in-flight slot (the read loop's error answers too), so
    // the queue never fills and a task never waits to hand its answer over.
    let (answers, to_write) =
        local_channel::new_bounded::<QueuedAnswer>(MAX_IN_FLIGHT_PER_CONNECTION);
    let answers = Rc::new(answers);
    // Answers queued for the writer: it flushes the socket only when none is left, so
    // answers finishing together leave in one write.
    let queued = Rc::new(Cell::new(0usize));
    let in_flight = Rc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION as u64));
    let budget = Rc::new(budget);
    let writer_task = {
        let (queued, in_flight, budget) = (queued.clone(), in_flight.clone(), budget.clone());
        glommio::spawn_local(async move {
            let written = write_answers(writer, to_write, &queued).await;
            // The client is gone or the connection ends: a read loop waiting for room
            // would wait forever (queued answers are never written).
            in_flight.close();
            budget.connection.close();
            written
        })
    };
    let max_frame_bytes = groups.first().config.max_frame_bytes;
    let mut decoder = FrameDecoder::new(max_frame_bytes);
    if auth_slot.is_some() {
        decoder.set_max_frame_bytes(MAX_UNAUTHENTICATED_FRAME_BYTES.min(max_frame_bytes));
    }
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    'reading: loop {
        if auth_slot.is_some() && auth.is_authenticated() {
            auth_slot = None;
            decoder.set_max_frame_bytes(max_frame_bytes);
        }
        let count = match read_within(&mut reader, &mut buffer, auth_slot.as_ref()).await {
            Ok(count) => count,
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                log_refusal(
                    &refusal_log.refusals,
                    groups.shard_id,
                    peer,
                    &error.to_string(),
                );
                break 'reading;
            }
            Err(error) => return Err(error),
        };
        if count == 0 {
            break;
        }
        decoder.push(&buffer[..count]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    // An oversized frame is skipped by the decoder (its bytes dropped as
                    // they arrive): answer and go on. Anything else breaks the framing:
                    // answer, then close.
                    let wire = WireError {
                        code: error.code(),
                        message: error.to_string(),
                        leader_address: None,
                    };
                    groups.metrics().rejected(wire.code);
                    queue_own_answer(&answers, &queued, &in_flight, error_response(0, &wire))
                        .await?;
                    if matches!(error, ProtocolError::FrameTooLarge { .. }) {
                        continue;
                    }
                    break 'reading;
                }
            };
            if is_peer_frame(&frame) {
                let answer = refuse_peer_frame(groups.shard_id, peer, &refusal_log.refusals);
                groups.metrics().rejected(ErrorCode::InvalidRequest);
                queue_own_answer(&answers, &queued, &in_flight, answer).await?;
                break 'reading;
            }
            let caller = match auth.served() {
                Some(caller) => caller,
                None => match auth.admit(&groups, &frame) {
                    Admission::Serve(caller) => caller,
                    Admission::Answer(answer) => {
                        queue_own_answer(&answers, &queued, &in_flight, answer).await?;
                        glommio::yield_if_needed().await;
                        continue;
                    }
                    Admission::Later(answer) => {
                        // Not heard the controller's users yet: the client tries again.
                        groups.metrics().rejected(ErrorCode::RequestTimedOut);
                        queue_own_answer(&answers, &queued, &in_flight, answer).await?;
                        break 'reading;
                    }
                    Admission::Close(answer, why) => {
                        // A failed authentication (or a refused hello): one guess each.
                        groups.metrics().rejected(ErrorCode::AuthenticationFailed);
                        log_refusal(&refusal_log.refusals, groups.shard_id, peer, &why);
                        queue_own_answer(&answers, &queued, &in_flight, answer).await?;
                        break 'reading;
                    }
                },
            };
            let slot = acquire_slot(&in_flight).await?;
            let held = budget.admit(frame.len() as u64).await?;
            spawn_answer(&groups, (frame, caller), slot, held, &answers, &queued);
            // A socket that always has the next frame ready never makes this loop wait:
            // it gives way when the executor asks (a tick or peer message is due).
            glommio::yield_if_needed().await;
        }
    }
    // Let the answers of requests still running go out, then close: the writer ends once
    // every task has handed its answer over (the last sender is gone).
    drop(answers);
    writer_task.await
}

/// A connection's place among those authenticating, and when its time is up.
struct AuthSlot {
    slot: OpeningSlot,
    deadline: Instant,
}

/// Reads what comes; for a connection still authenticating, within its deadline (an
/// error of kind `TimedOut` saying why once it is out of time or evicted).
async fn read_within(
    reader: &mut futures_lite::io::ReadHalf<Stream>,
    buffer: &mut [u8],
    authenticating: Option<&AuthSlot>,
) -> std::io::Result<usize> {
    let Some(auth) = authenticating else {
        return reader.read(buffer).await;
    };
    let left = auth.deadline.saturating_duration_since(Instant::now());
    let out_of_time = async {
        let why = auth.slot.out_of_time(left, "authentication").await;
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
    };
    futures_lite::future::or(reader.read(buffer), out_of_time).await
}

/// Answers a request in its own task: once the answer is ready the frame and the shard's
/// bytes are freed, and the answer goes to the writer with the rest of what it holds.
fn spawn_answer(
    groups: &Rc<HostedGroups>,
    (frame, caller): (Vec<u8>, Caller),
    slot: StaticPermit,
    held: HeldRequest,
    answers: &Rc<local_channel::LocalSender<QueuedAnswer>>,
    queued: &Rc<Cell<usize>>,
) {
    let (groups, answers, queued) = (groups.clone(), answers.clone(), queued.clone());
    glommio::spawn_local(async move {
        groups.metrics().request_in_flight(true);
        let answer = answer_client_frame(&groups, &frame, &caller).await;
        groups.metrics().request_in_flight(false);
        drop(frame);
        drop(held.shard);
        queued.set(queued.get() + 1);
        let queued_answer = QueuedAnswer {
            answer,
            slot,
            connection_bytes: Some(held.connection),
        };
        // Fails only once the writer is gone; the answer and what it holds are dropped.
        let _ = answers.send(queued_answer).await;
    })
    .detach();
}

async fn acquire_slot(in_flight: &Rc<Semaphore>) -> std::io::Result<StaticPermit> {
    in_flight
        .acquire_static_permit(1)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
}

/// Queues an answer of the read loop itself (to a frame that never became a request).
async fn queue_own_answer(
    answers: &local_channel::LocalSender<QueuedAnswer>,
    queued: &Cell<usize>,
    in_flight: &Rc<Semaphore>,
    answer: AnswerFrame,
) -> std::io::Result<()> {
    let slot = acquire_slot(in_flight).await?;
    queued.set(queued.get() + 1);
    let answer = QueuedAnswer {
        answer,
        slot,
        connection_bytes: None,
    };
    answers
        .send(answer)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
}

/// Writes answers as they come; what an answer's request held is freed once it is out.
async fn write_answers(
    mut writer: futures_lite::io::WriteHalf<Stream>,
    to_write: local_channel::LocalReceiver<QueuedAnswer>,
    queued: &Cell<usize>,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    // What the answers in `out` hold, freed once `out` is written.
    let mut held_by_out = Vec::new();
    while let Some(queued_answer) = to_write.recv().await {
        queued.set(queued.get().saturating_sub(1));
        let QueuedAnswer {
            answer,
            slot,
            connection_bytes,
        } = queued_answer;
        let frame = answer.frame();
        if frame.len() >= WRITE_COALESCE_BYTES {
            // A large answer goes out from where it was built, after what is ahead of it.
            if !out.is_empty() {
                writer.write_all(&out).await?;
                out.clear();
            }
            writer.write_all(frame).await?;
        } else {
            out.extend_from_slice(frame);
        }
        held_by_out.push((slot, connection_bytes));
        if queued.get() == 0 || out.len() >= WRITE_COALESCE_BYTES {
            writer.write_all(&out).await?;
            writer.flush().await?;
            out.clear();
            held_by_out.clear();
            glommio::yield_if_needed().await;
        }
    }
    writer.close().await
}

/// The answer to a peer frame on a client connection (which is then closed). Peers talk
/// to the peer port, where the sender is checked; a peer frame here comes from a
/// misconfigured node or from someone posing as one.
fn refuse_peer_frame(
    shard_id: u32,
    peer: Option<std::net::SocketAddr>,
    refusal_log: &RefCell<RefusalLogLimiter>,
) -> AnswerFrame {
    log_refusal(
        refusal_log,
        shard_id,
        peer,
        "a peer frame on the client port refused",
    );
    let wire = WireError {
        code: ErrorCode::InvalidRequest,
        message: "peer frames go to the peer port".to_string(),
        leader_address: None,
    };
    error_response(0, &wire)
}

async fn answer_client_frame(groups: &HostedGroups, frame: &[u8], caller: &Caller) -> AnswerFrame {
    match decode_request(frame) {
        Ok(request) => handle_request(groups, request, caller).await,
        Err(error) => {
            groups.metrics().rejected(error.code());
            let correlation_id = correlation_id_of(frame, &error);
            let wire = WireError {
                code: error.code(),
                message: error.to_string(),
                leader_address: None,
            };
            error_response(correlation_id, &wire)
        }
    }
}

/// The correlation id of a request that failed verification, if its root table can still
/// be read safely (the version check failed, say); 0 otherwise.
fn correlation_id_of(frame: &[u8], error: &ProtocolError) -> u64 {
    match error {
        ProtocolError::UnsupportedVersion(_) | ProtocolError::Missing(_) => {
            crate::protocol::wire::root_as_request(frame).map_or(0, |r| r.correlation_id())
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::poll_once;

    fn run<F: std::future::Future<Output = ()> + 'static>(
        test: impl FnOnce() -> F + Send + 'static,
    ) {
        crate::runtime::run_on_executor("server-test", 512 * 1024, test).expect("executor ran");
    }

    /// Issue 11, item 13: a connection's requests hold at most its bound; the next one
    /// waits (reading pauses) until an answer is written and frees its bytes. A frame
    /// above the whole bound counts as the whole bound, so it waits, never forever.
    #[test]
    fn a_connection_waits_at_its_byte_bound_until_an_answer_is_written() {
        run(|| async {
            let shard = Rc::new(ByteBound::new(1000));
            let budget = RequestBudget::new(shard.clone(), 100);
            let first = budget.admit(60).await.unwrap();
            let second = budget.admit(40).await.unwrap();
            assert_eq!(budget.connection_available_bytes(), 0);
            // The answer to the first is ready (the shard's bytes are freed), not written.
            drop(first.shard);
            assert_eq!(shard.available_bytes(), 960);
            let mut third = Box::pin(budget.admit(10));
            assert!(poll_once(&mut third).await.is_none(), "reading pauses");
            // Written: its connection bytes are freed and the third request goes in.
            drop(first.connection);
            let third = third.await.unwrap();
            drop((second, third));
            let mut huge = Box::pin(budget.admit(5000));
            let whole = huge.as_mut().await.unwrap();
            assert_eq!(budget.connection_available_bytes(), 0);
            drop(whole);
            assert_eq!(budget.connection_available_bytes(), 100);
        });
    }

    /// Issue 11, item 13: the shard's bound holds across connections: each within its own
    /// bound, together they wait once the shard's is reached, until an answer is ready.
    #[test]
    fn connections_together_wait_at_the_shard_bound() {
        run(|| async {
            let shard = Rc::new(ByteBound::new(150));
            let one = RequestBudget::new(shard.clone(), 100);
            let two = RequestBudget::new(shard.clone(), 100);
            let held_one = one.admit(100).await.unwrap();
            let held_two = two.admit(50).await.unwrap();
            let mut more = Box::pin(two.admit(10));
            assert!(poll_once(&mut more).await.is_none(), "the shard is full");
            assert_eq!(two.connection_available_bytes(), 40, "not the connection");
            drop(held_one.shard);
            let more = more.await.unwrap();
            assert_eq!(shard.available_bytes(), 90);
            drop((held_one.connection, held_two, more));
            assert_eq!(shard.available_bytes(), 150);
        });
    }

    /// A closed budget (its connection's writer ended) wakes a waiting read loop with an
    /// error instead of leaving it waiting for answers that will never be written.
    #[test]
    fn a_closed_connection_bound_wakes_the_waiting_reader() {
        run(|| async {
            let shard = Rc::new(ByteBound::new(1000));
            let budget = RequestBudget::new(shard, 100);
            let held = budget.admit(100).await.unwrap();
            let mut waiting = Box::pin(budget.admit(1));
            assert!(poll_once(&mut waiting).await.is_none());
            budget.connection.close();
            assert!(waiting.await.is_err());
            drop(held);
        });
    }
}
