#!/usr/bin/env bash
# Two builds of keel compared in the same minutes: what a request costs each.
#
#   scripts/ab-cost.sh OLD_KEEL NEW_KEEL [ROUNDS=2] [DIR=/tmp/keel-ab]
#
# Alternates the two binaries ROUNDS times (this host's speed drifts by ±30% within
# minutes, so only runs alternated in the same minutes compare). Each run starts a fresh
# `keel dev` (three nodes, one shard each), warms it up, then reports: the nodes' CPU µs,
# context switches and the whole host's CPU µs per request at 2,000 requests/s (1 KiB,
# acks=quorum, scripts/node-cost.py), the closed-loop p50 (1 request in flight), the open
# loop p99 at 20,000/s and the max throughput (256 in flight); then syscalls per request
# per node in a run of their own.
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); rounds=${3:-2}; dir=${4:-/tmp/keel-ab}
cd "$(dirname "$0")/.."
bootstrap=127.0.0.1:9900,127.0.0.1:9910,127.0.0.1:9920

one() {
    local bin=$1 label=$2 run=$dir/$2
    rm -rf "$run"; mkdir -p "$run"
    "$bin" dev --data-dir "$run/cluster" --port 9900 >"$run/dev.log" 2>&1 &
    local dev=$!
    sleep 2.5
    local nodes; nodes=$(pgrep -d, -P "$dev")
    local produce=("$bin" bench produce --bootstrap "$bootstrap")
    "${produce[@]}" --rate 2000 --duration 3s >/dev/null
    local cost closed tail20k max syscalls
    cost=$(python3 scripts/node-cost.py --requests 20000 --pids "$nodes" -- \
        "${produce[@]}" --rate 2000 --duration 10s | grep -o "[a-z_]*per_request=[0-9.]*" | tr '\n' ' ')
    closed=$("${produce[@]}" --rate 0 --window 1 --duration 5s | grep -oE "p50[^,]*" | head -1)
    tail20k=$("${produce[@]}" --rate 20000 --duration 5s | grep -oE "p99[^,]*" | head -1)
    max=$("${produce[@]}" --rate 0 --window 256 --duration 5s | grep -oE "[0-9.]+ records/s" | head -1)
    syscalls=$(python3 scripts/node-cost.py --requests 10000 --pids "$nodes" --syscalls 3 --rate 2000 -- \
        "${produce[@]}" --rate 2000 --duration 5s | grep -oE "(syscalls_per_request|top)_node[0-9]=[^ ]*" | tr '\n' ' ')
    echo "$label: $cost| closed $closed | 20k $tail20k | max $max | $syscalls"
    kill "$dev"; wait "$dev" 2>/dev/null || true
}

for round in $(seq 1 "$rounds"); do
    echo "round $round of $rounds" >&2
    one "$old" old
    one "$new" new
done
