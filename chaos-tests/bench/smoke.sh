#!/usr/bin/env bash
# Smoke run of every benchmark at a tiny size, so a bench that stops working against the current
# defaults fails CI instead of rotting. `.ci/run` calls it after the test command. Numbers from
# here mean nothing (debug binaries, seconds-long runs, a busy machine): this only checks that
# each bench starts its cluster, does its work and prints its numbers.
#
#   bash chaos-tests/bench/smoke.sh            # debug build (what the tests already built)
#   SMOKE_PROFILE=release bash chaos-tests/bench/smoke.sh
#
# Debug on purpose: the workspace is already built in debug by the tests, and a release build
# of node + chaos-tests costs minutes on the CI machine. The `cargo build` below is a no-op when
# the binaries are fresh and makes sure a stale one is never what runs.
#
# Each bench runs under a 180 s timeout (`timeout` signals its whole process group, the bench's
# node processes included). A bench fails when it exits non-zero or when its output lacks the
# lines that carry its numbers; every bench runs either way, then the script exits 1 if any
# failed, naming them. Needs `wrk` (Debian package) for wrk-posts.sh and search-e2e-bench.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
profile="${SMOKE_PROFILE:-debug}"
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/$profile"
if [ "${SMOKE_NO_BUILD:-0}" != 1 ]; then
  # Debug: the same package and target selection as the test build (`cargo nextest run
  # --workspace` builds every test, dev-dependencies on), so this is a no-op after it; a
  # narrower `-p ... --bins` resolves features differently and recompiled tantivy and friends
  # for minutes on a cold CI machine. Release: only the binaries the benches run.
  sel=(--workspace --bins --tests)
  [ "$profile" = release ] && sel=(--release -p node -p ops -p chaos-tests --bins)
  cargo build -q "${sel[@]}"
fi
export CONCLAVE_BIN="$bin/conclave"
export RUST_LOG="${RUST_LOG:-warn}"
logs="$(mktemp -d)"
failed=()
started=$SECONDS
echo "bench smoke: $profile binaries from $bin; load $(cut -d' ' -f1-3 /proc/loadavg); outputs in $logs"

# smoke NAME PATTERN... -- COMMAND...: runs COMMAND, then checks every extended-regex PATTERN
# matches a line of its output.
smoke() {
  local name="$1" patterns=() t0=$SECONDS rc=0 p missing=()
  shift
  while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  timeout -k 10 180 "$@" > "$logs/$name.txt" 2>&1 || rc=$?
  for p in "${patterns[@]}"; do
    grep -Eq -- "$p" "$logs/$name.txt" || missing+=("$p")
  done
  if [ "$rc" = 0 ] && [ "${#missing[@]}" = 0 ]; then
    printf 'bench smoke: %-18s ok   (%3d s)\n' "$name" $((SECONDS - t0))
  else
    printf 'bench smoke: %-18s FAIL (%3d s): exit %s, missing: %s\n' "$name" $((SECONDS - t0)) "$rc" "${missing[*]:-none}"
    tail -n 40 "$logs/$name.txt" | sed 's/^/    /'
    failed+=("$name")
  fi
}

smoke conclave-bench '^ +1 +[1-9][0-9]* ' '^ +4 +[1-9][0-9]* ' 'failover ms: samples 1 .*failed rounds 0' -- \
  "$bin/conclave-bench" --messages 30 --levels 1,4 --failovers 1 --failover-posters 4
smoke ws-bench ' [1-9][0-9.]* deliveries/s' 'missing deliveries 0 .* duplicates 0' -- \
  "$bin/ws-bench" --clients 6 --senders 2 --rate 10 --duration 1s --warmup 300ms --idle 300ms \
  --drain-timeout 10s --users 2
smoke ws-bench-stampede 'node 3 SIGKILLed' ' 2 of its 2 clients resumed on a survivor' \
  'missing deliveries 0 .* duplicates 0' -- \
  "$bin/ws-bench" --clients 6 --senders 3 --rate 6 --duration 3s --warmup 300ms --idle 300ms \
  --drain-timeout 15s --users 2 --kill-node 3 --kill-after 1s
