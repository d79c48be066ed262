#!/usr/bin/env bash
# ops/windows/unit-tests.sh [-- TEST ARGS]: runs the `cluster` and `ops` crates' unit tests
# (their lib targets) built for x86_64-pc-windows-gnu, under Wine (cargo's runner, set by
# toolchain.sh as an environment variable, so Linux builds are untouched). Extra arguments go to
# the test binaries (a name filter, --test-threads N, ...).
set -euo pipefail
# shellcheck source=ops/windows/toolchain.sh
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
started=$(date +%s)
win_step "cargo test --lib -p cluster -p ops for $WIN_TRIPLE, under Wine"
(cd "$WIN_ROOT" && cargo test "${WIN_CARGO_FLAGS[@]}" --locked --lib -p cluster -p ops -- "$@")
win_step "Wine unit tests passed in $(($(date +%s) - started)) s"
