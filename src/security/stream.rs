//! A connection that is plain TCP or TLS over it (either side), read and written the same
//! way: the client port, the peer port and peer links take this instead of a `TcpStream`.
//!
//! Owns nothing but the dispatch; the handshakes happen where the connection is made.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls_pki_types::CertificateDer;

/// A connection, plain or TLS.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, this side the server.
    Server(Box<futures_rustls::server::TlsStream<TcpStream>>),
    /// TLS, this side the client.
    Client(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The other side's certificate (its leaf), if it presented one over TLS.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        let certificates = match self {
            Stream::Plain(_) => None,
            Stream::Server(tls) => tls.get_ref().1.peer_certificates(),
            Stream::Client(tls) => tls.get_ref().1.peer_certificates(),
        };
        certificates.and_then(|c| c.first())
    }

    /// The TCP connection under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Server(tls) => tls.get_ref().0,
            Stream::Client(tls) => tls.get_ref().0,
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Server($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Stream::Client($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => s.poll_close(cx))
    }
}
