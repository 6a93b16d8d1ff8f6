//! The produce benchmark's connection, split into a writing half (the sender thread) and
//! a reading half (the receiver thread), plain TCP or TLS.
//!
//! Over TLS both halves share one rustls connection behind a mutex, held only to
//! encrypt or decrypt, never across a socket call: the writer encrypts into a buffer and
//! writes it after letting go (only it writes, so records stay in order), the reader
//! reads the socket first and then hands the bytes to rustls. A writer blocked on a full
//! socket therefore never keeps the reader from taking answers (which would stall a
//! broker that waits for its answers to be read before reading more requests).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::connection::{
    authenticate_answer, authenticate_request, scram_exchange, tls_handshake,
};
use crate::client::{ClientError, ClientSecurity, Credentials};
use crate::protocol::frame::{encode_frame, FrameDecoder};

/// The largest answer of an authentication step (a SCRAM message and an error).
const MAX_SCRAM_ANSWER_BYTES: u32 = 16 * 1024;

type Shared = Arc<Mutex<rustls::ClientConnection>>;

/// The writing half.
pub enum BenchWriter {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS.
    Tls(Shared, TcpStream, Vec<u8>),
}

/// The reading half.
pub enum BenchReader {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<TlsReader>),
}

/// The reading half of a TLS connection: bytes read off the socket that rustls has not
/// taken yet (it takes no more while its decrypted bytes are not read).
pub struct TlsReader {
    shared: Shared,
    tcp: TcpStream,
    raw: Vec<u8>,
    taken: usize,
    read: usize,
}

/// Connects to `address` as `security` says; the two halves.
pub fn open(
    address: &str,
    security: &ClientSecurity,
) -> std::io::Result<(BenchWriter, BenchReader)> {
    let mut tcp = TcpStream::connect(address)?;
    tcp.set_nodelay(true)?;
    let Some(config) = &security.tls else {
        if let Some(credentials) = &security.credentials {
            authenticate(&mut tcp, address, credentials)?;
        }
        return Ok((
            BenchWriter::Plain(tcp.try_clone()?),
            BenchReader::Plain(tcp),
        ));
    };
    let mut conn = tls_handshake(config, address, &mut tcp, Duration::from_secs(10))?;
    if let Some(credentials) = &security.credentials {
        authenticate(
            &mut rustls::Stream::new(&mut conn, &mut tcp),
            address,
            credentials,
        )?;
    }
    let shared = Arc::new(Mutex::new(conn));
    Ok((
        BenchWriter::Tls(shared.clone(), tcp.try_clone()?, Vec::new()),
        BenchReader::Tls(Box::new(TlsReader {
            shared,
            tcp,
            raw: vec![0u8; 64 * 1024],
            taken: 0,
            read: 0,
        })),
    ))
}

/// Authenticates the connection before it is split (SCRAM, two round trips, nothing
/// else in flight).
fn authenticate(
    stream: &mut (impl Read + Write),
    address: &str,
    credentials: &Credentials,
) -> std::io::Result<()> {
    let mut decoder = FrameDecoder::new(MAX_SCRAM_ANSWER_BYTES);
    let mut buffer = [0u8; 4096];
    let mut id = 0;
    scram_exchange(address, credentials, |message| {
        id += 1;
        let frame = encode_frame(&authenticate_request(id, message))?;
        stream
            .write_all(&frame)
            .and_then(|()| stream.flush())
            .map_err(io)?;
        loop {
            if let Some(answer) = decoder.next_frame()? {
                return authenticate_answer(address, &answer);
            }
            match stream.read(&mut buffer).map_err(io)? {
                0 => return Err(ClientError::Closed(address.to_string())),
                read => decoder.push(&buffer[..read]),
            }
        }
    })
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))
}

fn io(error: std::io::Error) -> ClientError {
    ClientError::Unexpected(error.to_string())
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, rustls::ClientConnection> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl BenchWriter {
    /// Writes all of `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            BenchWriter::Plain(tcp) => tcp.write_all(bytes),
            BenchWriter::Tls(shared, tcp, sealed) => {
                // rustls takes a bounded amount of plaintext at a time (64 KiB): seal and
                // send piece by piece.
                let mut rest = bytes;
                while !rest.is_empty() {
                    sealed.clear();
                    let taken = {
                        let mut conn = lock(shared);
                        let taken = conn.writer().write(rest)?;
                        while conn.wants_write() {
                            conn.write_tls(sealed)?;
                        }
                        taken
                    };
                    if taken == 0 {
                        return Err(std::io::ErrorKind::WriteZero.into());
                    }
                    tcp.write_all(sealed)?;
                    rest = &rest[taken..];
                }
                Ok(())
            }
        }
    }
}

impl BenchReader {
    /// How long a read waits.
    pub fn set_read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        match self {
            BenchReader::Plain(tcp) => tcp.set_read_timeout(Some(timeout)),
            BenchReader::Tls(tls) => tls.tcp.set_read_timeout(Some(timeout)),
        }
    }

    /// Reads what came (0: the connection ended).
    pub fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let tls = match self {
            BenchReader::Plain(tcp) => return tcp.read(buffer),
            BenchReader::Tls(tls) => tls,
        };
        loop {
            let mut conn = lock(&tls.shared);
            match conn.reader().read(buffer) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            if tls.taken < tls.read {
                let mut bytes = &tls.raw[tls.taken..tls.read];
                let before = bytes.len();
                conn.read_tls(&mut bytes)?;
                tls.taken += before - bytes.len();
                conn.process_new_packets()
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                continue;
            }
            drop(conn);
            let count = tls.tcp.read(&mut tls.raw)?;
            if count == 0 {
                return Ok(0);
            }
            (tls.taken, tls.read) = (0, count);
        }
    }
}
