//! `keel bench quorum-floor`: the least CPU one replicated write can cost on this host,
//! measured with three processes that do only what a quorum write cannot avoid.
//!
//! A leader process reads a 1 KiB request from the client, sends it to two follower
//! processes, writes one 4 KiB page of its own file (O_DIRECT + O_DSYNC, pre-written, as
//! the CommitLog writes), waits for the first follower's answer, answers the client and
//! then reads the second follower's answer. Each follower reads the request, writes its
//! page the same way and answers 8 bytes. Plain blocking system calls, one thread per
//! process, no framing, no checksums, no consensus: the kernel's share of a request
//! (loopback TCP, the synced writes, the wake-ups between them) with nothing on top.
//!
//! The parent is the client: open loop at a fixed rate, latency counted from each
//! request's intended send time. It reads the three processes' CPU time (utime + stime)
//! and context switches before and after the measured window, as `scripts/node-cost.py`
//! does for a Keel cluster. The answer bounds what any broker design can reach here: a
//! target below this floor is below the host, not the code.
//!
//! Owns: its child processes and their files, in a directory of its own inside the one
//! it is given (removed afterwards, on errors too). Never touches anything else there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::bench::hgrm;

/// Request size: one 1 KiB record, as in the cluster benchmark's cost run.
pub const REQUEST_BYTES: usize = 1024;
/// A follower's answer.
pub const ACK_BYTES: usize = 8;
/// The leader's answer to the client.
pub const ANSWER_BYTES: usize = 16;
/// One synced write: the 4 KiB page a small entry rewrites in the CommitLog.
pub const PAGE_BYTES: usize = 4096;
/// Each process writes around a pre-written file of this size (overwrites, no extension,
/// no metadata to journal, as a pre-allocated log segment).
pub const FILE_BYTES: u64 = 32 << 20;
/// Requests sent closed loop before the measured window (connections, caches).
pub const WARM_UP_REQUESTS: usize = 1000;
/// How long the parent waits for a child's port to open.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// The pacing thread sleeps until this long before a send time, then spins.
const SPIN_BEFORE_SEND: Duration = Duration::from_micros(150);
/// The longest any one read or write of the benchmark waits: a role process that hangs
/// fails the run instead of blocking it forever.
const IO_DEADLINE: Duration = Duration::from_secs(10);

/// One O_DIRECT page (the buffer's address must be aligned as the device's blocks).
#[repr(C, align(4096))]
struct Page([u8; PAGE_BYTES]);

/// What one measured run gave.
#[derive(Debug)]
pub struct FloorReport {
    /// Requests in the measured window.
    pub requests: usize,
    /// utime + stime of the three processes over the window, per request (µs).
    pub cpu_us_per_request: f64,
    /// The same for each process: the leader, then the two followers.
    pub role_cpu_us_per_request: [f64; 3],
    /// Voluntary and involuntary context switches of the three, per request.
    pub switches_per_request: f64,
    /// Latency from intended send time to answer (µs).
    pub latency: Histogram<u64>,
}

