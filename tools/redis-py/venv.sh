#!/usr/bin/env bash
# Makes (once) a virtualenv with the redis-py pinned in requirements.txt,
# in ${STRATA_CACHE:-$HOME/.cache/strata}/redis-py-<pin>, and prints the
# path of its python. Installs Debian's python3-venv first when this
# machine's python3 cannot make a virtualenv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pin="$(tr -d ' \n' <"$here/requirements.txt")"
version="${pin#redis==}"
venv="${STRATA_CACHE:-$HOME/.cache/strata}/redis-py-${version//[^A-Za-z0-9.]/-}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import redis" 2>/dev/null; then
  echo "redis-py: installing $pin into $venv" >&2
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq python3-venv >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
fi
echo "$venv/bin/python"
