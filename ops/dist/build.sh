#!/usr/bin/env bash
# ops/dist/build.sh [--out DIR] [--profile P]: the release build and the offline bundle for
# x86_64 Linux.
#
# Builds static (glibc static-pie) `conclave` and `conclavectl` with the `dist` profile (or P:
# CI uses `ci-dist`, the same bundle without optimisation, see Cargo.toml), generates
# their shell completions and man pages from the binaries themselves, packages a .deb with
# cargo-deb (from those binaries, never a rebuild), and writes into DIR (default
# $CARGO_TARGET_DIR/bundle, emptied first):
#   conclave, conclavectl                      the static binaries
#   conclave_<version>_amd64.deb               for `dpkg -i`
#   conclave-<version>-x86_64-linux.tar.gz     the offline bundle (below)
#   SHA256SUMS                                 of the four files above
# The tarball holds conclave-<version>-x86_64-linux/ with both binaries, the .deb, docs/,
# conclave.toml (production template), systemd/, backup/ (the nightly backup service and
# timer), prometheus/ (alert rules and a Grafana dashboard), docker/, completions/, man/ and a
# SHA256SUMS of everything in it.
#
# Idempotent; uses only tracked files of the checkout (works from a clean clone); the only
# thing it installs is cargo-deb (pinned, into ~/.cargo/bin) when missing.
set -euo pipefail

TRIPLE=x86_64-unknown-linux-gnu
PROFILE=dist
CARGO_DEB_VERSION=3.8.0

usage() {
    echo "usage: $0 [--out DIR] [--profile dist|ci-dist]" >&2
    exit 2
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TARGET_DIR=$TARGET_DIR
OUT=$TARGET_DIR/bundle
while [ $# -gt 0 ]; do
    case "$1" in
        --out)
            [ $# -ge 2 ] || usage
            OUT=$2
            shift 2
            ;;
        --profile)
            [ $# -ge 2 ] || usage
            case "$2" in dist | ci-dist) PROFILE=$2 ;; *) usage ;; esac
            shift 2
            ;;
        -h | --help) usage ;;
        *) usage ;;
    esac
done

step() { echo "==> $*" >&2; }
started=$(date +%s)

