#!/usr/bin/env bash
# Installs the system packages strata's build needs, if they are missing.
# RocksDB's Rust bindings are generated at build time with libclang.
set -euo pipefail

missing=()
# bindgen loads libclang.so itself (libclang-cpp, which some images ship, is
# not enough). LIBCLANG_PATH points bindgen at one installed elsewhere.
if [ -z "${LIBCLANG_PATH:-}" ] &&
   ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null &&
   ! compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null; then
  missing+=(libclang-dev)
fi
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
# jemalloc (strata-server's allocator) is built with its own configure and make.
command -v make >/dev/null 2>&1 || missing+=(make)

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
