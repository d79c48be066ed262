#!/usr/bin/env bash
# Builds (once) a minimal Debian root filesystem tarball for the .deb install test
# (chaos-tests/tests/cluster/deb_install.rs) and prints its path on stdout.
#
# No image registry is reachable, so the "clean Debian machine" is made with debootstrap from
# the Debian mirror this host's apt already uses, then `docker import`ed by the test. The
# tarball is cached OUTSIDE the clone, keyed by suite + mirror + package list, so CI pays the
# few minutes once per machine. Concurrent callers serialise on a lock; the tarball is built
# under a temporary name and renamed, so a reader never sees a half-written file.
#
# Usage: chaos-tests/debian/rootfs.sh [--cache-dir DIR] [--cached]
#   --cache-dir  where tarballs live (default $CONCLAVE_DEBIAN_CACHE, else /var/tmp/conclave-debian)
#   --cached     build nothing: print the path if the tarball exists, else exit 1 (the test uses
#                this, so the cache key is computed in one place)
# Building needs root and debootstrap (apt-get install debootstrap).
set -euo pipefail

CACHE_DIR="${CONCLAVE_DEBIAN_CACHE:-/var/tmp/conclave-debian}"
CACHED_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cache-dir) CACHE_DIR="$2"; shift 2 ;;
    --cached) CACHED_ONLY=1; shift ;;
    *) echo "usage: $0 [--cache-dir DIR] [--cached]" >&2; exit 2 ;;
  esac
done

# What the test needs inside the container, and why (keep it small):
#   systemd, systemd-sysv  PID 1 and /sbin/init, so the unit runs the way it does on a real host
#   dbus                   systemd's bus, as on every real host: without it `systemctl` still
#                          works as root (private socket), but systemd-logind fails and the
#                          system reports "degraded"
# minbase already has dpkg, passwd (useradd, the package's postinst), util-linux (runuser),
# sed and coreutils. No procps or libcap2-bin: the test reads /proc/<pid>/status. No
# curl or dig: DNS and HTTPS are checked from the host, over the test's own network.
PACKAGES="systemd,systemd-sysv,dbus"

# The suite and mirror the host itself uses (bookworm on the CI machine), so the container is
# the distribution the package is built for.
SUITE="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
MIRROR="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/debian.sources | head -n1 | awk '{print $2}')"
if [ -z "$MIRROR" ]; then
  MIRROR="$(grep -hsE '^deb +(\[[^]]*\] +)?https?://[^ ]*/debian/? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | head -n1 | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}')"
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

# The cache key: bump "v1" when the build steps below change (the trimming, the tar flags).
KEY="$(printf '%s\n' "$SUITE" "$MIRROR" "minbase" "$PACKAGES" "v1" | sha256sum | cut -c1-12)"
OUT="$CACHE_DIR/$SUITE-$KEY.tar"

if [ -s "$OUT" ]; then
  echo "$OUT"
  exit 0
fi
if [ "$CACHED_ONLY" -eq 1 ]; then
  echo "rootfs.sh: no cached root filesystem at $OUT (run chaos-tests/debian/rootfs.sh)" >&2
  exit 1
fi
mkdir -p "$CACHE_DIR"

if ! command -v debootstrap >/dev/null; then
  echo "rootfs.sh: debootstrap is missing (apt-get install debootstrap)" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "rootfs.sh: debootstrap needs root" >&2
  exit 1
fi

exec 9>"$CACHE_DIR/.lock"
flock 9
# Another caller may have finished it while we waited for the lock.
if [ -s "$OUT" ]; then
  echo "$OUT"
  exit 0
fi

WORK="$(mktemp -d "$CACHE_DIR/build.XXXXXX")"
cleanup() {
  # debootstrap may leave /proc or /sys mounted inside the target when it fails half-way.
  for m in proc sys dev/pts dev; do
    umount -l "$WORK/root/$m" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "rootfs.sh: debootstrap $SUITE from $MIRROR (+$PACKAGES) into $WORK" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$WORK/root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
  tail -n 30 "$WORK/debootstrap.log" >&2
  exit 1
}

# Trim what a test container never uses: the apt cache and the downloaded .debs, docs, man
# pages and locales of the base system (the package's own man pages land after this).
rm -rf "$WORK/root/var/cache/apt/archives/"*.deb "$WORK/root/var/lib/apt/lists/"* \
  "$WORK/root/usr/share/doc/"* "$WORK/root/usr/share/locale/"* "$WORK/root/usr/share/info/"*
# A container has no consoles, no real hardware and no network to bring up from inside; these
# units only fail or wait there, which turns `systemctl is-system-running` into "degraded".
for u in getty@tty1.service systemd-networkd-wait-online.service systemd-timesyncd.service \
  apt-daily.timer apt-daily-upgrade.timer; do
  rm -f "$WORK/root/etc/systemd/system/"*.wants/"$u"
done
# A fixed machine-id would be shared by every container; empty means "generate at boot".
: >"$WORK/root/etc/machine-id"

tar --numeric-owner --xattrs -C "$WORK/root" -cf "$WORK/rootfs.tar" .
mv "$WORK/rootfs.tar" "$OUT"
echo "$OUT"
