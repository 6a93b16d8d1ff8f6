#!/usr/bin/env bash
# Single-node produce benchmark, with the CommitLog's own latency measured in the same run.
#
#   scripts/bench-produce.sh [DATA_DIR]
#
# Starts `keel broker` (1 shard, port 9790) on DATA_DIR (default ./keel-bench-data), then:
#   1. keel bench log     : append-to-durable at 10,000/s of 1 KiB (the CommitLog alone)
#   2. keel bench produce : open loop at 10,000 requests/s, 1 record of 1 KiB each
#   3. keel bench produce : closed loop, 1 request in flight (the unloaded round trip)
#   4. keel bench produce : closed loop, 256 requests in flight (maximum throughput)
# acks=quorum (one voter: durable on the leader), fsync: fdatasync per flush.
# Target: open-loop p99 within 2x the CommitLog's p99 at the same rate.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-keel-bench-data}
out=bench-results
port=9790
cargo build --release --quiet
keel=target/release/keel
rm -rf "$dir/broker"
mkdir -p "$dir" "$out"
"$keel" broker --data-dir "$dir/broker" --port "$port" --shards 1 >"$out/broker.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.1
done
"$keel" bench log --dir "$dir" --throughput-bytes 0 --rate 10000 --duration 10s \
    --hgrm "$out/log-10k.hgrm" >"$out/log-10k.txt"
"$keel" bench produce --bootstrap 127.0.0.1:$port --rate 10000 --duration 10s \
    --hgrm "$out/produce-open-10k.hgrm" >"$out/produce-open-10k.txt"
"$keel" bench produce --bootstrap 127.0.0.1:$port --rate 0 --window 1 --duration 5s \
    --hgrm "$out/produce-closed-1.hgrm" >"$out/produce-closed-1.txt"
"$keel" bench produce --bootstrap 127.0.0.1:$port --rate 0 --window 256 --duration 10s \
    --hgrm "$out/produce-max.hgrm" >"$out/produce-max.txt"
python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def value(name, key):
    return float(re.search(key + r"=([0-9.]+)", open(f"{out}/{name}.txt").read()).group(1))
log_p99 = value("log-10k", "latency_p99_us")
open_p50, open_p99, open_p999 = (value("produce-open-10k", k) for k in ("p50_us", "p99_us", "p999_us"))
print("single node, 1 shard, acks=quorum, fsync: fdatasync per flush, 1 KiB records")
print(f"  CommitLog append-to-durable at 10k/s: p50 {value('log-10k', 'latency_p50_us'):.0f} us, p99 {log_p99:.0f} us")
print(f"  produce open loop at 10k/s: p50 {open_p50:.0f} us, p99 {open_p99:.0f} us, p99.9 {open_p999:.0f} us"
      f"  -> p99 = {open_p99 / log_p99:.2f}x the log's (target <= 2x)")
print(f"  produce closed loop, 1 in flight: p50 {value('produce-closed-1', 'p50_us'):.0f} us")
print(f"  produce max throughput (256 in flight): {value('produce-max', 'records_per_s'):.0f} records/s,"
      f" p50 {value('produce-max', 'p50_us'):.0f} us")
PY
