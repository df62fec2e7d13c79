#!/usr/bin/env bash
# Installs everything mpqdm needs on a fresh Debian machine: with apt, the aarch64 cross toolchain,
# qemu, the host C compiler (kernel harness, qemu plugin) and clang with libFuzzer (loader fuzzer); then a
# virtual environment .venv with the pinned Python packages (pip).
set -euo pipefail
cd "$(dirname "$0")/.."

# clang with its sanitizer and libFuzzer runtimes (libclang-rt-14-dev holds libclang_rt.fuzzer/asan/ubsan):
# the loader fuzzer (make -C runtime fuzz; mpqdm/testing/fuzz.py); chromium: the deploy report's rendering test
APT_PKGS="make gcc libc6-dev gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user clang libclang-rt-14-dev libfuzzer-14-dev chromium"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "install.sh: apt-get install$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"    # editable: the checkout is the package
echo "install.sh: ready (.venv/bin/mpqdm)"
