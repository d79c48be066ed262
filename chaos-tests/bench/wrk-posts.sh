#!/usr/bin/env bash
# Server-side benchmark with a lean load generator: starts `conclave dev` in a fresh temp dir
# (TLS on, its default, or --no-tls), then posts 200-byte messages with wrk (Debian package
# `wrk`, built with OpenSSL, so https works) at each --levels connection count, all through one
# follower (every write is forwarded to the leader), then spread over the three nodes. Linux
# only. `.ci/run` smoke-runs it through `chaos-tests/bench/smoke.sh` at a tiny size.
#
#   cargo build --release -p node && bash chaos-tests/bench/wrk-posts.sh [SECONDS]
#   bash chaos-tests/bench/wrk-posts.sh --no-tls --secs 10 --levels 1,16,64,128
#
# Options: --secs N (10), --levels LIST (1,16,64,128), --no-tls, --spread N (connections per
# node in the spread run, 21; 0 skips it), --breakdown (after each follower run, the average
# fsync, log append and commit time per node from /metrics deltas: on the follower the commit
# time is the forward round trip, on the leader `client_write`), --cpu (after each follower run,
# the three node processes' CPU time (utime + stime, /proc) per 1,000 posts: steadier than
# msgs/s, which swing with the disk's fsync latency), --keep (data dir and node logs), --binary
# PATH (default $CONCLAVE_BIN, else $CARGO_TARGET_DIR/release/conclave).
# Ports (every node, on 127.0.0.N): $WRK_API_PORT (28080), $WRK_HTTPS_PORT (28443),
# $WRK_CLUSTER_PORT (29080), $WRK_DNS_PORT (28053); not the dev defaults, so a developer's own
# `conclave dev` is left alone.
#
# The set-up calls go through curl and verify the cluster's certificate with --cacert (the
# root `conclave dev` writes to <data dir>/ca.pem). wrk itself cannot verify a certificate (it
# has no option for it), so the load runs encrypted but unverified, against our own root.
# Exits non-zero when a run produced no numbers or any post was refused (non-2xx) or failed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SECS=10
LEVELS=1,16,64,128
TLS=1
SPREAD=21
KEEP=0
BREAKDOWN=0
CPU=0
BIN="${CONCLAVE_BIN:-${CARGO_TARGET_DIR:-$here/../../target}/release/conclave}"
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    --levels) LEVELS="$2"; shift 2 ;;
    --no-tls) TLS=0; shift ;;
    --spread) SPREAD="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --breakdown) BREAKDOWN=1; shift ;;
    --cpu) CPU=1; shift ;;
    --binary) BIN="$2"; shift 2 ;;
    [0-9]*) SECS="$1"; shift ;;
    *) echo "wrk-posts.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
