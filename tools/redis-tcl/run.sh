#!/usr/bin/env bash
# Runs Redis's own Tcl test suite against strata's RESP gateway.
#
# Why: the gateway claims Redis's behaviour for the commands it implements
# (replies, error texts, expiry rules). Redis's suite is the reference for
# that behaviour, so running its string, expire, incr and keyspace units
# against a strata node checks the claim with tests we did not write.
#
# What it does:
#   1. Fetches the suite at run time (it is never committed): the source of
#      Debian's `redis` package, through `apt-get source` with a private
#      sources list (deb-src lines made from this machine's own Debian
#      entries) and private list and cache directories, so the system's
#      apt configuration and state are left untouched. The extracted tree
#      is cached in ${STRATA_CACHE:-$HOME/.cache/strata}/redis-tcl/, so
#      later runs do not download again (delete that directory to refresh).
#   2. Starts one strata node on loopback: a temporary data directory,
#      `--resp-listen 127.0.0.1:0`, `--fsync never`, `--metrics-listen off`,
#      `--max-key-bytes 65536`,
#      and waits (bounded) for its `--ready-json` line, which gives the
#      bound RESP port. The node is stopped when the script exits.
#   3. Runs `./runtest` in external-server mode (--host/--port, --singledb,
#      no encoding or digest checks, no tests tagged needs:debug or
#      needs:repl), skipping the tests listed in tools/redis-tcl/skip.txt
#      (each with the reason: a command or feature outside the gateway's
#      scope). Each unit runs in its own runtest invocation, one client, so
#      counts are per unit and an exception in one unit does not hide the
#      others; --durable makes a test that raises an error (an unexpected
#      error reply) count as failed instead of ending its unit. runtest's
#      --timeout bounds a hung test.
#   4. Prints ok / skipped / failed per unit and the path of the full log,
#      and exits non-zero if any test failed or any unit errored.
#
# Usage: tools/redis-tcl/run.sh [UNIT...]   (default: the four units below)
# Environment:
#   STRATA_SERVER   strata-server binary
#                   (default ${CARGO_TARGET_DIR:-target}/debug/strata-server)
#   STRATA_CACHE    cache root (default $HOME/.cache/strata)
#   REDIS_TCL_TIMEOUT  runtest's timeout in seconds: the longest it waits
#                   for any progress, so a hung test ends its unit (default 120)
#   REDIS_TCL_UNIT_TIMEOUT  hard bound on one unit's runtest, in seconds
#                   (default 1800)
#   REDIS_TCL_LOG   where to write the full log (default: a new temp file)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

server="${STRATA_SERVER:-${CARGO_TARGET_DIR:-target}/debug/strata-server}"
cache="${STRATA_CACHE:-$HOME/.cache/strata}/redis-tcl"
skipfile="$here/skip.txt"
timeout="${REDIS_TCL_TIMEOUT:-120}"
unit_timeout="${REDIS_TCL_UNIT_TIMEOUT:-1800}"
if [ "$#" -gt 0 ]; then
  units=("$@")
else
  units=(unit/type/string unit/expire unit/type/incr unit/keyspace)
fi

say() { echo "redis-tcl: $*" >&2; }
die() { say "$*"; exit 2; }

[ -x "$server" ] || die "no strata-server at $server (build it, or set STRATA_SERVER)"
[ -f "$skipfile" ] || die "no skip list at $skipfile"

# Debian packages this needs: tclsh runs the suite, dpkg-source unpacks it.
need_packages=()
command -v tclsh >/dev/null 2>&1 || need_packages+=(tcl)
command -v dpkg-source >/dev/null 2>&1 || need_packages+=(dpkg-dev)
if [ "${#need_packages[@]}" -gt 0 ]; then
  say "installing ${need_packages[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need_packages[@]}" >&2
fi

# shellcheck source=tools/resp-node.sh
. tools/resp-node.sh
work="$(mktemp -d -t strata-redis-tcl.XXXXXX)"
runtest_pid=""
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  # runtest runs under `timeout`, in its own process group: a TERM to
  # `timeout` reaches the runtest server and its test client too.
  if [ -n "$runtest_pid" ] && kill -0 "$runtest_pid" 2>/dev/null; then
    kill -TERM "$runtest_pid" 2>/dev/null || true
    wait "$runtest_pid" 2>/dev/null || true
  fi
  stop_resp_node
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. The suite --------------------------------------------------------

