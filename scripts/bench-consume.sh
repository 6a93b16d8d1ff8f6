#!/usr/bin/env bash
# A consumer group against a fresh local three-node cluster (`keel dev`, one shard each),
# ROUNDS times (default 3; report medians):
#   1. from disk: 500,000 records of 1 KiB written (acks=quorum), drained by a new group
#      of 4 members (512 MB: beyond the shard's 64 MiB tail cache, mostly read from
#      disk); then end to end at 5,000 records/s for 10 s, open loop.
#   2. from memory: 55,000 records (within the tail cache) drained 20 times, each by a
#      new group; the median of the 20 (the first few are slower: the host warms up).
# A drain runs from the moment every member has joined and heard the group's assignment
# until every record was consumed (re-reads, reported, count once).
# Each run's data directory is removed after it (the disk is not left full).
#
#   scripts/bench-consume.sh [ROUNDS=3] [DIR=/tmp/keel-bench-consume]
set -euo pipefail
rounds=${1:-3}; dir=${2:-/tmp/keel-bench-consume}
cd "$(dirname "$0")/.."
cargo build --release --quiet
keel=$(pwd)/target/release/keel

run() {
    rm -rf "$dir"; mkdir -p "$dir"
    "$keel" dev --data-dir "$dir/cluster" >"$dir/dev.log" 2>&1 &
    local dev=$!
    sleep 3
    "$keel" bench consume --hgrm "$dir/latency.hgrm" "$@" | grep -E "^(drain|end to end|result)"
    kill "$dev"; wait "$dev" 2>/dev/null || true
    rm -rf "$dir"
}

for round in $(seq "$rounds"); do
    echo "== round $round: from disk, then end to end"
    run
    echo "== round $round: from the tail cache"
    run --records 55000 --drains 20 --rate 0
done