# The version every artifact is named after: [workspace.package] version in Cargo.toml.
VERSION=$(awk '
    /^\[/ { section = $0 }
    section == "[workspace.package]" && $1 == "version" { gsub(/"/, "", $3); print $3; exit }
' "$ROOT/Cargo.toml")
[ -n "$VERSION" ] || { echo "build.sh: no [workspace.package] version in Cargo.toml" >&2; exit 1; }
NAME=conclave-$VERSION-x86_64-linux
DEB=conclave_${VERSION}_amd64.deb

# Timestamps inside the .deb and the tarball: the commit's time, so two builds of one commit
# produce the same archives (outside git: the epoch). Given to cargo-deb and tar only, never to
# cargo build: ring's build script reruns when SOURCE_DATE_EPOCH changes, and with it rustls
# and everything above it, at every commit.
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}

# 1. Static binaries. The explicit --target keeps build scripts and proc-macros dynamic (they
#    run on this machine); only the two binaries are linked static-pie.
step "building conclave and conclavectl (profile $PROFILE, $TRIPLE, static)"
build_started=$(date +%s)
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --locked --manifest-path "$ROOT/Cargo.toml" --profile "$PROFILE" --target "$TRIPLE" \
    -p node -p ops --bin conclave --bin conclavectl
build_secs=$(($(date +%s) - build_started))
BIN=$TARGET_DIR/$TRIPLE/$PROFILE
for b in conclave conclavectl; do
    desc=$(file -b "$BIN/$b")
    case "$desc" in
        *static-pie\ linked* | *statically\ linked*) ;;
        *)
            echo "build.sh: $BIN/$b is not static: $desc" >&2
            exit 1
            ;;
    esac
done

# 2. Completions and man pages, written by the binaries themselves (hidden `generate`
#    subcommand), into the directory cargo-deb knows as target/release/dist-gen.
step "generating completions and man pages"
GEN=$BIN/dist-gen
rm -rf "$GEN"
for b in conclave conclavectl; do
    "$BIN/$b" generate completions --out "$GEN/completions" >/dev/null
    "$BIN/$b" generate man --out "$GEN/man" >/dev/null
done
chmod 0644 "$GEN"/completions/* "$GEN"/man/*
# Debian installs man pages gzipped (policy 12.1); cargo-deb compresses only files it did not
# see built, so the .deb takes these. The bundle keeps the plain pages (`man -l` reads both).
mkdir -p "$GEN/man-gz"
for page in "$GEN"/man/*.1; do
    gzip -n -9 -c "$page" >"$GEN/man-gz/$(basename "$page").gz"
done

# 3. The .deb, from the binaries above (--no-build: cargo-deb must not rebuild them dynamic).
if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    step "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi
# Emptied and filled anew; refused if it holds something else (a typo must not wipe a folder).
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ] && [ ! -f "$OUT/.conclave-dist" ]; then
    echo "build.sh: $OUT is not empty and is not an earlier output of build.sh; refusing to clear it" >&2
    exit 1
fi
rm -rf "$OUT"
mkdir -p "$OUT"
touch "$OUT/.conclave-dist"
step "packaging $DEB"
SOURCE_DATE_EPOCH=$EPOCH cargo deb --manifest-path "$ROOT/node/Cargo.toml" --no-build --no-strip --locked \
    --target "$TRIPLE" --profile "$PROFILE" \
    --output "$OUT/$DEB" >/dev/null

# 4. The bundle directory and its tarball.
step "assembling $NAME.tar.gz"
STAGE=$OUT/.stage/$NAME
mkdir -p "$STAGE"/{docs,systemd,docker,completions,man,prometheus}
install -m 0755 "$BIN/conclave" "$BIN/conclavectl" "$STAGE/"
install -m 0644 "$OUT/$DEB" "$STAGE/"
install -m 0644 "$ROOT/README.md" "$ROOT"/docs/*.md "$STAGE/docs/"
install -m 0644 "$ROOT/ops/dist/conclave.toml" "$STAGE/"
install -m 0644 "$ROOT"/ops/dist/systemd/* "$STAGE/systemd/"
# Alert rules and the Grafana dashboard (docs/operations.md, "Monitoring").
install -m 0644 "$ROOT"/ops/dist/prometheus/* "$STAGE/prometheus/"
# Kept out of systemd/, whose units cargo-deb installs: the backup units are set up by hand.
mkdir -p "$STAGE/backup"
install -m 0644 "$ROOT"/ops/dist/backup/* "$STAGE/backup/"
# Part of the tree may not exist yet on an older checkout; whatever is there goes in.
if compgen -G "$ROOT/ops/dist/docker/*" >/dev/null; then
    cp -R "$ROOT"/ops/dist/docker/. "$STAGE/docker/"
fi
install -m 0644 "$GEN"/completions/* "$STAGE/completions/"
install -m 0644 "$GEN"/man/* "$STAGE/man/"
(cd "$STAGE" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
tar -C "$OUT/.stage" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="@$EPOCH" -cf - "$NAME" | gzip -n -9 >"$OUT/$NAME.tar.gz"
rm -rf "$OUT/.stage"
install -m 0755 "$BIN/conclave" "$BIN/conclavectl" "$OUT/"
(cd "$OUT" && sha256sum "$NAME.tar.gz" "$DEB" conclave conclavectl >SHA256SUMS)

total_secs=$(($(date +%s) - started))
step "done in ${total_secs}s (cargo build ${build_secs}s); $OUT:"
(cd "$OUT" && ls -l conclave conclavectl "$DEB" "$NAME.tar.gz" SHA256SUMS | awk '{ printf "  %12d  %s\n", $5, $9 }') >&2