# Prints this machine's apt `deb` entries as one-line `deb-src` entries:
# from the main sources list and the parts directory (apt-config tells
# where they are), one-line files (*.list) and deb822 files (*.sources).
# Only the names apt itself reads count (so `*.list.disabled` does not).
deb_src_lines() {
  local main="" parts="" f files=()
  eval "$(apt-config shell main Dir::Etc::sourcelist/f parts Dir::Etc::sourceparts/d)"
  [ -n "$main" ] && [ -f "$main" ] && files+=("$main")
  for f in "${parts%/}"/*.list; do [ -f "$f" ] && files+=("$f"); done
  for f in "${files[@]}"; do
    # deb [options] uri suite [component...]  ->  deb-src (same rest)
    sed -n -E 's/^[[:space:]]*deb([[:space:]]+)/deb-src\1/p' "$f"
  done
  for f in "${parts%/}"/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush(   i, j, n_u, n_s, u, s, opts) {
        if (types ~ /(^|[[:space:]])deb([[:space:]]|$)/ && enabled !~ /^(no|false|0)$/ && uris != "" && suites != "") {
          opts = ""
          if (signed != "") opts = opts " signed-by=" signed
          if (arch != "") opts = opts " arch=" arch
          if (opts != "") opts = " [" substr(opts, 2) "]"
          n_u = split(uris, u, /[[:space:]]+/)
          n_s = split(suites, s, /[[:space:]]+/)
          for (i = 1; i <= n_u; i++) for (j = 1; j <= n_s; j++)
            if (u[i] != "" && s[j] != "") print "deb-src" opts " " u[i] " " s[j] " " comps
        }
        types = uris = suites = comps = signed = arch = enabled = ""; field = ""
      }
      function val(line) { sub(/^[^:]*:[[:space:]]*/, "", line); sub(/[[:space:]]+$/, "", line); return line }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]/ { if (field == "signed-by") signed = ""; next }   # continuation: an inline key, not a path
      {
        field = tolower($0); sub(/:.*/, "", field)
        if (field == "types") types = val($0)
        else if (field == "uris") uris = val($0)
        else if (field == "suites") suites = val($0)
        else if (field == "components") comps = val($0)
        else if (field == "signed-by") signed = val($0)
        else if (field == "architectures") arch = val($0)
        else if (field == "enabled") enabled = tolower(val($0))
      }
      END { flush() }
    ' "$f"
  done
}

fetch_suite() {
  if [ -x "$cache/src/runtest" ] && [ -f "$cache/src/tests/test_helper.tcl" ]; then
    return
  fi
  say "fetching Redis's test suite (Debian source package redis) into $cache"
  local apt="$work/apt"
  mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/get"
  deb_src_lines | sort -u >"$apt/sources.list"
  [ -s "$apt/sources.list" ] || die "no deb entries found in the apt sources to make deb-src lines from"
  say "deb-src entries used:"
  sed 's/^/  /' "$apt/sources.list" >&2
  # apt downloads as its sandbox user, which must reach and write there.
  chmod 755 "$work" "$apt"
  if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$apt/get"; fi
  local opts=(
    -o "Dir::Etc::SourceList=$apt/sources.list"
    -o "Dir::Etc::SourceParts=$apt/parts"
    -o "Dir::State::Lists=$apt/lists"
    -o "Dir::Cache=$apt/cache"
  )
  # An entry whose deb-src index is missing (some third-party repositories
  # publish none) makes update fail; what counts is that `source` finds redis.
  apt-get "${opts[@]}" -qq update >&2 || say "apt-get update reported errors (continuing)"
  (cd "$apt/get" && apt-get "${opts[@]}" -qq source --download-only redis >&2) ||
    die "apt-get source redis failed"
  local dscs=("$apt"/get/redis_*.dsc)
  local dsc="${dscs[0]}"
  [ -f "$dsc" ] || die "apt-get source left no redis .dsc"
  (cd "$apt/get" && dpkg-source --no-check -x "$dsc" redis-src >&2)
  [ -x "$apt/get/redis-src/runtest" ] || die "the redis source has no runtest"
  mkdir -p "$cache"
  rm -rf "$cache/src.new"
  mv "$apt/get/redis-src" "$cache/src.new"
  basename "$dsc" .dsc >"$cache/src.new/.strata-source-package"
  rm -rf "$cache/src"
  mv "$cache/src.new" "$cache/src"
  rm -rf "$apt"
}

