#!/usr/bin/env bash
# Second benchmark (server side, lean load generator): starts `conclave dev` in a fresh temp
# dir, then drives message posts with wrk (Debian package `wrk`) at 1, 16 and 64 connections,
# first all through one follower, then spread over the three nodes. Linux only; not run by CI.
#
#   cargo build --release -p node && bash chaos-tests/bench/wrk-posts.sh [SECONDS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
BIN="${CONCLAVE_BIN:-${CARGO_TARGET_DIR:-$here/../../target}/release/conclave}"
SECS="${1:-10}"
command -v wrk >/dev/null || { echo "wrk-posts.sh: install wrk (apt-get install wrk)" >&2; exit 2; }
dir="$(mktemp -d)"
"$BIN" dev --data-dir "$dir" --admin-password bench-password > "$dir/dev.out" 2>&1 &
dev=$!
trap 'kill -TERM $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 120); do grep -q "ready" "$dir/dev.out" && break; sleep 0.5; done
grep -q "ready" "$dir/dev.out" || { echo "cluster did not start; see $dir" >&2; exit 1; }
api() { curl -sf "$@"; }
TOKEN=$(api -XPOST -H 'content-type: application/json' \
  -d '{"username":"admin","password":"bench-password"}' http://127.0.0.1:8080/api/v1/login |
  python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])')
export TOKEN
api -o /dev/null -XPOST -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"name":"w"}' http://127.0.0.1:8080/api/v1/channels
leader=$(api http://127.0.0.1:8080/api/v1/cluster | python3 -c 'import sys,json; print(json.load(sys.stdin)["leader_id"])')
follower=$(( leader % 3 + 1 ))
echo "leader: node $leader; single-node runs go through follower node $follower; ${SECS}s per run"
printf '%-22s %8s %10s %10s\n' "run" "conns" "msgs/s" "p50 / p99"
for c in 1 16 64; do
  out=$(wrk -t"$([ "$c" = 1 ] && echo 1 || echo 2)" -c"$c" -d"${SECS}s" --latency -s "$here/post.lua" "http://127.0.0.$follower:8080")
  printf '%-22s %8s %10s %10s\n' "follower $follower" "$c" "$(echo "$out" | awk '/Requests\/sec/{print $2}')" \
    "$(echo "$out" | awk '/^ +50%/{p50=$2} /^ +99%/{p99=$2} END{print p50 " / " p99}')"
done
for n in 1 2 3; do
  wrk -t1 -c21 -d"${SECS}s" --latency -s "$here/post.lua" "http://127.0.0.$n:8080" > "$dir/wrk$n.txt" &
done
wait %2 %3 %4 2>/dev/null || wait
total=0
for n in 1 2 3; do
  r=$(awk '/Requests\/sec/{print $2}' "$dir/wrk$n.txt")
  total=$(python3 -c "print(round($total + $r))")
  printf '%-22s %8s %10s %10s\n' "spread: node $n" 21 "$r" "$(awk '/^ +50%/{p50=$2} /^ +99%/{p99=$2} END{print p50 " / " p99}' "$dir/wrk$n.txt")"
done
echo "spread total: $total msgs/s at 63 connections"
