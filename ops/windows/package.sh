#!/usr/bin/env bash
# ops/windows/package.sh --exe-dir DIR [--out DIR]: the Windows zip of the offline bundle.
#
# Packs conclave.exe and conclavectl.exe from --exe-dir (what ops/windows/build.sh wrote; use
# `build.sh --release` for a site, the debug build is for CI's tests) with the installer scripts
# and config template from ops/windows/zip/, README.md and docs/, into
#   OUT/conclave-<version>-x86_64-windows.zip
# holding conclave-<version>-x86_64-windows/ and a SHA256SUMS of everything in it (install.ps1
# checks it before installing). When OUT has a SHA256SUMS (the Linux bundle's, from
# ops/dist/build.sh), the zip's line is added to it, replacing an older one.
#
# Timestamps in the zip are the commit's (outside git: 1980, zip's epoch), so two packings of
# the same files give the same zip. Needs python3's zipfile, coreutils and mingw's strip
# (ops/windows/toolchain.sh installs it).
set -euo pipefail

usage() {
    echo "usage: $0 --exe-dir DIR [--out DIR]" >&2
    exit 2
}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EXE_DIR=
OUT=/var/tmp/conclave-dist
while [ $# -gt 0 ]; do
    case "$1" in
        --exe-dir) [ $# -ge 2 ] || usage; EXE_DIR=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || usage; OUT=$2; shift 2 ;;
        *) usage ;;
    esac
done
[ -n "$EXE_DIR" ] || usage
for exe in conclave.exe conclavectl.exe; do
    [ -f "$EXE_DIR/$exe" ] || { echo "package.sh: no $exe in $EXE_DIR (ops/windows/build.sh --out $EXE_DIR)" >&2; exit 1; }
done

VERSION=$(awk '
    /^\[/ { section = $0 }
    section == "[workspace.package]" && $1 == "version" { gsub(/"/, "", $3); print $3; exit }
' "$ROOT/Cargo.toml")
[ -n "$VERSION" ] || { echo "package.sh: no [workspace.package] version in Cargo.toml" >&2; exit 1; }
NAME=conclave-$VERSION-x86_64-windows
EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 315532800)

mkdir -p "$OUT"
STAGE=$(mktemp -d "$OUT/.stage-windows.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
dir=$STAGE/$NAME
mkdir -p "$dir/docs"
# Without symbols and debug information (a debug build's are most of its size):
# a crash on site is diagnosed from the log, and the build machine keeps the unstripped files.
for exe in conclave.exe conclavectl.exe; do
    x86_64-w64-mingw32-strip --strip-all -o "$dir/$exe" "$EXE_DIR/$exe"
done
cp "$ROOT/ops/windows/zip/install.ps1" "$ROOT/ops/windows/zip/uninstall.ps1" \
    "$ROOT/ops/windows/zip/conclave.toml" "$ROOT/README.md" "$dir/"
cp "$ROOT"/docs/*.md "$dir/docs/"
# Windows tools read the text files with CRLF line ends; the scripts and docs are kept LF in git.
for f in "$dir"/*.ps1 "$dir"/conclave.toml "$dir"/README.md "$dir"/docs/*.md; do
    sed -i 's/\r*$/\r/' "$f"
done
(cd "$dir" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)

python3 - "$STAGE" "$NAME" "$OUT/$NAME.zip.new" "$EPOCH" <<'PY'
import os, sys, time, zipfile
stage, name, out, epoch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# zip cannot hold times before 1980.
stamp = time.gmtime(max(epoch, 315532800))[:6]
paths = []
for root, _, files in os.walk(os.path.join(stage, name)):
    for f in files:
        paths.append(os.path.relpath(os.path.join(root, f), stage))
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for rel in sorted(paths):
        info = zipfile.ZipInfo(rel.replace(os.sep, "/"), date_time=stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        with open(os.path.join(stage, rel), "rb") as src:
            z.writestr(info, src.read())
PY
mv "$OUT/$NAME.zip.new" "$OUT/$NAME.zip"

if [ -f "$OUT/SHA256SUMS" ]; then
    grep -v "  $NAME.zip\$" "$OUT/SHA256SUMS" >"$OUT/SHA256SUMS.new" || true
    (cd "$OUT" && sha256sum "$NAME.zip") >>"$OUT/SHA256SUMS.new"
    mv "$OUT/SHA256SUMS.new" "$OUT/SHA256SUMS"
fi
echo "==> $OUT/$NAME.zip ($(stat -c %s "$OUT/$NAME.zip") bytes)" >&2
