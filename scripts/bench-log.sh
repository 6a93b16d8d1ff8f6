#!/usr/bin/env bash
# Measures the CommitLog against the disk's own floor, on the same disk, in one run.
#
#   scripts/bench-log.sh [DIR] [ROUNDS]
#
# DIR (default ./keel-bench-data) must be on the disk to measure. Each round runs, in turn:
#   fio  : 1 MiB O_DIRECT sequential writes (io_uring, depth 4, end fsync): bandwidth
#   keel : `keel bench log` throughput run (256 KiB entries, 16 per flush, 4 flushes in flight)
#   fio  : 4 KiB O_DIRECT write + fdatasync (psync) on a pre-written file (--overwrite=1, as
#          Keel's zero-filled segments): p50 of write + sync; and the same write with
#          O_DSYNC through io_uring (as Keel's log writes), for reference
#   keel : `keel bench log` latency run (1 KiB entries, open loop at 1000/s, 10 s)
# and prints the medians over the rounds and the ratios the targets are stated in:
#   throughput >= 70% of fio's bandwidth; append-to-durable p50 <= 1.3x fio's write+sync p50.
# Histograms (.hgrm) and raw outputs go to bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-keel-bench-data}
rounds=${2:-3}
out=bench-results
if ! command -v fio >/dev/null; then
    echo "fio is needed: apt-get install -y fio" >&2
    exit 2
fi
cargo build --release --quiet
mkdir -p "$dir" "$out"
keel=target/release/keel
for round in $(seq 1 "$rounds"); do
    echo "round $round of $rounds" >&2
    rm -rf "$dir/fio"; mkdir -p "$dir/fio"
    fio --name=seq --directory="$dir/fio" --rw=write --bs=1M --direct=1 --ioengine=io_uring \
        --iodepth=4 --size=2G --end_fsync=1 --output-format=json >"$out/fio-seq-$round.json"
    rm -rf "$dir/fio"; mkdir -p "$dir/fio"
    "$keel" bench log --dir "$dir" --throughput-bytes 2GiB --rate 0 >"$out/keel-throughput-$round.txt"
    fio --name=sync --directory="$dir/fio" --rw=write --bs=4k --direct=1 --ioengine=psync \
        --fdatasync=1 --overwrite=1 --size=64M --runtime=10 --time_based --output-format=json \
        >"$out/fio-sync-$round.json"
    # The same write made durable the way Keel's log does it: O_DSYNC, through io_uring.
    fio --name=dsync --directory="$dir/fio" --rw=write --bs=4k --direct=1 --ioengine=io_uring \
        --iodepth=1 --sync=dsync --overwrite=1 --size=64M --runtime=10 --time_based \
        --output-format=json >"$out/fio-dsync-$round.json"
    rm -rf "$dir/fio"
    "$keel" bench log --dir "$dir" --throughput-bytes 0 --rate 1000 --duration 10s \
        --entry-bytes 1KiB --hgrm "$out/log-latency-$round.hgrm" >"$out/keel-latency-$round.txt"
done
rmdir "$dir" 2>/dev/null || true
python3 - "$out" "$rounds" <<'PY'
import json, re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def keel_value(path, key):
    text = open(path).read()
    return float(re.search(key + r"=([0-9.]+)", text).group(1))
fio_bw, keel_bw, fio_p50, keel_p50, keel_p99, keel_p999, dsync_p50 = [], [], [], [], [], [], []
for r in range(1, rounds + 1):
    seq = json.load(open(f"{out}/fio-seq-{r}.json"))["jobs"][0]["write"]
    fio_bw.append(seq["bw_bytes"] / 1e6)
    job = json.load(open(f"{out}/fio-sync-{r}.json"))["jobs"][0]
    write_p50 = job["write"]["clat_ns"]["percentile"]["50.000000"] / 1e3
    sync_p50 = job["sync"]["lat_ns"]["percentile"]["50.000000"] / 1e3
    fio_p50.append(write_p50 + sync_p50)
    dsync = json.load(open(f"{out}/fio-dsync-{r}.json"))["jobs"][0]["write"]
    dsync_p50.append(dsync["clat_ns"]["percentile"]["50.000000"] / 1e3)
    keel_bw.append(keel_value(f"{out}/keel-throughput-{r}.txt", "throughput_mb_per_s"))
    latency = f"{out}/keel-latency-{r}.txt"
    keel_p50.append(keel_value(latency, "latency_p50_us"))
    keel_p99.append(keel_value(latency, "latency_p99_us"))
    keel_p999.append(keel_value(latency, "latency_p999_us"))
m = statistics.median
print(f"medians over {rounds} rounds (acks: n/a; Keel's writes are O_DSYNC)")
print(f"  fio 1 MiB O_DIRECT sequential write bandwidth: {m(fio_bw):8.0f} MB/s")
print(f"  keel append throughput (durable):              {m(keel_bw):8.0f} MB/s"
      f"  = {m(keel_bw) / m(fio_bw):.0%} of fio (target >= 70%)")
print(f"  fio 4 KiB O_DIRECT write + fdatasync p50:     {m(fio_p50):8.0f} us")
print(f"  fio 4 KiB O_DIRECT|O_DSYNC write p50 (io_uring): {m(dsync_p50):8.0f} us")
print(f"  keel append-to-durable p50, 1 KiB @ 1000/s:    {m(keel_p50):8.0f} us"
      f"  = {m(keel_p50) / m(fio_p50):.2f}x fio (target <= 1.3x)")
print(f"  keel append-to-durable p99 / p99.9:            {m(keel_p99):8.0f} / {m(keel_p999):.0f} us")
print("  per round: bw " + ", ".join(f"{k:.0f}/{f:.0f}" for k, f in zip(keel_bw, fio_bw))
      + "; p50 " + ", ".join(f"{k:.0f}/{f:.0f}" for k, f in zip(keel_p50, fio_p50)) + " (keel/fio)")
PY
