//! One blocking connection to a shard: send requests (many may be outstanding), read the
//! answers, matched by correlation id. For tools, tests and simple producers; it needs no
//! async runtime. Plain TCP, or TLS when the client's security says so (the handshake
//! happens in `connect`, within its timeout, so a wrong CA or an expired certificate is a
//! connect error naming rustls's reason).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::client::error::ClientError;
use crate::config::DEFAULT_MAX_FRAME_BYTES;
use crate::protocol::codec::{decode_response, encode_request};
use crate::protocol::wire;
use crate::security::scram;

/// The SCRAM mechanism's name on the wire.
const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
use crate::protocol::frame::{encode_frame, FrameDecoder};

/// How long a connection waits for an answer before giving up.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(35);

/// Bytes asked of the socket by one read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How a client reaches the brokers: TLS (the CA it trusts, its own certificate if it
/// has one) or plain TCP; and who it is (SCRAM-SHA-256 credentials), if the brokers ask.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    /// TLS settings (`security::tls::client_config`); `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A user and password to authenticate every connection with (SCRAM-SHA-256, before
    /// any other request); `None`: none (a client certificate may name the client).
    pub credentials: Option<Credentials>,
}

/// A user's name and password. The password is sent to no one (SCRAM proves it) and
/// never printed.
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

/// The bytes under a connection.
enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => &tls.sock,
        }
    }

    /// Decrypted bytes rustls holds that no read has taken yet (a wait on the socket
    /// would not see them).
    fn pending(&mut self) -> usize {
        match self {
            Transport::Plain(_) => 0,
            Transport::Tls(tls) => tls
                .conn
                .process_new_packets()
                .map_or(0, |state| state.plaintext_bytes_to_read()),
        }
    }

    fn set_read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.tcp().set_read_timeout(Some(timeout))
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.read(buf),
            Transport::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.write_all(buf),
            Transport::Tls(tls) => {
                tls.write_all(buf)?;
                tls.flush()
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

/// A TLS client connection over `tcp` to `address` ("host:port"; the host is the name
/// the broker's certificate must carry), its handshake done within `timeout` (errors of
/// kind `InvalidData` carry rustls's reason).
pub(crate) fn tls_handshake(
    config: &Arc<rustls::ClientConfig>,
    address: &str,
    tcp: &mut TcpStream,
    timeout: Duration,
) -> std::io::Result<rustls::ClientConnection> {
    let invalid = |e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("TLS: {e}"))
    };
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| invalid(&e))?;
    let mut conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| invalid(&e))?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    while conn.is_handshaking() {
        conn.complete_io(tcp).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                invalid(&e)
            } else {
                e
            }
        })?;
    }
    tcp.set_write_timeout(None)?;
    Ok(conn)
}

fn start_tls(
    config: &Arc<rustls::ClientConfig>,
    address: &str,
    mut tcp: TcpStream,
    timeout: Duration,
) -> std::io::Result<Transport> {
    let conn = tls_handshake(config, address, &mut tcp, timeout)?;
    Ok(Transport::Tls(Box::new(rustls::StreamOwned::new(
        conn, tcp,
    ))))
}

/// Runs a SCRAM-SHA-256 exchange as `credentials`' user, `step` sending one message to
/// the broker at `address` and returning its answer.
pub(crate) fn scram_exchange(
    address: &str,
    credentials: &Credentials,
    mut step: impl FnMut(&str) -> Result<String, ClientError>,
) -> Result<(), ClientError> {
    let failed = |reason: String| ClientError::Authentication {
        address: address.to_string(),
        reason,
    };
    let mut random = [0u8; 18];
    getrandom::getrandom(&mut random).map_err(|e| failed(format!("no random nonce: {e}")))?;
    let nonce = scram::encode_nonce(&random);
    let (mut exchange, client_first) = scram::ClientExchange::start(&credentials.user, &nonce);
    let server_first = step(&client_first)?;
    let client_final = exchange
        .finish(&server_first, &credentials.password)
        .map_err(|e| failed(e.to_string()))?;
    let server_final = step(&client_final)?;
    exchange
        .verify_server(&server_final)
        .map_err(|e| failed(e.to_string()))
}

