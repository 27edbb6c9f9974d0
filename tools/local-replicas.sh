#!/usr/bin/env bash
# One replica group: a primary and two replicas on loopback, in
# ./strata-replicas (or $1). For a sharded cluster see local-cluster.sh.
# Ctrl-C stops all three (gracefully: each checkpoints and exits 0).
#
#   node  clients          replication      metrics
#   n1    127.0.0.1:7379   127.0.0.1:7479   127.0.0.1:9379   primary
#   n2    127.0.0.1:7380   127.0.0.1:7480   127.0.0.1:9380   replica of n1
#   n3    127.0.0.1:7381   127.0.0.1:7481   127.0.0.1:9381   replica of n1
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-strata-replicas}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"

tools/prereqs.sh
cargo build --bin strata-server --bin strata-admin --bin strata-cli
bin="$CARGO_TARGET_DIR/debug"

mkdir -p "$root"
if [ ! -f "$root/certs/ca.crt" ]; then
  "$bin/strata-admin" gen-certs --out "$root/certs" --node n1 --node n2 --node n3
fi

pids=()
stop() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

start() { # name client-port repl-port metrics-port [extra flags...]
  local name=$1 port=$2 repl=$3 metrics=$4
  shift 4
  "$bin/strata-server" --data-dir "$root/$name" --node-name "$name" \
    --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics" \
    --repl-listen "127.0.0.1:$repl" --repl-ca "$root/certs/ca.crt" \
    --repl-cert "$root/certs/$name.crt" --repl-key "$root/certs/$name.key" "$@" \
    2> >(sed -u "s/^/[$name] /" >&2) &
  pids+=($!)
}

start n1 7379 7479 9379
start n2 7380 7480 9380 --replica-of 127.0.0.1:7479
start n3 7381 7481 9381 --replica-of 127.0.0.1:7479

cat >&2 <<EOF
strata replica group running in $root (Ctrl-C stops it). Try:
  $bin/strata-cli --data-dir $root/n1 --addr 127.0.0.1:7379 set k v --ack semi-sync:2
  $bin/strata-cli --data-dir $root/n2 --addr 127.0.0.1:7380 get k
  $bin/strata-cli --data-dir $root/n2 --addr 127.0.0.1:7380 info
EOF
wait
