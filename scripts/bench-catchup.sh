#!/usr/bin/env bash
# A follower far behind catching up, seen by a steady producer (issue 11's target: no
# election started by a timeout, no error, producer p99 < 20 ms during the catch-up).
#
#   scripts/bench-catchup.sh [ROUNDS] [BACKLOG]
#
# ROUNDS times (default 3): `keel bench catchup` starts a local three-node cluster
# (loopback, one shard, leader balancing off), measures a steady producer (1,000
# records/s as 10 records every 10 ms, acks=quorum, fsync per flush, latency from each
# request's due time) for 5 s with every node up, kills a follower, writes BACKLOG
# (default 300MiB) in 1 MB requests without it, restarts it and measures the producer
# again until the follower has applied the leader's commit index (+0.5 s). Prints every
# round's result line and the medians; the histograms of each round are kept in
# bench-results/catchup-{baseline,during}-N.hgrm.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
backlog=${2:-300MiB}
out=bench-results
cargo build --release --quiet
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
    target/release/keel bench catchup --backlog "$backlog" --hgrm-dir "$out/catchup-round" \
        | tee "$out/catchup-$round.txt"
    for phase in baseline during; do
        mv "$out/catchup-round/catchup-$phase.hgrm" "$out/catchup-$phase-$round.hgrm"
    done
done
rmdir "$out/catchup-round" 2>/dev/null || true
python3 - "$out" "$rounds" <<'PY'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = []
for r in range(1, rounds + 1):
    line = [l for l in open(f"{out}/catchup-{r}.txt") if l.startswith("result ")][-1]
    rows.append({k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)})
m = lambda key: statistics.median(row[key] for row in rows)
print(f"medians of {rounds} rounds:")
rounds_p99 = ", ".join("%.1f" % row["catchup_p99_ms"] for row in rows)
print(f"  steady producer p99 during the catch-up: {m('catchup_p99_ms'):.1f} ms "
      f"(rounds: {rounds_p99}; target < 20 ms)")
print(f"  steady producer p99, every node up:     {m('baseline_p99_ms'):.1f} ms")
print(f"  ratio during/baseline: {m('catchup_p99_ms') / max(m('baseline_p99_ms'), 0.001):.1f}x")
print(f"  catch-up time: {m('catchup_s'):.1f} s; errors (sum): {sum(r['errors'] for r in rows):.0f}; "
      f"term moves (sum): {sum(r['term_moves'] for r in rows):.0f}")
PY