/// A role's synced page writer over its pre-written file.
struct PageLog {
    file: File,
    page: Box<Page>,
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
            page: Box::new(Page([0; PAGE_BYTES])),
            offset: 0,
        })
    }

    fn append(&mut self, record: &[u8]) -> std::io::Result<()> {
        self.page.0[..record.len()].copy_from_slice(record);
        self.file.write_all_at(&self.page.0, self.offset)?;
        self.offset = (self.offset + PAGE_BYTES as u64) % FILE_BYTES;
        Ok(())
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
    let mut request = [0u8; REQUEST_BYTES];
    let ack = [1u8; ACK_BYTES];
    while leader.read_exact(&mut request).is_ok() {
        log.append(&request)?;
        leader.write_all(&ack)?;
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
    let mut request = [0u8; REQUEST_BYTES];
    let mut ack = [0u8; ACK_BYTES];
    let answer = [2u8; ANSWER_BYTES];
    while client.read_exact(&mut request).is_ok() {
        first.write_all(&request)?;
        second.write_all(&request)?;
        log.append(&request)?;
        first.read_exact(&mut ack)?;
        client.write_all(&answer)?;
        second.read_exact(&mut ack)?;
    }
    Ok(())
}

fn connect(address: SocketAddr) -> std::io::Result<TcpStream> {
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

fn free_address() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// A directory of the benchmark's own inside the one it was given (which may hold
/// anything: only this one is removed), removed with its files when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(parent: &Path) -> std::io::Result<WorkDir> {
        std::fs::create_dir_all(parent)?;
        let dir = parent.join(format!("quorum-floor-{}", std::process::id()));
        std::fs::create_dir(&dir)?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The three role processes; killed and reaped when dropped.
struct Roles(Vec<Child>);

impl Drop for Roles {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Roles {
    fn start(executable: &Path, dir: &Path) -> std::io::Result<(Roles, SocketAddr)> {
        let addresses = [free_address()?, free_address()?, free_address()?];
        let mut roles = Roles(Vec::new());
        for (index, address) in addresses.iter().enumerate() {
            let file: PathBuf = dir.join(format!("role-{index}.log"));
            let mut command = Command::new(executable);
            command.args(["bench", "quorum-floor", "--listen", &address.to_string()]);
            command.arg("--file").arg(&file);
            if index == 0 {
                let followers = format!("{},{}", addresses[1], addresses[2]);
                command.args(["--followers", &followers]);
            }
            roles.0.push(command.stdout(Stdio::null()).spawn()?);
        }
        Ok((roles, addresses[0]))
    }

    /// utime + stime (seconds) of each process and the context switches of all three.
    fn usage(&self) -> std::io::Result<([f64; 3], u64)> {
        let ticks = clock_ticks();
        let (mut cpu, mut switches) = ([0.0; 3], 0);
        for (child, cpu) in self.0.iter().zip(cpu.iter_mut()) {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()))?;
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            *cpu = (field(11).unwrap_or(0) + field(12).unwrap_or(0)) as f64 / ticks;
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
            switches += status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok((cpu, switches))
    }
}

/// Clock ticks per second of /proc's CPU times (the kernel's USER_HZ).
fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system; it takes no pointers.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Runs the floor: `count` requests at `rate` per second after a closed-loop warm-up.
pub fn run_quorum_floor(
    executable: &Path,
    dir: &Path,
    rate: u64,
    count: usize,
) -> std::io::Result<FloorReport> {
    let work = WorkDir::create(dir)?;
    let (roles, leader) = Roles::start(executable, &work.0)?;
    let mut stream = connect(leader)?;
    let request = [3u8; REQUEST_BYTES];
    let mut answer = [0u8; ANSWER_BYTES];
    for _ in 0..WARM_UP_REQUESTS {
        stream.write_all(&request)?;
        stream.read_exact(&mut answer)?;
    }
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let (cpu_before, switches_before) = roles.usage()?;
    let start = Instant::now() + Duration::from_millis(1);
    let mut sender = stream.try_clone()?;
    let pacing = std::thread::spawn(move || -> std::io::Result<()> {
        for index in 0..count {
            let due = start + interval * index as u32;
            let now = Instant::now();
            if due > now + SPIN_BEFORE_SEND {
                std::thread::sleep(due - now - SPIN_BEFORE_SEND);
            }
            while Instant::now() < due {
                std::hint::spin_loop();
            }
            sender.write_all(&request)?;
        }
        Ok(())
    });
    let mut latency = hgrm::new_histogram();
    for index in 0..count {
        stream.read_exact(&mut answer)?;
        let due = start + interval * index as u32;
        hgrm::record(&mut latency, due.elapsed().as_micros() as u64);
    }
    let (cpu_after, switches_after) = roles.usage()?;
    pacing
        .join()
        .map_err(|_| std::io::Error::other("the pacing thread panicked"))??;
    drop(stream);
    drop(roles);
    drop(work);
    let per_request = |role: usize| (cpu_after[role] - cpu_before[role]) * 1e6 / count as f64;
    let role_cpu_us_per_request = [per_request(0), per_request(1), per_request(2)];
    Ok(FloorReport {
        requests: count,
        cpu_us_per_request: role_cpu_us_per_request.iter().sum(),
        role_cpu_us_per_request,
        switches_per_request: (switches_after - switches_before) as f64 / count as f64,
        latency,
    })
}
