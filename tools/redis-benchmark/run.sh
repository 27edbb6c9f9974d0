#!/usr/bin/env bash
# Runs redis-benchmark's whole default test set, then `-t get,set,incr,mset
# -P 16`, against a strata node's RESP gateway, and fails if either stops
# on an error reply (redis-benchmark then exits 1 before its later tests). A compatibility check, not a
# measurement: small request counts, a debug build is fine (speed is
# compared in tools/compare-redis, with a release build).
#
# Installs redis-tools (redis-benchmark) if it is missing.
# Environment:
#   STRATA_SERVER   strata-server binary
#                   (default ${CARGO_TARGET_DIR:-target}/debug/strata-server)
#   REDIS_BENCHMARK_REQUESTS  requests per test (default 500)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."
server="${STRATA_SERVER:-${CARGO_TARGET_DIR:-target}/debug/strata-server}"
requests="${REDIS_BENCHMARK_REQUESTS:-500}"

say() { echo "redis-benchmark check: $*" >&2; }
die() { say "$*"; exit 2; }

[ -x "$server" ] || die "no strata-server at $server (build it, or set STRATA_SERVER)"
if ! command -v redis-benchmark >/dev/null 2>&1; then
  say "installing redis-tools"
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq redis-tools >&2
fi

work="$(mktemp -d -t strata-redis-benchmark.XXXXXX)"
node_pid=""
cleanup() {
  if [ -n "$node_pid" ]; then
    kill "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$server" --data-dir "$work/data" --listen 127.0.0.1:0 --metrics-listen off \
  --fsync never --resp-listen 127.0.0.1:0 --ready-json \
  >"$work/ready.json" 2>"$work/server.log" &
node_pid=$!
port=""
for _ in $(seq 1 300); do # at most 60 s
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "strata-server exited"; }
  if grep -q '"resp_listen"' "$work/ready.json" 2>/dev/null; then
    port="$(sed -n -E 's/.*"resp_listen":"[^"]*:([0-9]+)".*/\1/p' "$work/ready.json")"
    break
  fi
  sleep 0.2
done
[ -n "$port" ] || die "strata-server printed no ready line with resp_listen within 60 s"

# One test set: its name, then redis-benchmark's arguments.
check() {
  local name="$1"
  shift
  local rc=0
  timeout -k 10 600 redis-benchmark -p "$port" -n "$requests" -c 10 --csv "$@" \
    >"$work/out.csv" 2>"$work/err.txt" </dev/null || rc=$?
  # The header, then one row per test.
  local got=$(($(wc -l <"$work/out.csv") - 1))
  if [ "$rc" -ne 0 ] || grep -q "Error" "$work/err.txt" || [ "$got" -lt 1 ]; then
    cat "$work/err.txt" >&2
    die "$name: redis-benchmark exit $rc after $got tests"
  fi
  say "$name: $got tests, no error: $(cut -d, -f1 "$work/out.csv" | tail -n +2 | tr -d '"' | tr '\n' ' ')"
}

check "default test set"
check "get,set,incr,mset -P 16" -t get,set,incr,mset -P 16
