#!/usr/bin/env bash
# A local three-node cluster (keel dev) measured against the hardware floor, in one run.
#
#   scripts/bench-cluster.sh [DATA_DIR]
#
# Floor: loopback round trip between two processes (keel bench rtt, p50) and one 4 KiB
# O_DIRECT write + fdatasync (fio, psync, pre-written file, p50). A quorum commit seen by
# a client costs about 2 round trips + 1 synced write (the leader's own write overlaps).
# Then, acks=quorum, 1 KiB records, fsync per flush:
#   closed loop, 1 request in flight; open loop at 5,000 and 20,000 requests/s;
#   max throughput with 1 record and with 100 records per request.
# Each run writes an .hgrm file to bench-results/. Targets: closed-loop p50 <= 1.25x the
# floor; open-loop p99 at 20,000/s under 2 ms; max throughput >= 200,000 records/s.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-keel-bench-data}
out=bench-results
cargo build --release --quiet
keel=target/release/keel
mkdir -p "$dir/fio" "$out"
"$keel" bench rtt --count 20000 >"$out/rtt.txt"
fio --name=sync --directory="$dir/fio" --rw=write --bs=4k --direct=1 --ioengine=psync \
    --fdatasync=1 --overwrite=1 --size=64M --runtime=10 --time_based --output-format=json \
    >"$out/fio-sync-floor.json"
# The three nodes share this one disk: their synced writes run at the same time.
fio --name=sync3 --directory="$dir/fio" --rw=write --bs=4k --direct=1 --ioengine=psync \
    --fdatasync=1 --overwrite=1 --size=32M --runtime=10 --time_based --numjobs=3 \
    --group_reporting --output-format=json >"$out/fio-sync-floor-3.json"
rm -rf "$dir/fio" "$dir/cluster"
"$keel" dev --data-dir "$dir/cluster" --port 9900 >"$out/dev.log" 2>&1 &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null || true' EXIT
bootstrap=127.0.0.1:9900,127.0.0.1:9910,127.0.0.1:9920
sleep 2
run() { "$keel" bench produce --bootstrap "$bootstrap" "$@"; }
# CPU busy (all cores, percent) over a run: the client and the three nodes share them.
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat; }
timed() {
    local name=$1; shift
    local before after
    before=$(busy)
    run "$@" --hgrm "$out/$name.hgrm" >"$out/$name.txt"
    after=$(busy)
    echo "$before $after" | awk '{b=$3-$1; i=$4-$2; printf "cpu_busy_pct=%.0f\n", 100*b/(b+i)}' >>"$out/$name.txt"
}
timed cluster-closed-1 --rate 0 --window 1 --duration 10s
timed cluster-open-5k --rate 5000 --duration 10s
timed cluster-open-20k --rate 20000 --duration 10s
run --rate 0 --window 256 --duration 10s --hgrm "$out/cluster-max-1.hgrm" >"$out/cluster-max-1.txt"
run --rate 0 --window 64 --records-per-request 100 --duration 10s \
    --hgrm "$out/cluster-max-100.hgrm" >"$out/cluster-max-100.txt"
python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
def value(name, key):
    return float(re.search(key + r"=([0-9.]+)", open(f"{out}/{name}.txt").read()).group(1))
job = json.load(open(f"{out}/fio-sync-floor.json"))["jobs"][0]
sync = (job["write"]["clat_ns"]["percentile"]["50.000000"] + job["sync"]["lat_ns"]["percentile"]["50.000000"]) / 1e3
rtt = value("rtt", "rtt_p50_us")
floor = 2 * rtt + sync
job3 = json.load(open(f"{out}/fio-sync-floor-3.json"))["jobs"][0]
sync3 = (job3["write"]["clat_ns"]["percentile"]["50.000000"] + job3["sync"]["lat_ns"]["percentile"]["50.000000"]) / 1e3
shared_floor = 2 * rtt + sync3
closed = value("cluster-closed-1", "p50_us")
print("three local nodes (keel dev), acks=quorum, fsync per flush, 1 KiB records")
print(f"  floor: 2 x round trip {rtt:.0f} us + synced write {sync:.0f} us = {floor:.0f} us")
print(f"  (three synced writes at once, as the three nodes on one disk do: {sync3:.0f} us each;"
      f" floor with the shared disk {shared_floor:.0f} us)")
print(f"  closed loop p50 {closed:.0f} us = {closed / floor:.2f}x the floor (target <= 1.25x),"
      f" {closed / shared_floor:.2f}x the shared-disk floor; p99 {value('cluster-closed-1', 'p99_us'):.0f} us")
for name, label in (("cluster-open-5k", "5,000/s"), ("cluster-open-20k", "20,000/s")):
    print(f"  open loop {label}: p50 {value(name, 'p50_us'):.0f} us, p99 {value(name, 'p99_us'):.0f} us,"
          f" p99.9 {value(name, 'p999_us'):.0f} us = p50 {value(name, 'p50_us') / floor:.1f}x the floor;"
          f" CPU {value(name, 'cpu_busy_pct'):.0f}% busy")
print(f"  max throughput: {value('cluster-max-1', 'records_per_s'):.0f} records/s at 1 per request,"
      f" {value('cluster-max-100', 'records_per_s'):.0f} at 100 per request (target >= 200,000)")
PY
