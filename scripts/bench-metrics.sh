#!/usr/bin/env bash
# What the metrics cost: a build without them, and this one without and with scrapes, in
# the same minutes.
#
#   scripts/bench-metrics.sh OLD_KEEL NEW_KEEL [ROUNDS=3] [DIR=/tmp/keel-metrics-ab]
#
# OLD_KEEL: a build from before the metrics (they count on every request, always on);
# NEW_KEEL: this one. Each round runs, each on a fresh `keel dev` (three nodes, one shard
# each, 1 KiB records, one per request, acks=quorum, every flush synced): the old build;
# the new one unscraped; the new one with its three /metrics endpoints scraped every
# second (five times what a 5 s Prometheus interval costs). Each run reports the nodes'
# CPU µs per request at 20,000 requests/s open loop (scripts/node-cost.py), that run's p99,
# and the maximum throughput (256 requests in flight). Prints each run, then the medians.
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); rounds=${3:-3}; dir=${4:-/tmp/keel-metrics-ab}
cd "$(dirname "$0")/.."
port=11700
bootstrap=127.0.0.1:$port,127.0.0.1:$((port + 10)),127.0.0.1:$((port + 20))
results=$dir/results
mkdir -p "$dir"; : >"$results"

scrape_loop() {
    while true; do
        for p in $((port + 200)) $((port + 210)) $((port + 220)); do
            curl -s -o /dev/null "http://127.0.0.1:$p/metrics" || true
        done
        sleep 1
    done
}

one() {
    local bin=$1 label=$2 scrape=$3 run=$dir/$2
    rm -rf "$run"; mkdir -p "$run"
    "$bin" dev --data-dir "$run/cluster" --port "$port" >"$run/dev.log" 2>&1 &
    local dev=$! scraper=""
    sleep 3
    local nodes; nodes=$(pgrep -d, -P "$dev")
    local produce=("$bin" bench produce --bootstrap "$bootstrap" --hgrm "$run/latency.hgrm")
    "${produce[@]}" --rate 2000 --duration 3s >/dev/null
    if [ "$scrape" = yes ]; then scrape_loop & scraper=$!; fi
    local out cpu p99 max
    out=$(python3 scripts/node-cost.py --requests 200000 --pids "$nodes" -- \
        "${produce[@]}" --rate 20000 --duration 10s)
    cpu=$(grep -oE "^cpu_us_per_request=[0-9.]+|[ ]cpu_us_per_request=[0-9.]+" <<<"$out" | head -1 | cut -d= -f2)
    p99=$(grep -oE "p99_us=[0-9]+" <<<"$out" | head -1 | cut -d= -f2)
    max=$("${produce[@]}" --rate 0 --window 256 --duration 10s | grep -oE "records_per_s=[0-9]+" | cut -d= -f2)
    if [ -n "$scraper" ]; then kill "$scraper"; wait "$scraper" 2>/dev/null || true; fi
    echo "$label cpu_us=$cpu p99_us=$p99 max=$max" | tee -a "$results"
    kill "$dev"; wait "$dev" 2>/dev/null || true
    rm -rf "$run/cluster"
}

for round in $(seq 1 "$rounds"); do
    echo "round $round of $rounds" >&2
    one "$old" old no
    one "$new" new no
    one "$new" new+scrape yes
done

python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, *pairs = line.split()
    runs.setdefault(label, []).append(dict(p.split("=") for p in pairs))
print("medians (rounds in brackets):")
for label, rows in runs.items():
    cells = []
    for key in ("cpu_us", "p99_us", "max"):
        values = [float(r[key]) for r in rows if r.get(key)]
        if values:
            cells.append(f"{key} {statistics.median(values):.0f} ({', '.join(f'{v:.0f}' for v in values)})")
    print(f"  {label}: " + "; ".join(cells))
PY
