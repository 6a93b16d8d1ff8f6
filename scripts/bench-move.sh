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
# at most the peer frame limit, paced at $LEARNER_RATE per second, default 8MiB).
#
# $ROUNDS rounds (default 3), each on a fresh cluster: prints per round the group's
# size, the move's time, both latency rows (p50/p90/p99/p99.9) and the p99 ratio, then
# the medians over the rounds (the lower middle value for an even count).
# Usage: scripts/bench-move.sh [data-dir]   (the directory is removed afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
KEEL=target/release/keel
DATA=${1:-keel-bench-move}
FILL_SECONDS=${FILL_SECONDS:-3}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-500}
PROBE_SECONDS=${PROBE_SECONDS:-30}
PORT=${PORT:-19800}
LEARNER_RATE=${LEARNER_RATE:-8MiB}
BOOTSTRAP="127.0.0.1:$PORT,127.0.0.1:$((PORT + 10)),127.0.0.1:$((PORT + 20)),127.0.0.1:$((PORT + 30))"

probe() {
  "$KEEL" bench produce --bootstrap "$BOOTSTRAP" --topic moving --rate "$RATE" \
    --duration "${PROBE_SECONDS}s" --record-bytes 1KiB --acks quorum --hgrm "$DATA/$1.hgrm" \
    | grep '^result' | sed "s/^result/$1:/"
}
field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'; }
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# One round: a fresh cluster, the fill, the idle probe, the probe during a move.
round() {
  rm -rf "$DATA"
  mkdir -p "$DATA"
  "$KEEL" dev --nodes 4 --shards 1 --replication-factor 3 --port "$PORT" --data-dir "$DATA" \
    --learner-rate "$LEARNER_RATE" 2>"$DATA/dev.log" &
  DEV=$!
  for _ in $(seq 1 100); do
    "$KEEL" topic list --bootstrap "$BOOTSTRAP" >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$KEEL" topic create moving --partitions 1 --bootstrap "$BOOTSTRAP" >/dev/null
  sleep 2
  "$KEEL" bench produce --bootstrap "$BOOTSTRAP" --topic moving --rate 0 \
    --duration "${FILL_SECONDS}s" --record-bytes 32KiB --records-per-request 8 --window 8 \
    --hgrm "$DATA/fill.hgrm" >/dev/null

  # The group holding the topic: the data group whose log grew the most.
  STATUS=$("$KEEL" cluster status --bootstrap "$BOOTSTRAP")
  GROUP=$(echo "$STATUS" | awk '$3 == "leader" && $1 != 0 {print $8, $1}' | sort -n | tail -1 | awk '{print $2}')
  LEADER=$(echo "$STATUS" | awk -v g="$GROUP" '$1 == g && $3 == "leader" {print $2}')
  MEMBERS=$(echo "$STATUS" | awk -v g="$GROUP" '$1 == g {print $2}' | sort -n | tr '\n' ' ')
  FROM=$(echo "$STATUS" | awk -v g="$GROUP" '$1 == g && $3 == "follower" {print $2}' | head -1)
  TO=$(for n in 1 2 3 4; do echo "$MEMBERS" | grep -qw "$n" || echo "$n"; done | head -1)
  SIZE=$(du -sm "$DATA/node-$LEADER/group-$GROUP" | cut -f1)

  IDLE=$(probe idle)
  probe during-move > "$DATA/during.txt" &
  PROBE=$!
  sleep 2
  START=$(date +%s.%N)
  "$KEEL" cluster move --group "$GROUP" --from "$FROM" --to "$TO" --bootstrap "$BOOTSTRAP" \
    > "$DATA/move.txt"
  END=$(date +%s.%N)
  wait $PROBE
  DURING=$(cat "$DATA/during.txt")
  kill -TERM "$DEV" 2>/dev/null || true
  wait "$DEV" 2>/dev/null || true
  DEV=
  MOVE_SECONDS=$(echo "$END - $START" | bc)
  echo "round $1: group $GROUP ($SIZE MiB on its leader, node $LEADER) moved from node $FROM to node $TO in ${MOVE_SECONDS} s"
  echo "  $IDLE"
  echo "  $DURING"
  for value in "$(field "$IDLE" p99_us)" "$(field "$DURING" p99_us)" "$(field "$DURING" errors)"; do
    if [ -z "$value" ]; then
      echo "round $1: a probe printed no result" >&2
      exit 1
    fi
  done
  RATIO=$(echo "scale=2; $(field "$DURING" p99_us) / $(field "$IDLE" p99_us)" | bc)
  echo "  p99 during / idle: $RATIO"
  echo "$SIZE $MOVE_SECONDS $(field "$IDLE" p99_us) $(field "$DURING" p99_us) $RATIO $(field "$DURING" errors)" >> "$ROWS"
}

if [ "$ROUNDS" -lt 1 ]; then
  echo "ROUNDS must be at least 1" >&2
  exit 2
fi
ROWS=$(mktemp)
DEV=
trap '{ test -n "$DEV" && kill -TERM $DEV && wait $DEV; } 2>/dev/null || true; rm -rf "$DATA" "$ROWS"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  round "$r"
done
col() { awk -v c="$1" '{print $c}' "$ROWS" | median; }
echo "result rounds=$ROUNDS group_mib=$(col 1) move_seconds=$(col 2) idle_p99_us=$(col 3) during_p99_us=$(col 4) p99_ratio=$(col 5) (medians) during_errors_max=$(awk '{print $6}' "$ROWS" | sort -n | tail -1)"
