#!/usr/bin/env bash
# Moving a replica of a large group while producers write: how long the move takes and
# what it does to the producers' latency.
#
# A local 4-node cluster (one shard per node, 3 replicas per data group: each group has
# a node to move to). Topic `moving` (one partition) is filled with $FILL_SECONDS of
# closed-loop writes of 8 x 32 KiB records per request (about 1 GiB on this host);
# then an open-loop `keel bench produce` of 1 KiB records at $RATE requests/s
# (acks=quorum, fsync on every flush) runs $PROBE_SECONDS seconds idle, and again while
# `keel cluster move` moves a follower's replica of that group to the fourth node. The
# new replica catches up from the leader (the log from its first entry, in frames of
# at most the peer frame limit, paced at $LEARNER_RATE per second, default 24MiB).
#
# Prints the group's size, the move's time and both latency rows (p50/p99/p99.9).
# Usage: scripts/bench-move.sh [data-dir]   (the directory is removed afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
KEEL=target/release/keel
DATA=${1:-keel-bench-move}
FILL_SECONDS=${FILL_SECONDS:-5}
RATE=${RATE:-500}
PROBE_SECONDS=${PROBE_SECONDS:-30}
PORT=${PORT:-19800}
LEARNER_RATE=${LEARNER_RATE:-24MiB}
BOOTSTRAP="127.0.0.1:$PORT,127.0.0.1:$((PORT + 10)),127.0.0.1:$((PORT + 20)),127.0.0.1:$((PORT + 30))"

rm -rf "$DATA"
mkdir -p "$DATA"
"$KEEL" dev --nodes 4 --shards 1 --replication-factor 3 --port "$PORT" --data-dir "$DATA" \
  --learner-rate "$LEARNER_RATE" \
  2>"$DATA/dev.log" &
DEV=$!
trap 'kill -TERM $DEV 2>/dev/null; wait $DEV 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do
  "$KEEL" topic list --bootstrap "$BOOTSTRAP" >/dev/null 2>&1 && break
  sleep 0.2
done
"$KEEL" topic create moving --partitions 1 --bootstrap "$BOOTSTRAP" >/dev/null
sleep 2
"$KEEL" bench produce --bootstrap "$BOOTSTRAP" --topic moving --rate 0 \
  --duration "${FILL_SECONDS}s" --record-bytes 32KiB --records-per-request 8 --window 8 \
  --hgrm "$DATA/fill.hgrm" | grep '^result' | sed 's/^/fill: /'

# The group holding the topic: the data group whose log grew the most.
STATUS=$("$KEEL" cluster status --bootstrap "$BOOTSTRAP")
GROUP=$(echo "$STATUS" | awk '$3 == "leader" && $1 != 0 {print $8, $1}' | sort -n | tail -1 | awk '{print $2}')
LEADER=$(echo "$STATUS" | awk -v g="$GROUP" '$1 == g && $3 == "leader" {print $2}')
MEMBERS=$(echo "$STATUS" | awk -v g="$GROUP" '$1 == g {print $2}' | sort -n | tr '\n' ' ')
FROM=$(echo "$STATUS" | awk -v g="$GROUP" '$1 == g && $3 == "follower" {print $2}' | head -1)
TO=$(for n in 1 2 3 4; do echo "$MEMBERS" | grep -qw "$n" || echo "$n"; done | head -1)
SIZE=$(du -sm "$DATA/node-$LEADER/group-$GROUP" | cut -f1)
echo "group $GROUP: $SIZE MiB on its leader (node $LEADER); members $MEMBERS; moving node $FROM's replica to node $TO"

probe() {
  "$KEEL" bench produce --bootstrap "$BOOTSTRAP" --topic moving --rate "$RATE" \
    --duration "${PROBE_SECONDS}s" --record-bytes 1KiB --acks quorum --hgrm "$DATA/$1.hgrm" \
    | grep '^result' | sed "s/^/$1: /"
}
probe idle
probe during-move &
PROBE=$!
sleep 2
START=$(date +%s.%N)
"$KEEL" cluster move --group "$GROUP" --from "$FROM" --to "$TO" --bootstrap "$BOOTSTRAP" \
  > "$DATA/move.txt"
END=$(date +%s.%N)
wait $PROBE
tail -1 "$DATA/move.txt"
MOVED=$(du -sm "$DATA/node-$TO/group-$GROUP" | cut -f1)
echo "result move_seconds=$(echo "$END - $START" | bc) group_mib=$SIZE moved_mib=$MOVED"
