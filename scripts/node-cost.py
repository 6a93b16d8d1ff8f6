#!/usr/bin/env python3
"""What a load costs the server processes: CPU, context switches and syscalls per request.

    scripts/node-cost.py --requests N --pids P1,P2,P3 [--syscalls SECONDS] -- LOAD COMMAND...

Runs LOAD COMMAND (a `keel bench produce` run that makes N requests) and reads, before and
after it, every node process's CPU time (utime + stime of /proc/PID/stat: all its threads,
the io_uring workers too, exited ones included) and context switches (voluntary and not,
summed over /proc/PID/task/*/status: live threads). With --syscalls, it also counts each
node's system calls by name over the first SECONDS of the run (`perf stat` on the
syscalls:sys_enter_* tracepoints; strace -c -f if perf is missing, which slows the nodes:
its counts are per request all the same). Prints one line of key=value pairs:

    cpu_us_per_request=... ctx_per_request=...
    syscalls_per_request_node<i>=... top_node<i>=name:n,...

The nodes' CPU time is exact enough (it agrees with the scheduler's own run time,
/proc/PID/task/*/schedstat, to 1%). The whole host's busy time from /proc/stat is not used:
on this kind of VM it counted less busy time over a whole run than the measured processes
alone used (0.9 s against 3.0 s; the rest went to iowait), so it cannot charge the
kernel's workers to a run.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def switches(pid):
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            text = open(status).read()
        except OSError:
            continue  # a thread that exited meanwhile
        total += sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", text))
    return total


def start_syscall_count(pid, seconds, out):
    if shutil.which("perf"):
        command = ["perf", "stat", "-x,", "-e", "syscalls:sys_enter_*", "-p", str(pid),
                   "-o", out, "--", "sleep", str(seconds)]
    else:
        command = ["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-p", str(pid),
                   "-o", out]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_syscall_counts(path):
    counts = {}
    for line in open(path):
        perf = re.match(r"^(\d+),,syscalls:sys_enter_(\w+),", line)
        strace = re.match(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if perf and int(perf.group(1)) > 0:
            counts[perf.group(2)] = int(perf.group(1))
        elif strace and strace.group(2) != "total":
            counts[strace.group(2)] = int(strace.group(1))
    return counts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--pids", required=True)
    parser.add_argument("--syscalls", type=float, default=0)
    parser.add_argument("--rate", type=float, default=0, help="requests/s, for --syscalls")
    parser.add_argument("load", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    pids = [int(p) for p in args.pids.split(",")]
    load = args.load[1:] if args.load[:1] == ["--"] else args.load
    before = [(cpu_seconds(p), switches(p)) for p in pids]
    tracers, workdir = [], tempfile.mkdtemp()
    process = subprocess.Popen(load)
    if args.syscalls > 0:
        time.sleep(0.5)  # past the connection set-up
        for i, pid in enumerate(pids):
            tracers.append(start_syscall_count(pid, args.syscalls, f"{workdir}/{i}"))
    if process.wait() != 0:
        sys.exit(f"node-cost: the load failed: {' '.join(load)}")
    after = [(cpu_seconds(p), switches(p)) for p in pids]
    cpu = sum(a[0] - b[0] for a, b in zip(after, before))
    ctx = sum(a[1] - b[1] for a, b in zip(after, before))
    parts = [f"cpu_us_per_request={cpu * 1e6 / args.requests:.0f}",
             f"ctx_per_request={ctx / args.requests:.2f}"]
    for i, tracer in enumerate(tracers):
        tracer.wait()
        counts = read_syscall_counts(f"{workdir}/{i}")
        requests = args.rate * args.syscalls
        total = sum(counts.values())
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
        parts.append(f"syscalls_per_request_node{i + 1}={total / requests:.2f}")
        parts.append(f"top_node{i + 1}=" + ",".join(f"{k}:{v / requests:.2f}" for k, v in top))
    print(" ".join(parts))


if __name__ == "__main__":
    main()
