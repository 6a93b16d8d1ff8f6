#!/usr/bin/env bash
# The producer's spill journal: how fast records go into it while the cluster is down,
# and how fast they are replayed once it is back. 1 KiB records, acks=quorum, fsync per
# journal append, on this machine's disk.
#
#   scripts/bench-spill.sh [RECORDS=200000] [DATA_DIR=keel-bench-spill]
#
# 1. With no broker listening (a bootstrap port nothing answers on), `keel produce
#    --spill-dir` sends RECORDS generated records: all of them go to the journal.
# 2. `keel dev` starts a local three-node cluster; `keel produce --spill-dir` with no new
#    records replays the journal and exits once it is drained.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-200000}
dir=${2:-keel-bench-spill}
cargo build --release --quiet
keel=target/release/keel
rm -rf "$dir"
mkdir -p "$dir"
now() { date +%s.%N; }

start=$(now)
"$keel" produce spill-bench --bootstrap 127.0.0.1:9 --generate "$records" --size 1KiB \
    --spill-dir "$dir/journal" --delivery-timeout 0s --drain-timeout 0s 2>"$dir/spill.log"
spilled=$(now)
"$keel" produce spill-bench --spill-dir "$dir/journal" --spill-status

"$keel" dev --data-dir "$dir/cluster" --port 9850 >"$dir/dev.log" 2>&1 &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null || true' EXIT
bootstrap=127.0.0.1:9850,127.0.0.1:9860,127.0.0.1:9870
sleep 3
"$keel" topic create spill-bench --bootstrap "$bootstrap" >/dev/null
replay_start=$(now)
"$keel" produce spill-bench --bootstrap "$bootstrap" --generate 0 --spill-dir "$dir/journal" \
    --drain-timeout 600s 2>"$dir/replay.log"
replayed=$(now)
"$keel" produce spill-bench --spill-dir "$dir/journal" --spill-status
stored=$("$keel" consume spill-bench --bootstrap "$bootstrap" | wc -l)
python3 - "$records" "$start" "$spilled" "$replay_start" "$replayed" "$stored" <<'PY'
import sys
records, start, spilled, replay_start, replayed, stored = map(float, sys.argv[1:])
print(f"spill: {records:.0f} records of 1 KiB into the journal in {spilled - start:.2f} s"
      f" = {records / (spilled - start):.0f} records/s")
print(f"replay: {stored:.0f} records into the cluster (acks=quorum) in {replayed - replay_start:.2f} s"
      f" = {stored / (replayed - replay_start):.0f} records/s")
if stored != records:
    sys.exit(f"stored {stored:.0f} records, expected {records:.0f}")
PY
