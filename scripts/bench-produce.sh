#!/usr/bin/env bash
# Single-node produce benchmark, with the CommitLog's own latency measured in the same run.
#
#   scripts/bench-produce.sh [DATA_DIR] [ROUNDS]
#
# Starts `keel broker` (1 shard, port 9790) on DATA_DIR (default ./keel-bench-data), then
# ROUNDS times (default 3), alternating:
#   1. keel bench log     : append-to-durable at 10,000/s of 1 KiB (the CommitLog alone)
#   2. keel bench produce : open loop at 10,000 requests/s, 1 record of 1 KiB each
# and once:
#   3. keel bench produce : closed loop, 1 request in flight (the unloaded round trip)
#   4. keel bench produce : closed loop, 256 requests in flight (maximum throughput)
# and prints medians over the rounds.
# acks=quorum (one voter: durable on the leader), fsync: fdatasync per flush.
# Target: open-loop p99 within 2x the CommitLog's p99 at the same rate.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-keel-bench-data}
rounds=${2:-3}
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
for round in $(seq 1 "$rounds"); do
    echo "round $round of $rounds" >&2
    "$keel" bench log --dir "$dir" --throughput-bytes 0 --rate 10000 --duration 10s \
        --hgrm "$out/log-10k-$round.hgrm" >"$out/log-10k-$round.txt"
    "$keel" bench produce --bootstrap 127.0.0.1:$port --rate 10000 --duration 10s \
        --hgrm "$out/produce-open-10k-$round.hgrm" >"$out/produce-open-10k-$round.txt"
done
"$keel" bench produce --bootstrap 127.0.0.1:$port --rate 0 --window 1 --duration 5s \
    --hgrm "$out/produce-closed-1.hgrm" >"$out/produce-closed-1.txt"
"$keel" bench produce --bootstrap 127.0.0.1:$port --rate 0 --window 256 --duration 10s \
    --hgrm "$out/produce-max.hgrm" >"$out/produce-max.txt"
python3 - "$out" "$rounds" <<'PY'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def value(name, key):
    return float(re.search(key + r"=([0-9.]+)", open(f"{out}/{name}.txt").read()).group(1))
m = statistics.median
runs = range(1, rounds + 1)
log_p50 = [value(f"log-10k-{r}", "latency_p50_us") for r in runs]
log_p99 = [value(f"log-10k-{r}", "latency_p99_us") for r in runs]
open_p50 = [value(f"produce-open-10k-{r}", "p50_us") for r in runs]
open_p99 = [value(f"produce-open-10k-{r}", "p99_us") for r in runs]
open_p999 = [value(f"produce-open-10k-{r}", "p999_us") for r in runs]
ratios = [p / l for p, l in zip(open_p99, log_p99)]
print(f"single node, 1 shard, acks=quorum, fsync: fdatasync per flush, 1 KiB records; medians of {rounds} rounds")
print(f"  CommitLog append-to-durable at 10k/s: p50 {m(log_p50):.0f} us, p99 {m(log_p99):.0f} us")
print(f"  produce open loop at 10k/s: p50 {m(open_p50):.0f} us, p99 {m(open_p99):.0f} us, p99.9 {m(open_p999):.0f} us")
print(f"  produce p99 / log p99 per round: " + ", ".join(f"{r:.2f}" for r in ratios)
      + f"; median {m(ratios):.2f}x (target <= 2x)")
print(f"  produce closed loop, 1 in flight: p50 {value('produce-closed-1', 'p50_us'):.0f} us")
print(f"  produce max throughput (256 in flight): {value('produce-max', 'records_per_s'):.0f} records/s,"
      f" p50 {value('produce-max', 'p50_us'):.0f} us")
PY
