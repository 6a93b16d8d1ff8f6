#!/usr/bin/env bash
# Fail-over time of a local three-node cluster: the partition leader is killed with
# SIGKILL 20 times (or $1) while a producer writes with acks=quorum; each time runs from
# the kill to the first write acknowledged by the new leader. Prints every time, p50, max.
# Targets: p50 under 300 ms, max under 1 s, with default settings.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
target/release/keel bench failover --kills "${1:-20}" --data-dir "${2:-keel-bench-failover}"
