#!/usr/bin/env bash
# Builds the previous release's `conclave` and `conclavectl` (the commit named in
# chaos-tests/upgrade-from) for the rolling-upgrade test, once: from this clone's own git history
# (no network), with a target dir outside the clone, installed atomically into
# $CHAOS_UPGRADE_CACHE/<commit>/ (default /var/tmp/conclave-upgrade). A no-op when the binaries
# are there; concurrent callers serialize on a lock. Prints the install directory on stdout.
# (The variable is not CONCLAVE_*: `conclave` reads every CONCLAVE_* variable as a config key.)
#
# Usage: chaos-tests/upgrade/build-previous.sh [COMMIT]
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${CHAOS_UPGRADE_CACHE:-/var/tmp/conclave-upgrade}"
spec="${1:-$(grep -v '^[[:space:]]*#' "$repo/chaos-tests/upgrade-from" | grep -m1 -E '[0-9a-f]{7,40}')}"
commit="$(git -C "$repo" rev-parse --verify "${spec}^{commit}")"
dest="$cache/$commit"

installed() { [ -x "$dest/conclave" ] && [ -x "$dest/conclavectl" ]; }
if installed; then echo "$dest"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
# Another caller may have finished while we waited for the lock.
if installed; then echo "$dest"; exit 0; fi

src="$(mktemp -d "$cache/src-${commit:0:12}.XXXXXX")"
stage="$(mktemp -d "$cache/.stage-${commit:0:12}.XXXXXX")"
trap 'rm -rf "$src" "$stage"' EXIT

git -C "$repo" archive "$commit" | tar -x -C "$src"
start=$SECONDS
# Debug profile: what the tests use, and the quickest cold build. One shared target dir for every
# previous release so dependencies stay compiled between release bumps. `--locked`: the commit's
# own Cargo.lock, nothing resolved anew (there is no registry to resolve against offline).
CARGO_TARGET_DIR="$cache/target" cargo build --locked --quiet \
  --manifest-path "$src/Cargo.toml" -p node -p ops --bin conclave --bin conclavectl >&2
cp "$cache/target/debug/conclave" "$cache/target/debug/conclavectl" "$stage/"
# Publish atomically: the test only ever sees a complete directory.
mv -T "$stage" "$dest"
echo "build-previous: built ${commit:0:12} in $((SECONDS - start))s into $dest" >&2
echo "$dest"
