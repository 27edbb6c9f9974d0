#!/usr/bin/env bash
# Replication benchmarks on loopback, release build:
#  A. write throughput and p99 per ack mode: a primary alone, then with two
#     replicas (every node fsync=always, as in production);
#  B. full sync of a ~1 GB dataset to a fresh replica: throughput (MB/s of
#     keys + values), and the primary's GET p99 during it against before it.
# Usage: tools/bench-replication.sh [SECONDS per run, default 10]
#   RATES="0 67108864" (full-sync limits to try, bytes/s; 0 = none), PARTS="A B",
#   REPLICA_NICE=19 runs the part-B replica at that niceness (it shares the
#   primary's two cores here; on separate machines it would not compete)
# Everything runs in a temporary directory and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
tools/prereqs.sh >/dev/null
cargo build --release -q --bin strata-server --bin strata-admin --bin strata-bench --bin strata-cli
bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d "${TMPDIR:-/tmp}/strata-repl-bench.XXXXXX")"
pids=()
cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$bin/strata-admin" gen-certs --out "$work/certs" --node p --node r1 --node r2 --node q --node s1 --node s2 >/dev/null

# start NAME CLIENT_PORT REPL_PORT [flags...]: runs a node, waits until it serves.
start() {
  local name=$1 port=$2 repl=$3
  shift 3
  ${NICE:+nice -n "$NICE"} "$bin/strata-server" --data-dir "$work/$name" --node-name "$name" \
    --listen "127.0.0.1:$port" --metrics-listen off --repl-listen "127.0.0.1:$repl" \
    --repl-ca "$work/certs/ca.crt" --repl-cert "$work/certs/$name.crt" \
    --repl-key "$work/certs/$name.key" "$@" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 600); do
    grep -q "strata node serving" "$work/$name.log" 2>/dev/null && return
    sleep 0.1
  done
  echo "$name did not start:" >&2
  cat "$work/$name.log" >&2
  exit 1
}
fp() { sed -n 's/.*fingerprint=\([0-9a-f]*\).*/\1/p' "$work/$1.log" | head -1; }
info() { "$bin/strata-cli" --addr "127.0.0.1:$1" --pin "$(fp "$2")" --json info; }
wait_for() { # NAME PATTERN: wait until the node's log has the pattern
  for _ in $(seq 3000); do
    grep -q "$2" "$work/$1.log" && return
    sleep 0.1
  done
  echo "$1 never logged: $2" >&2
  exit 1
}
# bench PORT NAME ARGS...: prints "ops/s p50 p99" of the run (op = set or get)
bench() {
  local port=$1 name=$2 op=$3
  shift 3
  "$bin/strata-bench" --addr "127.0.0.1:$port" --pin "$(fp "$name")" --quiet --json "$@" |
    python3 -c "import json,sys; r=json.load(sys.stdin)['$op']; l=r['latency_us']; \
print(f\"{r['ops_per_sec']:.0f} {l['p50']/1000:.2f} {l['p99']/1000:.2f}\")"
}

rates="${RATES:-0 67108864}"
parts="${PARTS:-A B}"
if [[ "$parts" == *A* ]]; then
echo "== A. writes: 4 connections x 16 in flight, 100 B values, 100k keys, ${secs}s per row, fsync=always =="
start p 17500 17600
load=(--connections 4 --inflight 16 --keys 100000 --value-size 100 --ratio 0:100 --duration "$secs" --warmup 1)
printf '%-24s %10s %9s %9s\n' "row" "SET/s" "p50 ms" "p99 ms"
read -r ops p50 p99 < <(bench 17500 p set "${load[@]}" --ack async)
printf '%-24s %10s %9s %9s\n' "no replica, async" "$ops" "$p50" "$p99"
start r1 17501 17601 --replica-of 127.0.0.1:17600
start r2 17502 17602 --replica-of 127.0.0.1:17600
for _ in $(seq 600); do
  info 17500 p | grep -q '"connected_replicas": *"2"' && break
  sleep 0.1
done
for ack in async semi-sync:1:5000 semi-sync:2:5000 sync:5000; do
  read -r ops p50 p99 < <(bench 17500 p set "${load[@]}" --ack "$ack")
  printf '%-24s %10s %9s %9s\n' "2 replicas, ${ack%%:5000}" "$ops" "$p50" "$p99"
done

fi

if [[ "$parts" == *B* ]]; then
echo
echo "== B. full sync of ~1 GB (1M keys x 1000 B) to a fresh replica; primary GET p99, 4x16, uniform =="
qflags=(--fsync never --memory-bytes 268435456)
start q 17510 17610 "${qflags[@]}" --full-sync-rate 0
q_pid=${pids[-1]}
"$bin/strata-bench" --addr 127.0.0.1:17510 --pin "$(fp q)" --quiet --keys 1000000 --value-size 1000 \
  --preload --ratio 100:0 --requests 1 >/dev/null
reads=(--connections 4 --inflight 16 --keys 1000000 --value-size 1000 --ratio 100:0)
read -r ops p50 before < <(bench 17510 q get "${reads[@]}" --duration "$secs")
printf '%-34s %10s %9s %9s\n' "row" "GET/s" "p50 ms" "p99 ms"
printf '%-34s %10s %9s %9s\n' "before (no full sync)" "$ops" "$p50" "$before"
n=0
for rate in $rates; do
  n=$((n + 1))
  replica="s$n"
  if [ "$rate" != 0 ]; then # the primary paces full syncs: restart it with the limit
    kill -TERM "$q_pid" && wait "$q_pid" || true
    mv "$work/q.log" "$work/q.0.log"
    start q 17510 17610 "${qflags[@]}" --full-sync-rate "$rate"
    q_pid=${pids[-1]}
  fi
  bench 17510 q get "${reads[@]}" --duration $((secs * 3)) >"$work/during.txt" &
  bench_pid=$!
  started=$(date +%s.%N)
  NICE="${REPLICA_NICE:-}" start "$replica" $((17510 + n)) $((17610 + n)) --replica-of 127.0.0.1:17610
  wait_for "$replica" "full sync installed"
  ended=$(date +%s.%N)
  wait "$bench_pid"
  read -r ops p50 p99 <"$work/during.txt"
  bytes=$(sed -n 's/.*full sync installed.*bytes=\([0-9]*\).*/\1/p' "$work/$replica.log" | head -1)
  label="during, limit ${rate} B/s${REPLICA_NICE:+, replica nice $REPLICA_NICE}"
  python3 - "$label" "$ops" "$p50" "$p99" "$bytes" "$started" "$ended" "$before" <<'PY'
import sys
label, ops, p50, p99, size, t0, t1, before = sys.argv[1:]
mb, secs = int(size) / 1e6, float(t1) - float(t0)
print(f"{label:<34} {ops:>10} {p50:>9} {p99:>9}   full sync: {mb:.0f} MB in {secs:.1f} s"
      f" = {mb / secs:.0f} MB/s; p99 {float(p99) / float(before):.2f}x before")
PY
done
fi
