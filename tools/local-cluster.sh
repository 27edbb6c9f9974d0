#!/usr/bin/env bash
# A sharded cluster on loopback: three shards of a primary and a replica,
# six `strata-server --cluster` processes in ./strata-cluster (or $1),
# formed with `strata-admin cluster create --replicas 1`. Ctrl-C stops all
# six (gracefully); run it again on the same directory and the nodes come
# back with their identities, shards and map.
#
#   node  clients          node links       metrics          Redis clients
#   n1    127.0.0.1:7379   127.0.0.1:7479   127.0.0.1:9379   127.0.0.1:6379   shard 1 primary
#   n2    127.0.0.1:7380   127.0.0.1:7480   127.0.0.1:9380   127.0.0.1:6380   shard 1 replica
#   n3    127.0.0.1:7381   127.0.0.1:7481   127.0.0.1:9381   127.0.0.1:6381   shard 2 primary
#   ...   (n6: 7384, 7484, 9384, 6384, shard 3 replica)
#
# The nodes serve their cluster certificates to clients too, so one CA
# (certs/ca.crt) verifies all of them. STRATA_RELEASE=1 runs release
# builds (as the README's cluster benchmarks do); STRATA_SERVER_ARGS adds
# strata-server flags to every node (e.g. "--fsync never").
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-strata-cluster}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"

tools/prereqs.sh
# STRATA_RELEASE=1: release binaries, for benchmarks against the cluster.
if [ "${STRATA_RELEASE:-0}" = 1 ]; then
  cargo build --release --bin strata-server --bin strata-admin --bin strata-cli --bin strata-bench
  bin="$CARGO_TARGET_DIR/release"
else
  cargo build --bin strata-server --bin strata-admin --bin strata-cli
  bin="$CARGO_TARGET_DIR/debug"
fi
names=(n1 n2 n3 n4 n5 n6)

mkdir -p "$root"
if [ ! -f "$root/certs/ca.crt" ]; then
  "$bin/strata-admin" gen-certs --out "$root/certs" "${names[@]/#/--node=}"
fi

# STRATA_SERVER_ARGS: more strata-server flags for every node, e.g.
# "--fsync never".
read -r -a extra_args <<<"${STRATA_SERVER_ARGS:-}"
pids=()
stop() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

addrs=()
for i in "${!names[@]}"; do
  name=${names[$i]}
  port=$((7379 + i))
  "$bin/strata-server" --cluster --data-dir "$root/$name" --node-name "$name" \
    --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$((9379 + i))" \
    --resp-listen "127.0.0.1:$((6379 + i))" \
    --tls-cert "$root/certs/$name.crt" --tls-key "$root/certs/$name.key" \
    --repl-listen "127.0.0.1:$((7479 + i))" --repl-ca "$root/certs/ca.crt" \
    --repl-cert "$root/certs/$name.crt" --repl-key "$root/certs/$name.key" \
    "${extra_args[@]}" \
    2> >(sed -u "s/^/[$name] /" >&2) &
  pids+=($!)
  addrs+=("127.0.0.1:$port")
done

admin=("$bin/strata-admin" cluster)
ca=(--ca "$root/certs/ca.crt")
# Wait for every node to answer a ping (at most 30 s each), then form the
# cluster once.
for addr in "${addrs[@]}"; do
  up=0
  for _ in $(seq 1 150); do
    if "$bin/strata-cli" "${ca[@]}" --addr "$addr" ping >/dev/null 2>&1; then
      up=1
      break
    fi
    sleep 0.2
  done
  if [ "$up" -ne 1 ]; then
    echo "the node at $addr did not answer within 30 s (its log is above); stopping" >&2
    exit 1
  fi
done
if [ ! -f "$root/formed" ]; then
  "${admin[@]}" create --replicas 1 "${ca[@]}" "${addrs[@]}"
  touch "$root/formed"
else
  "${admin[@]}" status "${ca[@]}" --addr "${addrs[0]}"
fi

cat >&2 <<EOF
strata cluster running in $root (Ctrl-C stops it). Try:
  $bin/strata-admin cluster status --ca $root/certs/ca.crt --addr 127.0.0.1:7379
  $bin/strata-cli --cluster --ca $root/certs/ca.crt --addr 127.0.0.1:7379 set user:1 ann
  $bin/strata-cli --cluster --ca $root/certs/ca.crt --addr 127.0.0.1:7379 get user:1
  redis-cli -c -p 6379 set user:2 bob     # any gateway; -c follows -MOVED
EOF
wait