fetch_suite
suite="$cache/src"
say "suite: $(cat "$suite/.strata-source-package" 2>/dev/null || echo redis) in $suite"

# --- 2. The node ---------------------------------------------------------

# Keys up to 64 KiB: one keyspace test sets a key of 50,000 bytes (Redis
# allows 512 MB), beyond strata's default 16 KiB.
start_resp_node "$server" "$work" --max-key-bytes 65536
say "strata-server pid $node_pid serving RESP on 127.0.0.1:$port"

# --- 3. The run ----------------------------------------------------------

log="${REDIS_TCL_LOG:-$(mktemp -t strata-redis-tcl-log.XXXXXX)}"
: >"$log"
summary="$work/summary"
: >"$summary"
start_all=$(date +%s)
any_bad=0
for unit in "${units[@]}"; do
  unit_log="$work/unit.log"
  started=$(date +%s)
  say "running $unit"
  (cd "$suite" && TERM=dumb exec timeout -k 10 "$unit_timeout" ./runtest \
    --host 127.0.0.1 --port "$port" --singledb --ignore-encoding --ignore-digest \
    --tags -needs:debug --tags -needs:repl --skipfile "$skipfile" \
    --clients 1 --timeout "$timeout" --durable --single "$unit") \
    </dev/null >"$unit_log" 2>&1 &
  runtest_pid=$!
  rc=0
  wait "$runtest_pid" || rc=$?
  runtest_pid=""
  { echo "===== $unit (runtest exit $rc)"; cat "$unit_log"; } >>"$log"
  # The runtest server prints one line per test: [ok], [err] (failed, or
  # raised an error), [skip] (in skip.txt) or [ignore] (its tags are
  # denied, or it cannot run against an external server); [exception] and
  # [TIMEOUT] end a unit early.
  ok=$(grep -c '^\[ok\]:' "$unit_log" || true)
  err=$(grep -c '^\[err\]:' "$unit_log" || true)
  skip=$(grep -c '^\[skip\]:' "$unit_log" || true)
  ignore=$(grep -c '^\[ignore\]:' "$unit_log" || true)
  status="done"
  if grep -q -E '^\[exception\]:' "$unit_log"; then
    status=exception
  elif grep -q -E '^\[TIMEOUT\]:' "$unit_log"; then
    status=timeout
  elif ! grep -q -E '^\[[0-9]+/[0-9]+ done\]: ' "$unit_log"; then
    status=unfinished
  elif [ "$rc" -ne 0 ] && [ "$err" -eq 0 ]; then
    status="rc=$rc"
  fi
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=killed; fi
  if ! kill -0 "$node_pid" 2>/dev/null; then status="node-died"; fi
  if [ "$err" -gt 0 ] || [ "$status" != "done" ]; then any_bad=1; fi
  printf '%s %s %s %s %s %s %s\n' "$unit" "$ok" "$skip" "$ignore" "$err" "$status" "$(( $(date +%s) - started ))" >>"$summary"
  grep -E '^\[(err|exception|TIMEOUT)\]:' "$unit_log" | sed 's/^/  /' >&2 || true
  if [ "$status" = node-died ]; then
    say "strata-server exited during $unit; not running the other units"
    break
  fi
done
# The node's own log (panics, warnings) goes at the end of the full log.
{ echo "===== strata-server log"; cat "$work/server.log"; } >>"$log"
total=$(( $(date +%s) - start_all ))

# --- 4. The summary ------------------------------------------------------

# skipped: listed in skip.txt; ignored: denied by tag (needs:debug,
# needs:repl) or not runnable against an external server / one database.
echo
printf '%-18s %5s %8s %8s %7s  %-10s %5s\n' unit ok skipped ignored failed status time
awk '{ printf "%-18s %5d %8d %8d %7d  %-10s %4ds\n", $1, $2, $3, $4, $5, $6, $7
       ok += $2; sk += $3; ig += $4; er += $5 }
     END { printf "%-18s %5d %8d %8d %7d\n", "total", ok, sk, ig, er }' "$summary"
echo "total time: ${total}s"
echo "full log: $log"
# One closing line in the 'N passed, N failed' form.
awk '{ ok += $2; sk += $3 + $4; er += $5 }
     END { printf "redis-tcl: %d passed, %d failed, %d skipped\n", ok, er, sk }' "$summary"
exit "$any_bad"
