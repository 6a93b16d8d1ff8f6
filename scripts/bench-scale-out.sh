#!/usr/bin/env bash
# Capacity grows with nodes: the same load on a 3-node and on a 6-node cluster (one shard
# per node, 3 replicas per data group), and the bytes each node wrote to its disk
# (/proc/PID/io write_bytes of each node process over the run).
#
# Load: $TOPICS topics (default 6), each written by its own `keel bench produce` at
# $RATE requests/s (default 500) of one 4 KiB record, acks=quorum (fsync on every flush),
# for $SECONDS_PER_RUN seconds (default 20). A topic's partition lands on one data group;
# with 6 nodes each group is on 3 of them, so each node should write about half of what
# it writes in the 3-node cluster.
#
# Usage: scripts/bench-scale-out.sh [data-dir]   (the directory is removed afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
KEEL=target/release/keel
DATA=${1:-keel-bench-scale-out}
TOPICS=${TOPICS:-6}
RATE=${RATE:-500}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
PORT=${PORT:-19700}

run() {
  local nodes=$1
  local dir="$DATA/nodes-$nodes"
  rm -rf "$dir"
  "$KEEL" dev --nodes "$nodes" --shards 1 --replication-factor 3 --port "$PORT" \
    --data-dir "$dir" 2>"$dir.log" &
  local dev=$!
  local bootstrap
  bootstrap=$(seq 1 "$nodes" | awk -v p="$PORT" '{printf "%s127.0.0.1:%d", (NR>1?",":""), p+10*($1-1)}')
  for _ in $(seq 1 100); do
    "$KEEL" topic list --bootstrap "$bootstrap" >/dev/null 2>&1 && break
    sleep 0.2
  done
  for t in $(seq 1 "$TOPICS"); do
    "$KEEL" topic create "scale-$t" --partitions 1 --bootstrap "$bootstrap" >/dev/null
  done
  sleep 2
  local pids
  pids=$(pgrep -f -- "--data-dir $dir/node-" | sort -n)
  declare -A before
  for pid in $pids; do
    before[$pid]=$(awk '/^write_bytes/ {print $2}' "/proc/$pid/io")
  done
  local benches=()
  for t in $(seq 1 "$TOPICS"); do
    "$KEEL" bench produce --bootstrap "$bootstrap" --topic "scale-$t" --rate "$RATE" \
      --duration "${SECONDS_PER_RUN}s" --record-bytes 4KiB --acks quorum \
      --hgrm "$dir-scale-$t.hgrm" >"$dir-bench-$t.txt" 2>&1 &
    benches+=($!)
  done
  for b in "${benches[@]}"; do wait "$b" || true; done
  local total=0
  local line="nodes=$nodes written_mib_per_node:"
  for pid in $pids; do
    local after
    after=$(awk '/^write_bytes/ {print $2}' "/proc/$pid/io")
    local mib=$(((after - before[$pid]) >> 20))
    total=$((total + mib))
    line="$line $mib"
  done
  local count
  count=$(echo "$pids" | wc -w)
  echo "$line mean=$((total / count)) MiB"
  grep -h "^result" "$dir"-bench-*.txt | sed "s/^/  nodes=$nodes /"
  kill -TERM "$dev"
  wait "$dev" || true
}

mkdir -p "$DATA"
echo "keel bench scale-out: $TOPICS topics x $RATE requests/s x 4 KiB, acks=quorum, fsync per flush, ${SECONDS_PER_RUN}s per run"
run 3
run 6
rm -rf "$DATA"
