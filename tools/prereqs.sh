#!/usr/bin/env bash
# Installs the system packages strata's build needs, if they are missing.
# RocksDB's Rust bindings are generated at build time with libclang.
set -euo pipefail

missing=()
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 &&
   ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  missing+=(libclang-dev)
fi
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing build prerequisites: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