smoke dns-bench ' [1-9][0-9]* answered/s' 'worst removal [0-9.]+ s over 1 rounds' -- \
  "$bin/dns-bench" --duration 1s --warmup 200ms --sockets 1 --window 4 --kills 1 --ttl 1 --no-dnsperf
smoke tls-bench 'full +[1-9][0-9]* connections/s' 'resumed +[1-9][0-9]* connections/s' \
  'with TLS\+mTLS +[0-9.]+ ' 'without TLS +[0-9.]+ ' -- \
  "$bin/tls-bench" --duration 1s --concurrency 1 --posts 10
smoke snapshot-bench 'catch-up \(node [0-9]+\): +[0-9.]+ s' -- \
  "$bin/snapshot-bench" --messages 300 --timeout 60s
smoke wrk-posts-tls '^follower [0-9] +1 +[0-9.]+ ' 'spread total: [1-9]' -- \
  bash "$here/wrk-posts.sh" --secs 1 --levels 1,4 --spread 2
smoke wrk-posts-no-tls '^follower [0-9] +1 +[0-9.]+ ' 'nodes: [1-9][0-9]* CPU-ms per 1,000 posts' -- \
  bash "$here/wrk-posts.sh" --no-tls --secs 1 --levels 1 --spread 0 --cpu

# login-flood.py drives a `conclave dev --no-tls` cluster it does not start itself.
login_flood() {
  local d dev rc=0
  d="$(mktemp -d)"
  "$CONCLAVE_BIN" dev --no-tls --data-dir "$d" --admin-password flood-test-pass-1 --api-port 27080 \
    --cluster-port 27090 --dns-port 27053 > "$d/dev.out" 2>&1 &
  dev=$!
  for _ in $(seq 1 240); do
    grep -q "cluster is ready" "$d/dev.out" && break
    kill -0 "$dev" 2>/dev/null || break
    sleep 0.5
  done
  if grep -q "cluster is ready" "$d/dev.out"; then
    # shellcheck disable=SC2046 # one argument per pid
    python3 "$here/login-flood.py" --port 27080 --concurrency 20 --rounds 1 --sources 20 \
      --pids $(grep -o 'pid [0-9]*' "$d/dev.out" | awk '{print $2}') || rc=$?
  else
    cat "$d/dev.out"
    rc=1
  fi
  kill -TERM "$dev" 2>/dev/null || true
  wait "$dev" 2>/dev/null || true
  rm -rf "$d"
  return "$rc"
}
export -f login_flood
export here
smoke login-flood '^20 logins in [0-9.]+ s' 'peak [1-9][0-9]* MB' -- bash -c login_flood

# Issue 16's fault and handover benches, each in its smoke mode (one fault or one handover).
smoke fault-bench '^leader-stop +1 +[0-9]+ ' 'checks: every acknowledged message is on all 3 nodes exactly once' -- \
  "$bin/fault-bench" --smoke
smoke handover-bench '^write pause +p50 +[0-9.]+ ms' 'failed requests: 0, retried attempts: 0' -- \
  "$bin/handover-bench" --smoke
# Issue 15's search index, in-process (no cluster): indexing throughput and query latency.
smoke search-bench '^indexed [0-9]+ messages in .*: [1-9][0-9]* msgs/s' \
  '^queries [0-9]+: p50 [0-9.]+ ms, p99 [0-9.]+ ms' -- "$bin/search-bench" --smoke

# Issue 15 end to end: posts through a 3-node cluster, then every node's search finds them.
smoke search-e2e-bench '^posted [0-9]+ messages in .*: [1-9][0-9]* msgs/s \(0 failed\)' \
  '^node [0-9]: last message searchable [0-9]+ ms after the last acknowledgement' \
  '^all nodes ack -> searchable +samples +[1-9][0-9]* +p50 +[0-9]+ ms +p99 +[0-9]+ ms' \
  '^background wrk .*: [1-9][0-9]* posts in .* \(0 not 2xx\)' -- \
  "$bin/search-e2e-bench" --smoke --wrk-connections 3

echo "bench smoke: $((SECONDS - started)) s in all; load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "bench smoke: FAILED: ${failed[*]} (outputs kept in $logs)" >&2
  exit 1
fi
rm -rf "$logs"
