#!/usr/bin/env bash
# ops/windows/build.sh [--out DIR] [--release]: cross-builds conclave.exe and conclavectl.exe
# for x86_64-pc-windows-gnu on this Debian machine and copies them into DIR (default
# /var/tmp/conclave-windows). Installs the toolchain and makes the Wine prefix when missing
# (toolchain.sh).
#
# Debug (the dev profile) by default: CI runs these under Wine for the 3-node test, where speed
# of the code does not matter but build time does (the dev profile shares every dependency with
# unit-tests.sh's test binaries and already optimises the hot crates: argon2, sha2, scrypt,
# tantivy); --release builds the `dist` profile (fat LTO) for a bundle.
set -euo pipefail
OUT=/var/tmp/conclave-windows
PROFILE=dev
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --release) PROFILE=dist; shift ;;
        *) echo "usage: $0 [--out DIR] [--release]" >&2; exit 2 ;;
    esac
done
# shellcheck source=ops/windows/toolchain.sh
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
started=$(date +%s)
win_step "cargo build ($PROFILE) for $WIN_TRIPLE"
(cd "$WIN_ROOT" && cargo build "${WIN_CARGO_FLAGS[@]}" --profile "$PROFILE" --locked \
    -p node --bin conclave -p ops --bin conclavectl)
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
mkdir -p "$OUT"
for exe in conclave.exe conclavectl.exe; do
    cp "$WIN_TARGET_DIR/$WIN_TRIPLE/$dir/$exe" "$OUT/$exe.new"
    mv "$OUT/$exe.new" "$OUT/$exe"
done
win_step "built $OUT/conclave.exe and conclavectl.exe in $(($(date +%s) - started)) s"
