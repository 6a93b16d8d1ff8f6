#!/usr/bin/env bash
# With and without: for a few kernel settings this machine can change, run the same
# produce benchmark against a local three-node cluster (keel dev, acks=quorum, fsync per
# flush, 1 KiB records) with the usual default and the recommended value, alternating,
# and print p50/p99 of a
# closed loop (1 in flight) and of an open loop at 5,000 requests/s. Needs root (it
# writes sysctls and sysfs files) and restores every value it changed, even on failure.
#
#   tuning/measure.sh [ROUNDS=2] [DATA_DIR=keel-tune-measure]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
dir=${2:-keel-tune-measure}
cargo build --release --quiet
keel=target/release/keel
bootstrap=127.0.0.1:9950,127.0.0.1:9960,127.0.0.1:9970

# name|file(s)|usual default|recommended
settings=(
  "net.ipv4.tcp_autocorking|/proc/sys/net/ipv4/tcp_autocorking|1|0"
  "net.core.busy_poll+busy_read|/proc/sys/net/core/busy_poll,/proc/sys/net/core/busy_read|0|50"
  "transparent_hugepage|/sys/kernel/mm/transparent_hugepage/enabled|always|madvise"
)
declare -A saved
for entry in "${settings[@]}"; do
  IFS='|' read -r _ files _ _ <<<"$entry"
  for f in ${files//,/ }; do
    saved[$f]=$(sed -E 's/.*\[([a-z]+)\].*/\1/' "$f")
  done
done
restore() {
  for f in "${!saved[@]}"; do echo "${saved[$f]}" >"$f" || true; done
  pkill -f "keel dev --data-dir $dir" 2>/dev/null || true
}
trap restore EXIT

measure() {
  rm -rf "$dir"
  "$keel" dev --data-dir "$dir" --port 9950 >/dev/null 2>&1 &
  local dev=$!
  sleep 3
  "$keel" bench produce --bootstrap "$bootstrap" --rate 1000 --duration 2s --hgrm /dev/null >/dev/null
  local closed open
  closed=$("$keel" bench produce --bootstrap "$bootstrap" --rate 0 --window 1 --duration 5s --hgrm /dev/null | grep -oE 'p50_us=[0-9]+|p99_us=[0-9]+' | tr '\n' ' ')
  open=$("$keel" bench produce --bootstrap "$bootstrap" --rate 5000 --duration 5s --hgrm /dev/null | grep -oE 'p50_us=[0-9]+|p99_us=[0-9]+' | tr '\n' ' ')
  kill "$dev"; wait "$dev" 2>/dev/null || true
  echo "closed: $closed| open 5k/s: $open"
}

for entry in "${settings[@]}"; do
  IFS='|' read -r name files usual recommended <<<"$entry"
  for round in $(seq 1 "$rounds"); do
    for value in "$usual" "$recommended"; do
      for f in ${files//,/ }; do echo "$value" >"$f"; done
      echo "$name=$value (round $round): $(measure)"
    done
  done
done
