//! The node's metrics endpoint: `GET /metrics` answers the Prometheus text format
//! (version 0.0.4) of the node's families, from `METRICS_HTTP_THREADS` threads of its own.
//!
//! Owns the listening socket and its threads. Never runs on a shard's executor and never
//! touches a shard: a scrape reads the families' atomics and nothing else. Each thread
//! serves one connection at a time, with `METRICS_HTTP_TIMEOUT` to send its request and
//! take its answer, and reads at most `METRICS_MAX_REQUEST_BYTES`: a slow or hostile
//! client costs one thread that long, never memory or more threads.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::prometheus_text;

use crate::constants::{
    METRICS_DRAIN_READS, METRICS_DRAIN_TIME, METRICS_HTTP_THREADS, METRICS_HTTP_TIMEOUT,
    METRICS_MAX_HEADERS, METRICS_MAX_REQUEST_BYTES,
};
use crate::metrics::families::NodeMetrics;

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("metrics endpoint on {address}: {source}")]
pub struct EndpointError {
    address: String,
    source: std::io::Error,
}

/// Listens on `address` (host:port) and serves `metrics` until the process ends;
/// returns the address bound (port 0 picks one).
pub fn serve(
    address: &str,
    metrics: Arc<NodeMetrics>,
) -> Result<std::net::SocketAddr, EndpointError> {
    let failed = |source| EndpointError {
        address: address.to_string(),
        source,
    };
    let listener = TcpListener::bind(address).map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    for n in 0..METRICS_HTTP_THREADS {
        let listener = listener.try_clone().map_err(failed)?;
        let metrics = metrics.clone();
        std::thread::Builder::new()
            .name(format!("keel-metrics-{n}"))
            .spawn(move || accept_loop(&listener, &metrics))
            .map_err(failed)?;
    }
    tracing::info!(address = %bound, "metrics at http://{bound}/metrics");
    Ok(bound)
}

fn accept_loop(listener: &TcpListener, metrics: &NodeMetrics) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(error) = answer(stream, metrics) {
                    tracing::debug!(%error, "metrics request failed");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                // Out of descriptors, say: the next accept may work once some close.
                std::thread::sleep(METRICS_HTTP_TIMEOUT / 20);
            }
        }
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics,
    NotFound,
    WrongMethod,
    Malformed,
}

/// Sets the socket's timeout to what is left until `deadline` (an error once past it):
/// a slow client's trickle of bytes cannot hold a thread beyond it.
fn within(stream: &TcpStream, deadline: Instant) -> std::io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "metrics request took too long",
        ));
    }
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))
}

/// Reads a request head (bounded) and says what it asks for.
fn read_request(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<Asked> {
    let mut head = vec![0u8; METRICS_MAX_REQUEST_BYTES];
    let mut filled = 0;
    loop {
        within(stream, deadline)?;
        let read = stream.read(&mut head[filled..])?;
        if read == 0 {
            return Ok(Asked::Malformed);
        }
        filled += read;
        match parse_head(&head[..filled]) {
            Some(asked) => return Ok(asked),
            None if filled == head.len() => return Ok(Asked::Malformed),
            None => {}
        }
    }
}

/// What a complete request head asks for; `None` while it is incomplete.
fn parse_head(bytes: &[u8]) -> Option<Asked> {
    let mut headers = [httparse::EMPTY_HEADER; METRICS_MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(Asked::Malformed),
        Ok(httparse::Status::Complete(_)) => {
            let path = request.path.unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            Some(match (request.method, path) {
                (Some("GET"), "/metrics") => Asked::Metrics,
                (Some("GET"), _) => Asked::NotFound,
                _ => Asked::WrongMethod,
            })
        }
    }
}

fn answer(mut stream: TcpStream, metrics: &NodeMetrics) -> std::io::Result<()> {
    // One deadline for the whole exchange, not per read.
    let deadline = Instant::now() + METRICS_HTTP_TIMEOUT;
    let (status, content_type, body) = match read_request(&mut stream, deadline)? {
        Asked::Metrics => {
            let mut body = String::with_capacity(64 * 1024);
            match prometheus_text::encode(&mut body, metrics.registry()) {
                Ok(()) => ("200 OK", prometheus_text::CONTENT_TYPE, body),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "the metrics could not be encoded\n".to_string(),
                ),
            }
        }
        Asked::NotFound => (
            "404 Not Found",
            "text/plain",
            "this endpoint serves GET /metrics\n".to_string(),
        ),
        Asked::WrongMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n".to_string(),
        ),
        Asked::Malformed => (
            "400 Bad Request",
            "text/plain",
            "malformed or oversized request\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    within(&stream, deadline)?;
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    // A request left unread (an oversized one) would reset the connection on close, and
    // the client could lose the answer: end our side, then read what is left until the
    // client closes, within `METRICS_DRAIN_TIME` and `METRICS_DRAIN_READS` reads.
    stream.shutdown(std::net::Shutdown::Write)?;
    let drain_until = Instant::now() + METRICS_DRAIN_TIME;
    let mut left = vec![0u8; METRICS_MAX_REQUEST_BYTES];
    for _ in 0..METRICS_DRAIN_READS {
        within(&stream, drain_until)?;
        if stream.read(&mut left)? == 0 {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_is_read_for_what_it_asks() {
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Asked::Metrics)
        );
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Asked::Metrics)
        );
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n\r\n"), Some(Asked::NotFound));
        assert_eq!(
            parse_head(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Asked::WrongMethod)
        );
        assert_eq!(
            parse_head(b"\x00\x01garbage\r\n\r\n"),
            Some(Asked::Malformed)
        );
    }

    #[test]
    fn a_client_trickling_its_request_is_cut_off_at_the_deadline() {
        let address = serve("127.0.0.1:0", NodeMetrics::new(1)).unwrap();
        let mut slow = TcpStream::connect(address).unwrap();
        let started = std::time::Instant::now();
        let mut cut_off = false;
        // A byte every 300 ms: each read is quick, the exchange is not.
        for _ in 0..30 {
            std::thread::sleep(std::time::Duration::from_millis(300));
            if slow.write_all(b"G").is_err() {
                cut_off = true;
                break;
            }
        }
        let held = started.elapsed();
        assert!(cut_off, "still open after {held:?}");
        assert!(
            held < METRICS_HTTP_TIMEOUT + std::time::Duration::from_secs(2),
            "held {held:?}"
        );
    }

    fn get(address: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn the_endpoint_serves_the_families_and_refuses_the_rest() {
        let metrics = NodeMetrics::new(7);
        let shard = crate::metrics::ShardMetrics::new(metrics.clone(), 0);
        shard.fetched(100, true);
        let address = serve("127.0.0.1:0", metrics).unwrap();
        // A silent connection holds one thread; the other answers meanwhile.
        let _silent = TcpStream::connect(address).unwrap();
        let answer = get(address, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            answer.contains("keel_fetch_bytes_total{node=\"7\",shard=\"0\"} 100"),
            "{answer}"
        );
        assert!(answer.contains("# TYPE keel_produce_latency_seconds histogram"));
        let answer = get(address, b"GET /other HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let oversized = vec![b'a'; METRICS_MAX_REQUEST_BYTES + 10];
        let answer = get(address, &oversized);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
}
