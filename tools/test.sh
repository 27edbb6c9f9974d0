#!/usr/bin/env bash
# Runs strata's whole test suite: installs build prerequisites if missing,
# then `cargo test` with every feature (crash points and test helpers on).
# Extra arguments go to cargo test, e.g. `tools/test.sh --test store_crash`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/prereqs.sh
exec cargo test --all-features "$@"
