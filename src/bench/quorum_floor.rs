//! `keel bench quorum-floor`: the least CPU one replicated write can cost on this host,
//! and the most such writes it can do, measured with three processes that do only what a
//! quorum write cannot avoid (`quorum_floor_roles`: loopback TCP, one O_DIRECT + O_DSYNC
//! write per batch on each, plain blocking calls, no framing, checksums or consensus).
//!
//! The parent is the client: open loop at a fixed rate (latency counted from each
//! request's intended send time), or closed loop with a window of requests in flight
//! (latency from each send), as `keel bench produce` runs. It reads the three processes'
//! CPU time (utime + stime) and context switches before and after the measured window,
//! as `scripts/node-cost.py` does for a Keel cluster. The answer bounds what any broker
//! design can reach here: a target below this floor is below the host, not the code.
//!
//! Owns: its child processes and their files, in a directory of its own inside the one
//! it is given (removed afterwards, on errors too). Never touches anything else there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::bench::hgrm;
use crate::bench::quorum_floor_roles::{connect, ANSWER_BYTES, MAX_BATCH_REQUESTS, REQUEST_BYTES};

/// Requests sent closed loop before the measured window (connections, caches).
pub const WARM_UP_REQUESTS: usize = 1000;
/// The pacing thread sleeps until this long before a send time, then spins.
const SPIN_BEFORE_SEND: Duration = Duration::from_micros(150);

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
    /// Latency (µs): from the intended send time in open loop, from the send in closed.
    pub latency: Histogram<u64>,
    /// Requests answered per second over the measured window.
    pub requests_per_s: f64,
}

/// How the client sends.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Open loop: this many requests per second, each at its intended time.
    Rate(u64),
    /// Closed loop: this many requests in flight (at most a leader's batch).
    Window(usize),
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

/// Runs the floor: `count` requests under `load` after a closed-loop warm-up.
pub fn run_quorum_floor(
    executable: &Path,
    dir: &Path,
    load: Load,
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
    let (cpu_before, switches_before) = roles.usage()?;
    let started = Instant::now();
    let (latency, pacing) = send_and_time(&mut stream, load, count)?;
    let elapsed = started.elapsed();
    let (cpu_after, switches_after) = roles.usage()?;
    pacing
        .join()
        .map_err(|_| std::io::Error::other("the sending thread panicked"))??;
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
        requests_per_s: count as f64 / elapsed.as_secs_f64(),
    })
}

type Sender = std::thread::JoinHandle<std::io::Result<()>>;

/// Sends `count` requests under `load` from a thread of their own and times each answer
/// here; returns the latencies and the sending thread.
fn send_and_time(
    stream: &mut TcpStream,
    load: Load,
    count: usize,
) -> std::io::Result<(Histogram<u64>, Sender)> {
    let (times, timed) = mpsc::channel::<Instant>();
    let (free, slots) = mpsc::channel::<()>();
    if let Load::Window(window) = load {
        for _ in 0..window.clamp(1, MAX_BATCH_REQUESTS) {
            let _ = free.send(());
        }
    }
    let mut sender = stream.try_clone()?;
    let start = Instant::now() + Duration::from_millis(1);
    let sending = std::thread::spawn(move || -> std::io::Result<()> {
        let request = [3u8; REQUEST_BYTES];
        for index in 0..count {
            let from = match load {
                Load::Rate(rate) => {
                    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
                    let due = start + interval * index as u32;
                    pace_until(due);
                    due
                }
                Load::Window(_) => {
                    if slots.recv().is_err() {
                        return Ok(()); // the receiving side stopped
                    }
                    Instant::now()
                }
            };
            sender.write_all(&request)?;
            if times.send(from).is_err() {
                return Ok(());
            }
        }
        Ok(())
    });
    let mut latency = hgrm::new_histogram();
    let mut answer = [0u8; ANSWER_BYTES];
    for _ in 0..count {
        stream.read_exact(&mut answer)?;
        let sent = timed
            .recv()
            .map_err(|_| std::io::Error::other("the sending thread stopped"))?;
        hgrm::record(&mut latency, sent.elapsed().as_micros() as u64);
        if matches!(load, Load::Window(_)) {
            let _ = free.send(());
        }
    }
    Ok((latency, sending))
}

/// Waits until `due`: a sleep to just before it, then a spin.
fn pace_until(due: Instant) {
    let now = Instant::now();
    if due > now + SPIN_BEFORE_SEND {
        std::thread::sleep(due - now - SPIN_BEFORE_SEND);
    }
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}
