#!/usr/bin/env bash
# What security costs: a plain local cluster (keel dev) and two secure ones alternated, in
# the same minutes. Both secure clusters give the client TLS and SCRAM-SHA-256 as a user of
# its own whose every request is checked against an access rule; between the three nodes,
# one speaks mutual TLS (keel dev --secure: every record encrypted on three links) and the
# other proves the shared secret and sends its traffic unencrypted (keel dev --secure
# --peer-security secret: the client's link alone is encrypted).
#
#   scripts/bench-tls.sh [ROUNDS=3] [DATA_DIR=keel-bench-tls]
#
# Each round, on a fresh cluster of each kind (acks=quorum, 1 KiB records, every flush
# synced): closed loop with 1 request in flight (p50), max throughput with 1 record per
# request (256 in flight) and with 100 per request (64 in flight). Prints the medians and
# TLS+SCRAM against plain. Targets (issue 13): closed-loop p50 within +15%,
# max throughput within -10%. scripts/bench-cluster.sh runs it after its own rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
dir=${2:-keel-bench-tls}
out=bench-results
cargo build --release --quiet
keel=target/release/keel
mkdir -p "$out"
bootstrap=127.0.0.1:9900,127.0.0.1:9910,127.0.0.1:9920
dev=
trap 'if [ -n "$dev" ]; then kill $dev 2>/dev/null; wait $dev 2>/dev/null || true; fi; rm -rf "$dir"' EXIT

one() {
    local mode=$1 round=$2 flags=() tls=()
    rm -rf "$dir"
    case $mode in
        tls) flags=(--secure) ;;
        tls-client) flags=(--secure --peer-security secret) ;;
    esac
    "$keel" dev "${flags[@]}" --data-dir "$dir" --port 9900 >"$out/tls-dev.log" 2>&1 &
    dev=$!
    sleep 2.5
    if [ "$mode" != plain ]; then
        # A user of its own with one prefix rule, so every request is checked against
        # the rules (the superuser would skip them).
        local admin=(--bootstrap "$bootstrap" --tls-ca "$dir/tls/ca.crt" --user admin
                     --password-file "$dir/tls/admin.password")
        head -c 24 /dev/urandom | base64 >"$dir/tls/bench.password"
        "$keel" user create bench --new-password-file "$dir/tls/bench.password" "${admin[@]}" >/dev/null
        "$keel" acl add --principal bench --resource 'topic:keel-bench*' --operation all \
            "${admin[@]}" >/dev/null
        tls=(--tls-ca "$dir/tls/ca.crt" --user bench --password-file "$dir/tls/bench.password")
    fi
    local run=("$keel" bench produce --bootstrap "$bootstrap" "${tls[@]}")
    "${run[@]}" --rate 2000 --duration 3s >/dev/null
    "${run[@]}" --rate 0 --window 1 --duration 10s >"$out/tls-$mode-closed-$round.txt"
    "${run[@]}" --rate 0 --window 256 --duration 10s >"$out/tls-$mode-max-1-$round.txt"
    "${run[@]}" --rate 0 --window 64 --records-per-request 100 --duration 10s \
        >"$out/tls-$mode-max-100-$round.txt"
    kill "$dev"; wait "$dev" 2>/dev/null || true; dev=
}

for round in $(seq 1 "$rounds"); do
    echo "TLS round $round of $rounds" >&2
    # The order turns each round, so a drift within a round falls on every kind alike.
    modes=(plain tls tls-client)
    for k in 0 1 2; do
        one "${modes[(round + k) % 3]}" "$round"
    done
done
python3 - "$out" "$rounds" <<'PY'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def runs(mode, name, key):
    return [float(re.search(key + r"=([0-9.]+)", open(f"{out}/tls-{mode}-{name}-{r}.txt").read()).group(1))
            for r in range(1, rounds + 1)]
for mode, words in (("tls", "TLS and SCRAM for the client, mutual TLS between the nodes (keel dev --secure)"),
                    ("tls-client", "TLS and SCRAM for the client, the shared secret between the nodes (keel dev --secure --peer-security secret)")):
    print(f"{words} against plain, medians of {rounds} rounds, alternated")
    for name, key, label, target in (("closed", "p50_us", "closed loop p50 (us)", "+15%"),
                                      ("max-1", "records_per_s", "max records/s, 1 per request", "-10%"),
                                      ("max-100", "records_per_s", "max records/s, 100 per request", "-10%")):
        plain, tls = runs("plain", name, key), runs(mode, name, key)
        p, t = statistics.median(plain), statistics.median(tls)
        print(f"  {label}: plain {p:.0f} ({', '.join(f'{v:.0f}' for v in plain)}),"
              f" secure {t:.0f} ({', '.join(f'{v:.0f}' for v in tls)}): {100 * (t / p - 1):+.1f}% (target {target})")
PY