API_PORT="${WRK_API_PORT:-28080}"
HTTPS_PORT="${WRK_HTTPS_PORT:-28443}"
command -v wrk >/dev/null || { echo "wrk-posts.sh: install wrk (apt-get install wrk)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "wrk-posts.sh: no conclave binary at $BIN (cargo build --release -p node, or --binary)" >&2; exit 2; }
dir="$(mktemp -d)"
# One wrk is one source address: the default cap of 128 connections per source (docs/
# configuration.md, [limits]) would refuse part of a 128-connection level. The nodes inherit
# this override from `conclave dev`.
export CONCLAVE_LIMITS__MAX_CONNECTIONS_PER_SOURCE="${CONCLAVE_LIMITS__MAX_CONNECTIONS_PER_SOURCE:-1024}"
tls_args=(--https-port "$HTTPS_PORT")
[ "$TLS" = 1 ] || tls_args=(--no-tls)
"$BIN" dev --data-dir "$dir" --admin-password bench-password "${tls_args[@]}" --api-port "$API_PORT" \
  --cluster-port "${WRK_CLUSTER_PORT:-29080}" --dns-port "${WRK_DNS_PORT:-28053}" > "$dir/dev.out" 2>&1 &
dev=$!
cleanup() {
  kill -TERM "$dev" 2>/dev/null || true
  wait "$dev" 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then echo "kept data dir and node logs: $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
for _ in $(seq 1 240); do
  grep -q "cluster is ready" "$dir/dev.out" && break
  kill -0 "$dev" 2>/dev/null || break
  sleep 0.5
done
grep -q "cluster is ready" "$dir/dev.out" || { echo "wrk-posts.sh: cluster did not start:" >&2; cat "$dir/dev.out" >&2; exit 1; }
if [ "$TLS" = 1 ]; then
  scheme=https port=$HTTPS_PORT
  api() { curl -sSf --cacert "$dir/ca.pem" "$@"; }
else
  scheme=http port=$API_PORT
  api() { curl -sSf "$@"; }
fi
url() { echo "$scheme://127.0.0.$1:$port"; }
TOKEN=$(api -XPOST -H 'content-type: application/json' \
  -d '{"username":"admin","password":"bench-password"}' "$(url 1)/api/v1/login" |
  python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])')
export TOKEN
api -o /dev/null -XPOST -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"name":"w"}' "$(url 1)/api/v1/channels"
leader=$(api "$(url 1)/api/v1/cluster" | python3 -c 'import sys,json; print(json.load(sys.stdin)["leader_id"])')
follower=$(( leader % 3 + 1 ))
# One wrk run; prints "msgs/s p50 p99" or fails when wrk reported refusals, errors or nothing.
run_wrk() { # out-file threads conns node
  wrk -t"$2" -c"$3" -d"${SECS}s" --latency -s "$here/post.lua" "$(url "$4")" > "$1" 2>&1 || {
    echo "wrk-posts.sh: wrk failed:" >&2; cat "$1" >&2; return 1; }
  if grep -qE "Non-2xx|Socket errors" "$1"; then
    echo "wrk-posts.sh: refused or failed posts against node $4:" >&2; cat "$1" >&2; return 1
  fi
  awk '/Requests\/sec/{r=$2} /^ +50%/{p50=$2} /^ +99%/{p99=$2}
       END{if (r == "" || r + 0 <= 0 || p50 == "") exit 1; print r, p50, p99}' "$1" || {
    echo "wrk-posts.sh: no numbers from wrk:" >&2; cat "$1" >&2; return 1; }
}
scrape() { # suffix: /metrics of every node into $dir/mN.suffix
  for n in 1 2 3; do api "$(url "$n")/metrics" > "$dir/m$n.$1"; done
}
breakdown() { # prints, per node, averages over the metric deltas between .before and .after
  for n in 1 2 3; do
    python3 - "$dir/m$n.before" "$dir/m$n.after" "$n" "$leader" <<'PY'
import re, sys
def load(path):
    d = {}
    for line in open(path):
        m = re.match(r"(\w+)(?:\{[^}]*\})?\s+(\S+)$", line.strip())
        if m and not line.startswith("#"):
            d[m.group(1)] = d.get(m.group(1), 0.0) + float(m.group(2))
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
parts = []
for name, label in [("conclave_raft_log_fsync_seconds", "fsync"),
                    ("conclave_raft_log_append_seconds", "append"),
                    ("conclave_write_commit_seconds", "commit")]:
    c = b.get(name + "_count", 0) - a.get(name + "_count", 0)
    s = b.get(name + "_sum", 0) - a.get(name + "_sum", 0)
    if c:
        parts.append(f"{label} {s / c * 1e3:.3f} ms x{int(c)}")
role = "leader" if sys.argv[3] == sys.argv[4] else "follower"
print(f"    node {sys.argv[3]} ({role}): " + ("; ".join(parts) or "nothing"))
PY
  done
}
# CPU ticks used so far by the three node processes (`conclave dev`'s children).
node_ticks() {
  local t=0 p
  for p in $(pgrep -P "$dev"); do
    t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
  done
  echo "$t"
}
mode=$([ "$TLS" = 1 ] && echo "TLS (https, wrk unverified)" || echo "--no-tls (plain http)")
echo "conclave dev, $mode; leader: node $leader; single-node runs through follower node $follower; ${SECS}s per run; load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %8s %10s %10s %10s\n' "run" "conns" "msgs/s" "p50" "p99"
for c in ${LEVELS//,/ }; do
  [ "$BREAKDOWN" = 1 ] && scrape before
  [ "$CPU" = 1 ] && ticks=$(node_ticks)
  read -r r p50 p99 < <(run_wrk "$dir/wrk-f$c.txt" "$([ "$c" = 1 ] && echo 1 || echo 2)" "$c" "$follower") || exit 1
  printf '%-22s %8s %10s %10s %10s\n' "follower $follower" "$c" "$r" "$p50" "$p99"
  if [ "$CPU" = 1 ]; then
    used=$(( $(node_ticks) - ticks ))
    python3 -c "import sys; r, s, used, hz = map(float, sys.argv[1:]); ms = used * 1000 / hz
print(f'    nodes: {ms / (r * s) * 1000:.0f} CPU-ms per 1,000 posts ({ms / s / 10:.0f}% of one core)')" "$r" "$SECS" "$used" "$(getconf CLK_TCK)"
  fi
  if [ "$BREAKDOWN" = 1 ]; then scrape after; breakdown; fi
done
if [ "$SPREAD" -gt 0 ]; then
  pids=()
  for n in 1 2 3; do
    (run_wrk "$dir/wrk$n.txt" 1 "$SPREAD" "$n" > "$dir/wrk$n.row") & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || exit 1; done
  total=0
  for n in 1 2 3; do
    read -r r p50 p99 < "$dir/wrk$n.row"
    total=$(python3 -c "print(round($total + $r))")
    printf '%-22s %8s %10s %10s %10s\n' "spread: node $n" "$SPREAD" "$r" "$p50" "$p99"
  done
  echo "spread total: $total msgs/s at $((3 * SPREAD)) connections"
fi
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
