//! `keel bench rtt`: the loopback round trip between two processes, the network half of
//! the floor under a replicated write (a quorum commit seen by a client costs about two
//! round trips plus one synced write; the leader's own write overlaps).
//!
//! The parent starts a copy of itself as an echo server (`keel bench rtt --serve`), then
//! sends 1 KiB requests one at a time and times each 16-byte answer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::bench::hgrm;

/// Request size.
pub const REQUEST_BYTES: usize = 1024;
/// Answer size.
pub const ANSWER_BYTES: usize = 16;

/// Serves echo answers on `listener` until the peer closes (the child side).
pub fn serve(listener: TcpListener) -> std::io::Result<()> {
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut request = [0u8; REQUEST_BYTES];
    let answer = [7u8; ANSWER_BYTES];
    loop {
        if stream.read_exact(&mut request).is_err() {
            return Ok(());
        }
        stream.write_all(&answer)?;
    }
}

/// Runs `count` round trips against a child echo server; returns their histogram (µs).
pub fn run_rtt_bench(
    executable: &std::path::Path,
    count: usize,
) -> std::io::Result<Histogram<u64>> {
    let probe = TcpListener::bind("127.0.0.1:0")?;
    let address = probe.local_addr()?;
    drop(probe);
    let mut child = Command::new(executable)
        .args(["bench", "rtt", "--serve", &address.to_string()])
        .stdout(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(address) {
            Ok(stream) => break stream,
            Err(error) if Instant::now() > deadline => {
                let _ = child.kill();
                return Err(error);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    stream.set_nodelay(true)?;
    let request = [1u8; REQUEST_BYTES];
    let mut answer = [0u8; ANSWER_BYTES];
    let mut histogram = hgrm::new_histogram();
    for round in 0..count + 1000 {
        let started = Instant::now();
        stream.write_all(&request)?;
        stream.read_exact(&mut answer)?;
        if round >= 1000 {
            hgrm::record(&mut histogram, started.elapsed().as_micros() as u64);
        }
    }
    drop(stream);
    let _ = child.wait();
    Ok(histogram)
}
