#!/usr/bin/env bash
# Builds an aarch64 sysroot that runs Python under qemu-aarch64 (an emulated Raspberry Pi for TVM's RPC farm;
# mpqdm/testing/emulated.py): Debian 12's arm64 python3.11 and the libraries it and the wheels need (apt-get
# download, dpkg -x), and aarch64 wheels installed with pip --target into DIR/site.
#   bash scripts/arm_sysroot.sh [DIR]          (default out/arm-sysroot)
# Idempotent: DIR/.stamp records the package lists and the versions; a rerun with the same lists does nothing.
# Needs only apt-get, dpkg-deb, pip and qemu-aarch64; no root (apt runs on a private state folder, arm64 only).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$(realpath -m "${1:-$ROOT/out/arm-sysroot}")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"

# Debian 12 arm64: python3.11 (binary, stdlib) and the shared libraries of it, its extension modules and the wheels
APT_PKGS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6 libexpat1 zlib1g
libssl3 libffi8 libbz2-1.0 liblzma5 libcrypt1 libuuid1 libsqlite3-0 libncursesw6 libtinfo6 libreadline8"
# aarch64 wheels (the RPC server: TVM with its rpc extras; the int8 peer on ARM: ONNX Runtime and what it imports);
# versions from pyproject.toml where it pins them
PIP_PKGS="apache-tvm apache-tvm-ffi numpy tornado psutil cloudpickle onnxruntime flatbuffers packaging protobuf"
PIP_PLATFORM="manylinux_2_28_aarch64"
# wheel files a board does not need, removed after pip: TVM's compiler library (240 MB, LLVM inside) doubles
# the import time under qemu; without it TVM loads its runtime only, all an RPC server runs
PRUNE="tvm/lib/libtvm_compiler.so"

say() { echo "arm_sysroot: $*"; }
die() { echo "arm_sysroot: error: $*" >&2; exit 1; }

for tool in apt-get dpkg-deb qemu-aarch64; do
  command -v "$tool" >/dev/null || die "$tool is not installed; Possible solutions: bash scripts/install.sh (Debian)"
done
[ -x "$PY" ] || command -v "$PY" >/dev/null || die "no Python at $PY; Possible solutions: bash scripts/install.sh, or PYTHON=python3.11"

pin() {   # name -> name==version as pyproject.toml pins it (extras dropped), else the bare name
  local spec
  spec="$(grep -oE "\"$1(\[[^]\"]*\])?==[^\" ]+\"" "$ROOT/pyproject.toml" | head -1 | tr -d '"' | sed -E 's/\[[^]]*\]//')"
  echo "${spec:-$1}"
}
PIP_SPECS=""
for p in $PIP_PKGS; do PIP_SPECS="$PIP_SPECS $(pin "$p")"; done
WANT="$(printf 'apt: %s\npip:%s\nplatform: %s\nprune: %s\n' "$(echo $APT_PKGS)" "$PIP_SPECS" "$PIP_PLATFORM" "$PRUNE")"
WANT_LINES="$(echo "$WANT" | wc -l)"

STAMP="$DIR/.stamp"
if [ -f "$STAMP" ] && [ "$(head -n "$WANT_LINES" "$STAMP")" = "$WANT" ]; then
  say "$DIR is up to date (built $(sed -n "$((WANT_LINES + 1))p" "$STAMP")); nothing to do"
  exit 0
fi

if [ -e "$DIR" ] && [ ! -f "$STAMP" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
  die "$DIR exists and is not a sysroot this script built (no .stamp); Possible solutions: another DIR, or remove it"
fi
T0=$(date +%s)
NEW="$DIR.partial"
APT_DIR="$(mktemp -d)"
trap 'rm -rf "$APT_DIR"' EXIT
rm -rf "$NEW"
mkdir -p "$NEW" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/debs"
APT=(-q -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o "Dir::State::Lists=$APT_DIR/lists"
     -o "Dir::Cache=$APT_DIR/cache" -o Dir::State::status=/dev/null -o Debug::NoLocking=1)

say "apt-get update (arm64 package lists, private state in $APT_DIR)"
apt-get "${APT[@]}" update >"$APT_DIR/update.log" 2>&1 \
  || die "apt-get update failed (is the Debian mirror reachable?):$(tail -5 "$APT_DIR/update.log")"
say "apt-get download (arm64):" $APT_PKGS
(cd "$APT_DIR/debs" && apt-get "${APT[@]}" download $(for p in $APT_PKGS; do echo "$p:arm64"; done)) \
  >"$APT_DIR/download.log" 2>&1 || die "apt-get download failed:$(tail -5 "$APT_DIR/download.log")"
VERSIONS=""
for deb in "$APT_DIR"/debs/*.deb; do
  dpkg-deb -x "$deb" "$NEW"
  VERSIONS="$VERSIONS $(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)"
done
rm -rf "$NEW/usr/share/doc" "$NEW/usr/share/man" "$NEW/usr/share/lintian" "$NEW/usr/share/locale"

say "pip install --target $NEW/site --platform $PIP_PLATFORM:$PIP_SPECS"
"$PY" -m pip install -q --disable-pip-version-check --target "$NEW/site" --platform "$PIP_PLATFORM" \
  --python-version 3.11 --implementation cp --abi cp311 --only-binary=:all: $PIP_SPECS \
  || die "pip could not install the aarch64 wheels$PIP_SPECS (see above)"
say "remove (not needed on a board): $PRUNE"
for f in $PRUNE; do rm -f "$NEW/site/$f"; done
WHEELS="$(cd "$NEW/site" && ls -d *.dist-info | sed -E 's/\.dist-info$//; s/-/==/' | tr '\n' ' ')"

# bytecode now (CPython 3.11 bytecode is the same on every 3.11): imports under qemu skip compiling the stdlib
say "compileall (stdlib)"
"$PY" -m compileall -q -j 0 "$NEW/usr/lib/python3.11" >/dev/null || die "compileall failed on the stdlib"

say "smoke test: import tvm under qemu-aarch64"
SMOKE='import platform, numpy, tornado, psutil, cloudpickle, tvm, tvm.rpc, onnxruntime
print(platform.machine(), "python", platform.python_version(), "tvm", tvm.__version__, "numpy", numpy.__version__,
      "onnxruntime", onnxruntime.__version__)'
# onnxruntime's CPU detection (cpuinfo) crashes on the host's x86 /proc/cpuinfo, which qemu-user 7.2 passes
# through; qemu looks for absolute paths under -L first, so the guest reads a Pi's one from DIR/proc
# (mpqdm/testing/emulated.py writes one per emulated CPU, in DIR/cpu/NAME; this one is the Pi 5's)
mkdir -p "$NEW/proc"
printf 'processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n\n' >"$NEW/proc/cpuinfo"
PYV="$(qemu-aarch64 -L "$NEW" -E "PYTHONHOME=$NEW/usr" -E "PYTHONPATH=$NEW/site" -E PYTHONNOUSERSITE=1 \
  "$NEW/usr/bin/python3.11" -c "$SMOKE" 2>&1)" \
  || die "the sysroot's python cannot import tvm under qemu-aarch64: $(echo "$PYV" | tail -5)"
say "$PYV"

printf '%s\n%s\napt:%s\npip: %s\n' "$WANT" "$(date -u +%FT%TZ) $(du -sm "$NEW" | cut -f1) MB" "$VERSIONS" "$WHEELS" \
  >"$NEW/.stamp"
rm -rf "$DIR"
mv "$NEW" "$DIR"
say "built $DIR ($(du -sm "$DIR" | cut -f1) MB) in $(( $(date +%s) - T0 )) s"