/// One step's request: `message` under correlation id `id`.
pub fn authenticate_request(id: u64, message: &str) -> Vec<u8> {
    let mut builder = flatbuffers::FlatBufferBuilder::with_capacity(256);
    let mechanism = builder.create_string(SCRAM_SHA_256);
    let message = builder.create_string(message);
    let body = wire::AuthenticateRequest::create(
        &mut builder,
        &wire::AuthenticateRequestArgs {
            mechanism: Some(mechanism),
            message: Some(message),
        },
    );
    encode_request(
        &mut builder,
        id,
        wire::RequestBody::AuthenticateRequest,
        body.as_union_value(),
    )
}

/// The broker's message in a step's answer, or why it refused.
pub(crate) fn authenticate_answer(address: &str, answer: &[u8]) -> Result<String, ClientError> {
    let response = decode_response(answer)?;
    if let Some(error) = response
        .error()
        .filter(|e| e.code() != wire::ErrorCode::None)
    {
        let reason = error.message().unwrap_or("refused").to_string();
        if error.code() == wire::ErrorCode::AuthenticationFailed {
            return Err(ClientError::Authentication {
                address: address.to_string(),
                reason,
            });
        }
        // Not a verdict on the credentials (a node starting, that has not yet heard the
        // cluster's users): retriable where the code is.
        return Err(ClientError::Broker {
            code: error.code(),
            message: reason,
            leader_address: None,
        });
    }
    response
        .body_as_authenticate_response()
        .and_then(|answer| answer.message())
        .map(str::to_string)
        .ok_or_else(|| ClientError::Unexpected("not an authentication answer".into()))
}

/// How a TLS alert record starts (content type 21, version 3.x): what a TLS server
/// answers a plain client with.
const TLS_ALERT: [u8; 2] = [0x15, 0x03];

/// A connection to one shard.
pub struct Connection {
    stream: Transport,
    address: String,
    decoder: FrameDecoder,
    /// Where reads land before the decoder takes them (allocated once).
    read_buffer: Box<[u8]>,
    next_correlation_id: u64,
    early_answers: HashMap<u64, Bytes>,
}

impl Connection {
    /// Connects to `address` ("host:port"), plain TCP.
    pub fn connect(address: &str, timeout: Duration) -> Result<Connection, ClientError> {
        Connection::connect_with(address, timeout, &ClientSecurity::default())
    }

    /// Connects to `address` ("host:port") as `security` says.
    pub fn connect_with(
        address: &str,
        timeout: Duration,
        security: &ClientSecurity,
    ) -> Result<Connection, ClientError> {
        let addresses: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(address)
            .map_err(|e| ClientError::Connect {
                address: address.to_string(),
                source: e,
            })?
            .collect();
        let mut last_error = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for socket_address in addresses {
            let connected = TcpStream::connect_timeout(&socket_address, timeout).and_then(|tcp| {
                tcp.set_nodelay(true).ok();
                match &security.tls {
                    Some(config) => start_tls(config, address, tcp, timeout),
                    None => Ok(Transport::Plain(tcp)),
                }
            });
            match connected {
                Ok(stream) => {
                    stream.set_read_timeout(DEFAULT_REQUEST_TIMEOUT).ok();
                    let mut connection = Connection {
                        stream,
                        address: address.to_string(),
                        decoder: FrameDecoder::reserving_whole_frames(DEFAULT_MAX_FRAME_BYTES),
                        read_buffer: vec![0u8; READ_CHUNK_BYTES].into_boxed_slice(),
                        next_correlation_id: 1,
                        early_answers: HashMap::new(),
                    };
                    if let Some(credentials) = &security.credentials {
                        connection.authenticate(credentials)?;
                    }
                    return Ok(connection);
                }
                Err(error) => last_error = error,
            }
        }
        if security.tls.is_some() && last_error.kind() == std::io::ErrorKind::InvalidData {
            return Err(ClientError::Tls {
                address: address.to_string(),
                reason: last_error.to_string(),
            });
        }
        Err(ClientError::Connect {
            address: address.to_string(),
            source: last_error,
        })
    }

    /// Authenticates the connection with SCRAM-SHA-256 (two round trips); the broker
    /// proves it holds the user's credential too.
    fn authenticate(&mut self, credentials: &Credentials) -> Result<(), ClientError> {
        let address = self.address.clone();
        scram_exchange(&address, credentials, |message| {
            let id = self.next_correlation_id();
            let answer = self.call(id, &authenticate_request(id, message))?;
            authenticate_answer(&address, &answer)
        })
    }

