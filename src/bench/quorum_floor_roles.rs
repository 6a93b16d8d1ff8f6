//! The three role processes of `keel bench quorum-floor`: a leader and two followers that
//! do only a quorum write's unavoidable work, with blocking calls and one thread each.
//!
//! The leader takes every whole request its client has sent so far as one batch (one, at
//! a low rate: requests do not overlap), sends the batch to both followers as one frame
//! (its count, then the requests), writes it to its own file (O_DIRECT + O_DSYNC, whole
//! 4 KiB pages, as the CommitLog writes a flush), waits for the first follower's answer,
//! answers each request of the batch in one write and reads the second follower's
//! answer. A follower reads a frame, writes it the same way and answers with one 8-byte
//! word. Each read takes what the socket holds, so a request usually costs one read.
//!
//! Owns: the role's file and sockets. Never frames, checksums or orders anything beyond
//! this: it is the floor, not a broker.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Request size: one 1 KiB record, as in the cluster benchmark's cost run.
pub const REQUEST_BYTES: usize = 1024;
/// A follower's answer (the count of the batch it stored).
pub const ACK_BYTES: usize = 8;
/// The leader's answer to each request.
pub const ANSWER_BYTES: usize = 16;
/// The unit of a synced write: the 4 KiB page a small entry rewrites in the CommitLog.
pub const PAGE_BYTES: usize = 4096;
/// Most requests in one batch (a 256 KiB write): as many as the cluster benchmark keeps
/// in flight at its maximum throughput.
pub const MAX_BATCH_REQUESTS: usize = 256;
/// Each process writes around a pre-written file of this size (overwrites, no extension,
/// no metadata to journal, as a pre-allocated log segment).
pub const FILE_BYTES: u64 = 32 << 20;
/// How long a connection to a role is tried.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// The longest any one read or write of the benchmark waits: a role process that hangs
/// fails the run instead of blocking it forever.
const IO_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes one read may take off a socket.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes of the largest batch's write.
const BATCH_BYTES: usize = MAX_BATCH_REQUESTS * REQUEST_BYTES;

/// The O_DIRECT write buffer (its address must be aligned as the device's blocks).
#[repr(C, align(4096))]
struct Pages([u8; BATCH_BYTES]);

/// A role's synced writer over its pre-written file.
struct PageLog {
    file: File,
    pages: Box<Pages>,
    offset: u64,
}

impl PageLog {
    fn open(path: &Path) -> std::io::Result<PageLog> {
        let mut plain = File::create(path)?;
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..FILE_BYTES / zeros.len() as u64 {
            plain.write_all(&zeros)?;
        }
        plain.sync_all()?;
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)?;
        Ok(PageLog {
            file,
            pages: Box::new(Pages([0; BATCH_BYTES])),
            offset: 0,
        })
    }

    /// Writes `records` (at most a batch) in whole pages, durable when it returns.
    fn append(&mut self, records: &[u8]) -> std::io::Result<()> {
        let bytes =
            (records.len().div_ceil(PAGE_BYTES) * PAGE_BYTES).clamp(PAGE_BYTES, BATCH_BYTES);
        let buffer = &mut self.pages.0;
        let length = records.len().min(bytes);
        buffer[..length].copy_from_slice(&records[..length]);
        if self.offset + bytes as u64 > FILE_BYTES {
            self.offset = 0;
        }
        self.file.write_all_at(&buffer[..bytes], self.offset)?;
        self.offset += bytes as u64;
        Ok(())
    }
}

/// What a socket has delivered and the role has not used yet.
struct Inbox {
    bytes: Vec<u8>,
    chunk: Box<[u8; READ_CHUNK]>,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            bytes: Vec::with_capacity(MAX_BATCH_REQUESTS * REQUEST_BYTES + ACK_BYTES),
            chunk: Box::new([0; READ_CHUNK]),
        }
    }

    /// Reads until at least `wanted` bytes are held; `false` at the end of the stream.
    fn fill(&mut self, stream: &mut TcpStream, wanted: usize) -> std::io::Result<bool> {
        while self.bytes.len() < wanted {
            let read = stream.read(&mut self.chunk[..])?;
            if read == 0 {
                return Ok(false);
            }
            self.bytes.extend_from_slice(&self.chunk[..read]);
        }
        Ok(true)
    }
}

/// Ends this role process when the benchmark that started it ends (killed too).
fn die_with_parent() {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// The follower role: one connection from the leader, until it closes.
pub fn serve_follower(listener: TcpListener, file: &Path) -> std::io::Result<()> {
    die_with_parent();
    let mut log = PageLog::open(file)?;
    let (mut leader, _) = listener.accept()?;
    leader.set_nodelay(true)?;
    let mut inbox = Inbox::new();
    while inbox.fill(&mut leader, ACK_BYTES)? {
        let mut count = [0u8; ACK_BYTES];
        count.copy_from_slice(&inbox.bytes[..ACK_BYTES]);
        let requests = (u64::from_le_bytes(count) as usize).min(MAX_BATCH_REQUESTS);
        let frame = ACK_BYTES + requests * REQUEST_BYTES;
        if !inbox.fill(&mut leader, frame)? {
            break;
        }
        log.append(&inbox.bytes[ACK_BYTES..frame])?;
        leader.write_all(&count)?;
        inbox.bytes.drain(..frame);
    }
    Ok(())
}

/// The leader role: connects to both followers, then serves one client until it closes.
pub fn serve_leader(
    listener: TcpListener,
    followers: [SocketAddr; 2],
    file: &Path,
) -> std::io::Result<()> {
    die_with_parent();
    let mut log = PageLog::open(file)?;
    let mut first = connect(followers[0])?;
    let mut second = connect(followers[1])?;
    let (mut client, _) = listener.accept()?;
    client.set_nodelay(true)?;
    let mut inbox = Inbox::new();
    let mut frame = Vec::with_capacity(ACK_BYTES + MAX_BATCH_REQUESTS * REQUEST_BYTES);
    let answers = vec![2u8; MAX_BATCH_REQUESTS * ANSWER_BYTES];
    let mut ack = [0u8; ACK_BYTES];
    while inbox.fill(&mut client, REQUEST_BYTES)? {
        let requests = (inbox.bytes.len() / REQUEST_BYTES).min(MAX_BATCH_REQUESTS);
        let batch = &inbox.bytes[..requests * REQUEST_BYTES];
        frame.clear();
        frame.extend_from_slice(&(requests as u64).to_le_bytes());
        frame.extend_from_slice(batch);
        first.write_all(&frame)?;
        second.write_all(&frame)?;
        log.append(batch)?;
        first.read_exact(&mut ack)?;
        client.write_all(&answers[..requests * ANSWER_BYTES])?;
        second.read_exact(&mut ack)?;
        inbox.bytes.drain(..requests * REQUEST_BYTES);
    }
    Ok(())
}

/// A connection to a role (or the leader), with the benchmark's deadlines.
pub fn connect(address: SocketAddr) -> std::io::Result<TcpStream> {
    let deadline = Instant::now() + CONNECT_DEADLINE;
    loop {
        match TcpStream::connect(address) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(IO_DEADLINE))?;
                stream.set_write_timeout(Some(IO_DEADLINE))?;
                return Ok(stream);
            }
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
