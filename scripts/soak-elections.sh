#!/usr/bin/env bash
# Spurious elections under load: a local three-node cluster (keel dev, default election
# and heartbeat settings) takes acks=quorum writes of 1 KiB at a steady rate for a while;
# every group's term is read before and after. A term that moved means an election
# happened without any node failing: the target is none.
#
#   scripts/soak-elections.sh [MINUTES=10] [RATE=5000] [DATA_DIR=keel-soak-data]
#
# RATE 0 makes it an idle run. Leader changes logged by the nodes are in
# bench-results/soak-dev.log.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
rate=${2:-5000}
dir=${3:-keel-soak-data}
out=bench-results
cargo build --release --quiet
keel=target/release/keel
mkdir -p "$out"
rm -rf "$dir"
KEEL_LOG=info "$keel" dev --data-dir "$dir" --port 9800 --shards 2 >"$out/soak-dev.log" 2>&1 &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null || true' EXIT
bootstrap=127.0.0.1:9800,127.0.0.1:9810,127.0.0.1:9820
sleep 3
# Warm up: the topic exists and every group has a leader before the first reading.
"$keel" bench produce --bootstrap "$bootstrap" --topic soak --rate 100 --duration 2s \
    --hgrm "$out/soak-warmup.hgrm" >/dev/null
terms() { "$keel" cluster status --bootstrap "$bootstrap" | awk '$3 == "leader" {print "group", $1, "leader", $2, "term", $5}' | sort; }
before=$(terms)
echo "before:"; echo "$before"
if [ "$rate" -gt 0 ]; then
    "$keel" bench produce --bootstrap "$bootstrap" --topic soak --rate "$rate" \
        --duration "${minutes}m" --hgrm "$out/soak-${rate}.hgrm" | tail -2
else
    sleep $((minutes * 60))
fi
after=$(terms)
echo "after:"; echo "$after"
if [ "$before" = "$after" ]; then
    echo "no elections in ${minutes} min at ${rate} writes/s"
else
    echo "ELECTIONS HAPPENED in ${minutes} min at ${rate} writes/s (see $out/soak-dev.log)"
    exit 1
fi
