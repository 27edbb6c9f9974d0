#!/usr/bin/env bash
# Online migration under load: how fast a moving range copies, and what
# the move costs the clients. Release builds of three cluster nodes on
# loopback, in a temporary directory: shards 1 (m1) and 2 (m2) hold KEYS
# keys of VALUE bytes; then `strata-admin cluster add-shard` gives a third
# of the ring to shard 3 (m3) while strata-bench --cluster runs a GET:SET
# load (MIX) through the cluster client. The same load runs for SECS
# seconds before the move, as the baseline, and again for as long as the
# move takes.
#
#   KEYS=200000 VALUE=1000 SECS=20 MIX=90:10 tools/bench-migration.sh
#
# RATE sets cluster.migration_bytes_per_sec on every node (default: the
# node's default, 64 MiB/s per owner). Prints the copy rate (bytes the
# receiver copied / time from the migration's start to its end, as
# strata-admin reports it) and the GET and SET p50/p99 before and during
# the move. Needs python3 (to read strata-bench's JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
keys=${KEYS:-200000}
value=${VALUE:-1000}
secs=${SECS:-20}
mix=${MIX:-90:10}

tools/prereqs.sh
cargo build --release --bin strata-server --bin strata-admin --bin strata-bench --bin strata-cli
bin="$CARGO_TARGET_DIR/release"
root=$(mktemp -d)
pids=()
stop() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$root"
}
trap stop EXIT INT TERM

names=(m1 m2 m3)
"$bin/strata-admin" gen-certs --out "$root/certs" "${names[@]/#/--node=}" >/dev/null
ca=(--ca "$root/certs/ca.crt")
printf '[cluster]\n%s\n' "${RATE:+migration_bytes_per_sec = $RATE}" >"$root/node.toml"
addrs=()
for i in "${!names[@]}"; do
  name=${names[$i]}
  port=$((17379 + i))
  "$bin/strata-server" --cluster --data-dir "$root/$name" --node-name "$name" \
    --config "$root/node.toml" --fsync never \
    --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$((19379 + i))" \
    --tls-cert "$root/certs/$name.crt" --tls-key "$root/certs/$name.key" \
    --repl-listen "127.0.0.1:$((17479 + i))" --repl-ca "$root/certs/ca.crt" \
    --repl-cert "$root/certs/$name.crt" --repl-key "$root/certs/$name.key" \
    2>"$root/$name.log" &
  pids+=($!)
  addrs+=("127.0.0.1:$port")
done
for addr in "${addrs[@]}"; do
  for _ in $(seq 1 150); do
    "$bin/strata-cli" "${ca[@]}" --addr "$addr" ping >/dev/null 2>&1 && break
    sleep 0.2
  done
done
"$bin/strata-admin" cluster create --replicas 0 "${ca[@]}" "${addrs[0]}" "${addrs[1]}" >&2

load=("$bin/strata-bench" --cluster "${ca[@]}" --addr "${addrs[0]},${addrs[1]}"
  --keys "$keys" --value-size "$value" --ratio "$mix" --connections 2 --inflight 16 --quiet --json)
echo "preloading $keys keys of $value bytes" >&2
"${load[@]}" --preload --requests 1 >/dev/null
echo "baseline: $secs s of $mix load" >&2
"${load[@]}" --duration "$secs" >"$root/before.json"

echo "moving a third of the ring to shard 3 under the same load" >&2
# Measured from the end of the load's 1 s warmup to the end of the move:
# the load is interrupted (SIGINT: it finishes the requests in flight and
# reports) when strata-admin says the migration finished.
"${load[@]}" --duration 3600 >"$root/during.json" &
bench=$!
sleep 1.2
"$bin/strata-admin" cluster add-shard "${ca[@]}" --addr "${addrs[0]}" --shard 3 "${addrs[2]}" \
  2>"$root/move.log"
kill -INT "$bench"
# A failed check (a read older than an acknowledged write) is reported below.
wait "$bench" || echo "strata-bench reported errors or mismatches during the move" >&2
finished=$(grep -o 'finished in [0-9.]* s' "$root/move.log" | grep -o '[0-9.]*' || true)
"$bin/strata-cli" "${ca[@]}" --addr "${addrs[2]}" info >"$root/m3.info"

python3 - "$root/before.json" "$root/during.json" "$root/m3.info" "$finished" "$secs" <<'EOF'
import json, re, sys
before, during = (json.load(open(p)) for p in sys.argv[1:3])
info = open(sys.argv[3]).read()
took, secs = sys.argv[4], float(sys.argv[5])
# The receiver's imports, one per owner: "done entries=N/EST bytes=B/EST ...".
imports = re.findall(r"cluster_import\.\d+\s+\S+ entries=(\d+)/\d+ bytes=(\d+)/", info)
entries = sum(int(e) for e, _ in imports)
copied = sum(int(b) for _, b in imports)
if took:
    t = float(took)
    print(f"migration: {entries} keys, {copied / 1e6:.1f} MB copied in {t:.1f} s = {copied / 1e6 / t:.1f} MB/s")
else:
    print("migration: strata-admin reported no end; see its output")
for sample in during.get("mismatch_samples") or []:
    print(f"MISMATCH during the move: {sample}")
for sample in (during.get("error_samples") or [])[:5]:
    print(f"error during the move: {sample}")
for op in ("get", "set"):
    b, d = before[op], during[op]
    if not b["ops"]:
        continue
    bl, dl = b["latency_us"], d["latency_us"]
    print(f"{op}: before {b['ops_per_sec']:.0f}/s p50 {bl['p50']} us p99 {bl['p99']} us; "
          f"during {d['ops_per_sec']:.0f}/s p50 {dl['p50']} us p99 {dl['p99']} us "
          f"(p99 x{dl['p99'] / max(bl['p99'], 1):.2f}, errors {d['errors']})")
EOF
