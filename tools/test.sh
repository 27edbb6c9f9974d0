#!/usr/bin/env bash
# Runs strata's whole test suite: installs build prerequisites if missing,
# makes the redis-py virtualenv that tests/resp_redis_py.rs uses, then
# `cargo test` with every feature (crash points and test helpers on), then
# Redis's Tcl tests against the RESP gateway (tools/redis-tcl/run.sh) and
# redis-benchmark's test sets (tools/redis-benchmark/run.sh).
# Extra arguments go to cargo test, e.g. `tools/test.sh --test store_crash`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/prereqs.sh
if [ -z "${STRATA_PYTHON:-}" ]; then
  STRATA_PYTHON="$(tools/redis-py/venv.sh)"
  export STRATA_PYTHON
fi
cargo test --all-features "$@"
# The whole suite (no arguments) ends with Redis's own tests of the
# commands the RESP gateway serves, and redis-benchmark's test sets,
# against the server just built.
if [ "$#" -eq 0 ]; then
  target="${CARGO_TARGET_DIR:-target}"
  STRATA_SERVER="$target/debug/strata-server" tools/redis-tcl/run.sh
  STRATA_SERVER="$target/debug/strata-server" tools/redis-benchmark/run.sh
fi
