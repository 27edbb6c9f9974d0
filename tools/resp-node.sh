# A single strata node with its RESP gateway on and no persistence, for the
# scripts that point Redis's own tools at it (tools/redis-tcl/run.sh,
# tools/redis-benchmark/run.sh). Source it after defining `die`; it defines
#
#   start_resp_node SERVER WORK [ARG...]  starts SERVER with its data in
#       WORK/data and the extra ARGs, waits (60 s at most) for its
#       `--ready-json` line, and sets `node_pid` and `port` (the RESP port)
#   stop_resp_node  stops it: TERM, 20 s at most for the graceful stop (which
#       checkpoints), then KILL
# shellcheck shell=bash

node_pid=""
port=""

start_resp_node() {
  local server="$1" work="$2"
  shift 2
  mkdir -p "$work/data"
  "$server" --data-dir "$work/data" --listen 127.0.0.1:0 --metrics-listen off \
    --fsync never --resp-listen 127.0.0.1:0 --ready-json "$@" \
    >"$work/ready.json" 2>"$work/server.log" &
  node_pid=$!
  for _ in $(seq 1 300); do # at most 60 s
    if ! kill -0 "$node_pid" 2>/dev/null; then
      cat "$work/server.log" >&2
      die "strata-server exited before it was ready"
    fi
    if grep -q '"resp_listen"' "$work/ready.json" 2>/dev/null; then
      port="$(sed -n -E 's/.*"resp_listen":"[^"]*:([0-9]+)".*/\1/p' "$work/ready.json")"
      # A line still being written gives no port yet: look again.
      [ -n "$port" ] && return 0
    fi
    sleep 0.2
  done
  die "strata-server printed no ready line with resp_listen within 60 s"
}

stop_resp_node() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$node_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
}
