#!/usr/bin/env bash
# Runs the deterministic simulator over N seeds (default 1000) from FIRST (default 0),
# on every core, and prints seeds/s, coverage and any failing seed with its replay command.
#
#   scripts/sim.sh 100000          # a nightly-size run
#   scripts/sim.sh 1 0x2a          # one seed (its trace: add --trace full by hand)
#   DEFECT=advance-before-append scripts/sim.sh 2000   # prove a checker finds a defect
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1000}
first=${2:-0}
cargo build --profile sim --quiet --bin keel-sim
extra=()
if [ -n "${DEFECT:-}" ]; then extra+=(--defect "$DEFECT"); fi
if [ "$seeds" = 1 ]; then
    exec target/sim/keel-sim --seed "$first" "${extra[@]}"
fi
first=$((first))
jobs=$(nproc)
per=$(( (seeds + jobs - 1) / jobs ))
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
started=$(date +%s.%N)
pids=()
for ((j = 0; j < jobs; j++)); do
    from=$((first + j * per))
    count=$(( per < seeds - j * per ? per : seeds - j * per ))
    [ "$count" -gt 0 ] || break
    target/sim/keel-sim --seeds "$count" --first "$from" --keep-going "${extra[@]}" \
        > "$dir/$j.out" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
grep -h -E "VIOLATION|reproduce" "$dir"/*.out || true
grep -h -E "^seeds with" "$dir"/*.out | head -4
failed=$(grep -h -E "seeds, [0-9]+ failed" "$dir"/*.out | sed -E 's/.*seeds, ([0-9]+) failed.*/\1/' |
    awk '{ total += $1 } END { print total + 0 }')
events=$(grep -h -E "events/seed" "$dir"/*.out | sed -E 's/.* ([0-9.]+) events\/seed.*/\1/' | head -1)
printf '%s seeds, %s failed, %.1f seeds/s (%s jobs, ~%s events/seed)\n' \
    "$seeds" "$failed" "$(awk -v n="$seeds" -v t="$elapsed" 'BEGIN { print n / t }')" "$jobs" "$events"
exit $status