    /// Sets how long `receive` waits for an answer.
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        let _ = self
            .stream
            .set_read_timeout(timeout.max(Duration::from_millis(1)));
    }

    /// The address connected to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A fresh correlation id for the next request.
    pub fn next_correlation_id(&mut self) -> u64 {
        let id = self.next_correlation_id;
        self.next_correlation_id += 1;
        id
    }

    /// Sends an encoded request (built with the id from `next_correlation_id`).
    pub fn send(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let frame = encode_frame(payload)?;
        self.stream.write_all(&frame).map_err(|e| self.io_error(e))
    }

    /// Waits for the answer to `correlation_id` (answers to others are kept for later).
    pub fn receive(&mut self, correlation_id: u64) -> Result<Bytes, ClientError> {
        if let Some(answer) = self.early_answers.remove(&correlation_id) {
            return Ok(answer);
        }
        loop {
            while let Some(frame) = self.decoder.next_frame_shared()? {
                let id = decode_response(&frame)?.correlation_id();
                if id == correlation_id {
                    return Ok(frame);
                }
                self.early_answers.insert(id, frame);
            }
            self.read_more().map_err(|e| self.io_error(e))?;
        }
    }

    /// An answer already read from the socket (to any request), if there is one.
    pub fn buffered_answer(&mut self) -> Result<Option<(u64, Bytes)>, ClientError> {
        if let Some(&id) = self.early_answers.keys().next() {
            return Ok(self.early_answers.remove(&id).map(|answer| (id, answer)));
        }
        match self.decoder.next_frame_shared()? {
            Some(frame) => Ok(Some((decode_response(&frame)?.correlation_id(), frame))),
            None => Ok(None),
        }
    }

    /// The next answer to any request, waiting up to `wait` for bytes to come (`None`
    /// when none came in time; a partly read answer stays buffered for the next call).
    /// Changes the read timeout: callers mixing this with `receive` set theirs again.
    pub fn receive_any(&mut self, wait: Duration) -> Result<Option<(u64, Bytes)>, ClientError> {
        let _ = self
            .stream
            .set_read_timeout(wait.max(Duration::from_millis(1)));
        loop {
            if let Some(answer) = self.buffered_answer()? {
                return Ok(Some(answer));
            }
            match self.read_more() {
                Ok(()) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(error) => return Err(self.io_error(error)),
            }
        }
    }

    /// One read of the socket, given to the decoder (over TLS, with every decrypted byte
    /// it brought: a wait on the socket would not see them); the peer closing is an
    /// error (`UnexpectedEof`).
    fn read_more(&mut self) -> std::io::Result<()> {
        let count = self.stream.read(&mut self.read_buffer)?;
        if count == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let fresh = self.decoder.buffered_bytes() == 0 && self.decoder.skipping_bytes() == 0;
        if fresh
            && matches!(self.stream, Transport::Plain(_))
            && self.read_buffer[..count].starts_with(&TLS_ALERT)
        {
            // No frame starts so (a length of 200 KiB and more): a TLS record, an alert.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the broker answered with a TLS alert: it speaks TLS (give the client the \
                 brokers' CA: --tls-ca)",
            ));
        }
        self.decoder.push(&self.read_buffer[..count]);
        while self.stream.pending() > 0 {
            let count = self.stream.read(&mut self.read_buffer)?;
            if count == 0 {
                break;
            }
            self.decoder.push(&self.read_buffer[..count]);
        }
        Ok(())
    }

    /// Sends a request and waits for its answer.
    pub fn call(&mut self, correlation_id: u64, payload: &[u8]) -> Result<Bytes, ClientError> {
        self.send(payload)?;
        self.receive(correlation_id)
    }

    /// The socket, to wait on several connections at once.
    pub fn socket(&self) -> &impl std::os::fd::AsFd {
        self.stream.tcp()
    }

    fn io_error(&self, source: std::io::Error) -> ClientError {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            return ClientError::Closed(self.address.clone());
        }
        if source.kind() == std::io::ErrorKind::InvalidData {
            // The broker's TLS alert (it refused this client's certificate, ...).
            return ClientError::Tls {
                address: self.address.clone(),
                reason: source.to_string(),
            };
        }
        ClientError::Io {
            address: self.address.clone(),
            source,
        }
    }
}
