//! A shard's client connections: accept, split the byte stream into frames, answer each
//! request in its own task (many in flight per connection, answered as they finish),
//! write the answers back in frames. Peer frames never come here (they go to the peer
//! port, `transport::peer_listener`): one on a client connection is answered
//! `InvalidRequest` and the connection closed.
//!
//! Bounds: frames up to `max_frame_bytes`; at most `MAX_IN_FLIGHT_PER_CONNECTION`
//! requests per connection being answered (reading pauses beyond); connections up to
//! `MAX_CONNECTIONS_PER_SHARD` (more are closed at once). A frame longer than
//! `max_frame_bytes` gets a `FrameTooLarge` answer (correlation id 0: the request is never
//! read) naming the limit and its size; its bytes are dropped as they arrive, never
//! buffered, and the connection goes on. A zero-length frame breaks the framing: an error
//! answer, then the connection is closed. A frame that fails verification gets an error
//! answer and the connection goes on.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;

use crate::protocol::codec::decode_request;
use crate::protocol::frame::{append_frame, FrameDecoder};
use crate::protocol::peer_codec::is_peer_frame;
use crate::protocol::wire::ErrorCode;
use crate::protocol::ProtocolError;
use crate::shard::group_driver::ShardCore;
use crate::shard::requests::{error_response, handle_request, WireError};
use crate::transport::ingress::RefusalLogLimiter;

/// Requests of one connection being answered at once.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 1024;

/// Open connections per shard.
pub const MAX_CONNECTIONS_PER_SHARD: usize = 10_000;

const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Answers ready together are written together, up to about this many bytes.
const WRITE_COALESCE_BYTES: usize = 256 * 1024;

/// Accepts connections until `stopping` is set.
pub async fn serve(core: Rc<ShardCore>, listener: TcpListener, stopping: Rc<Cell<bool>>) {
    let open = Rc::new(Cell::new(0usize));
    let refusal_log = Rc::new(RefCell::new(RefusalLogLimiter::default()));
    while !stopping.get() {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(shard = core.shard_id, %error, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= MAX_CONNECTIONS_PER_SHARD {
            tracing::warn!(
                shard = core.shard_id,
                "too many connections; closing a new one"
            );
            continue;
        }
        open.set(open.get() + 1);
        let (core, open, refusal_log) = (core.clone(), open.clone(), refusal_log.clone());
        glommio::spawn_local(async move {
            if let Err(error) = handle_connection(core, stream, refusal_log).await {
                tracing::debug!(%error, "connection closed");
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

async fn handle_connection(
    core: Rc<ShardCore>,
    stream: TcpStream,
    refusal_log: Rc<RefCell<RefusalLogLimiter>>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().ok();
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (answers, to_write) = local_channel::new_bounded::<Vec<u8>>(MAX_IN_FLIGHT_PER_CONNECTION);
    let answers = Rc::new(answers);
    // Answers queued for the writer: it flushes the socket only when none is left, so
    // answers finishing together leave in one write.
    let queued = Rc::new(Cell::new(0usize));
    let writer_queued = queued.clone();
    let writer_task = glommio::spawn_local(async move {
        let mut out = Vec::new();
        while let Some(payload) = to_write.recv().await {
            writer_queued.set(writer_queued.get().saturating_sub(1));
            if append_frame(&mut out, &payload).is_err() {
                continue;
            }
            if writer_queued.get() == 0 || out.len() >= WRITE_COALESCE_BYTES {
                writer.write_all(&out).await?;
                writer.flush().await?;
                out.clear();
            }
        }
        writer.close().await
    });
    let in_flight = Rc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION as u64));
    let mut decoder = FrameDecoder::new(core.config.max_frame_bytes);
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    'reading: loop {
        let count = reader.read(&mut buffer).await?;
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
                    queued.set(queued.get() + 1);
                    let _ = answers.send(error_response(0, &wire)).await;
                    if matches!(error, ProtocolError::FrameTooLarge { .. }) {
                        continue;
                    }
                    break 'reading;
                }
            };
            if is_peer_frame(&frame) {
                queued.set(queued.get() + 1);
                let answer = refuse_peer_frame(&core, peer, &refusal_log);
                let _ = answers.send(answer).await;
                break 'reading;
            }
            let permit = in_flight
                .clone()
                .acquire_static_permit(1)
                .await
                .map_err(|_| std::io::ErrorKind::BrokenPipe)?;
            let (core, answers, queued) = (core.clone(), answers.clone(), queued.clone());
            glommio::spawn_local(async move {
                let answer = answer_client_frame(&core, &frame).await;
                queued.set(queued.get() + 1);
                let _ = answers.send(answer).await;
                drop(permit);
            })
            .detach();
        }
    }
    // Let the answers of requests still running go out, then close.
    let _ = in_flight.acquire(MAX_IN_FLIGHT_PER_CONNECTION as u64).await;
    drop(answers);
    writer_task.await
}

/// The answer to a peer frame on a client connection (which is then closed). Peers talk
/// to the peer port, where the sender is checked; a peer frame here comes from a
/// misconfigured node or from someone posing as one.
fn refuse_peer_frame(
    core: &ShardCore,
    peer: Option<std::net::SocketAddr>,
    refusal_log: &RefCell<RefusalLogLimiter>,
) -> Vec<u8> {
    if let Some(suppressed) = refusal_log.borrow_mut().should_log(Instant::now()) {
        tracing::warn!(
            shard = core.shard_id,
            ?peer,
            suppressed_since_last = suppressed,
            "a peer frame on the client port refused"
        );
    }
    let wire = WireError {
        code: ErrorCode::InvalidRequest,
        message: "peer frames go to the peer port".to_string(),
        leader_address: None,
    };
    error_response(0, &wire)
}

async fn answer_client_frame(core: &Rc<ShardCore>, frame: &[u8]) -> Vec<u8> {
    match decode_request(frame) {
        Ok(request) => handle_request(core, request).await,
        Err(error) => {
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
