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

# shellcheck source=tools/resp-node.sh
. tools/resp-node.sh
work="$(mktemp -d -t strata-redis-benchmark.XXXXXX)"
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  stop_resp_node
  rm -rf "$work"
}
trap cleanup EXIT

start_resp_node "$server" "$work"

# One test set: its name, then redis-benchmark's arguments.
check() {
  local name="$1"
  shift
  local rc=0
  timeout -k 10 600 redis-benchmark -p "$port" -n "$requests" -c 10 --csv "$@" \
    >"$work/out.csv" 2>"$work/err.txt" </dev/null || rc=$?
  # The header, then one row per test.
  local lines got=0
  lines="$(wc -l <"$work/out.csv")"
  if head -n 1 "$work/out.csv" | grep -q '^"test","rps"'; then
    got=$((lines - 1))
  fi
  if [ "$rc" -ne 0 ] || grep -q "Error" "$work/err.txt" || [ "$got" -lt 1 ]; then
    cat "$work/err.txt" "$work/out.csv" >&2
    die "$name: redis-benchmark exited $rc with $got test rows (a CSV header, then one row per test, expected)"
  fi
  say "$name: $got tests, no error: $(cut -d, -f1 "$work/out.csv" | tail -n +2 | tr -d '"' | tr '\n' ' ')"
}

check "default test set"
check "get,set,incr,mset -P 16" -t get,set,incr,mset -P 16
