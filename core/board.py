"""Board profiles (format owner): a board.toml in one folder per board (the boards/ package holds the
shipped ones and finds them by name). This module is the format's only reader.

Format (TOML, version 1)::

    format = "mpqdm.board"              # required, exactly this
    version = 1                         # required, this mpqdm reads version 1 only
    name = "rpi4"                       # required, equals the folder name
    description = "..."                 # required
    arch = "aarch64"                    # required: "x86_64" or "aarch64"
    memory_mb = 4096                    # required int >= 1
    threads = 4                         # required int >= 1: default thread count for kernels
    group_size = 16                     # required int >= 1: default channel-group size (kernel tile)
    cpu_features = ["neon"]             # required: features the artifact requires at start (the runtime checks
                                        # them), or "detect" (x86_64 only): known flags of this machine's
                                        # /proc/cpuinfo (see detect_host_features)

    [target]                            # required: TVM target as a dict (TVM 0.27 takes dict targets only)
    kind = "llvm"                       # required: "llvm", "cuda" or "c"
    mtriple = "aarch64-linux-gnu"       # any other key is passed to TVM as is (strings, numbers, lists)
    mcpu = "cortex-a72"
    mattr = ["+neon"]                   # or "detect": LLVM names of the detected features

    [toolchain]                         # required
    cc = "aarch64-linux-gnu-gcc"        # required: compiler for tvm.support.cc.cross_compiler ("gcc" on the host)
    cflags = ["-O2"]                    # optional, default []
    qemu = "qemu-aarch64"               # optional ("" = none): emulator to run board binaries on the build machine
    qemu_cpu = "cortex-a72"             # optional: qemu -cpu
    sysroot = "/usr/aarch64-linux-gnu"  # optional: qemu -L

    [cuda]                              # optional (Jetson)
    arch = "sm_87"                      # required in the table

Unknown keys (outside [target]) are errors, so typos do not pass silently. Every error is a UserError that names
the file, the field and the value, and ends with "Possible solutions: ...".
"""

import copy
import ctypes
import functools
import platform
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

FORMAT = "mpqdm.board"
VERSION = 2
ARCHES = ("x86_64", "aarch64")
TARGET_KINDS = ("llvm", "cuda", "c")
HOST_COMPILERS = ("cc", "gcc", "clang")

# /proc/cpuinfo flag -> feature name, and feature name -> LLVM mattr entry (x86_64)
_X86_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512vnni",
    "avx_vnni": "avx_vnni",
    "amx_int8": "amx_int8",     # Intel AMX tiles with int8 dot products (amx_tile comes with it)
}
_X86_MATTR = {"avx2": "+avx2", "fma": "+fma", "avx512f": "+avx512f", "avx512bw": "+avx512bw",
              "avx512vnni": "+avx512vnni", "avx_vnni": "+avxvnni", "amx_int8": "+amx-tile,+amx-int8"}
# Linux /proc/cpuinfo "Features" (aarch64) -> feature name
_ARM_FLAGS = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "asimdhp": "fp16", "sve": "sve"}
# features the runtime knows how to check, per arch
KNOWN_FEATURES = {"x86_64": tuple(_X86_FLAGS.values()), "aarch64": ("neon", "dotprod", "i8mm", "fp16", "sve")}

_TOP_KEYS = ("format", "version", "name", "description", "cpu", "arch", "memory_mb", "threads", "group_size",
             "cpu_features", "target", "toolchain", "cuda")
_TOOLCHAIN_KEYS = ("cc", "cflags", "qemu", "qemu_cpu", "sysroot")


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    cpu: str
    arch: str
    memory_mb: int
    threads: int
    group_size: int
    cpu_features: tuple[str, ...]
    target: dict[str, Any]
    cc: str
    cflags: tuple[str, ...]
    qemu: str | None
    qemu_cpu: str | None
    sysroot: str | None
    cuda_arch: str | None
    path: Path

    def tvm_target_dict(self) -> dict[str, Any]:
        """A copy of the target dict, for tvm.target.Target(...)."""
        return copy.deepcopy(self.target)

    @property
    def is_cross(self) -> bool:
        return self.arch != platform.machine() or self.cc not in HOST_COMPILERS

    def qemu_command(self, binary: str | Path) -> list[str]:
        """The command that runs a board binary on the build machine."""
        if self.qemu:
            cmd = [self.qemu]
            if self.qemu_cpu:
                cmd += ["-cpu", self.qemu_cpu]
            if self.sysroot:
                cmd += ["-L", self.sysroot]
            return [*cmd, str(binary)]
        if not self.is_cross:
            return [str(binary)]
        raise UserError(f"board {self.name!r} ({self.path}) has no emulator: its binaries cannot run here. "
                        "Possible solutions: set [toolchain] qemu in the profile, or run the binary on the board.")


def cpu_model(cpuinfo_text: str | None = None) -> str:
    """The first "model name" of /proc/cpuinfo (or of the given text); "" when there is none."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return ""


@functools.cache      # the grant is the process's for good: one request
def amx_state_granted() -> bool:
    """Whether Linux gives this process AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA;
    asking again is harmless). Kernels built for amx_int8 need it: without it their first tile
    instruction faults."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    return ctypes.CDLL(None, use_errno=True).syscall(158, 0x1023, 18) == 0     # SYS_arch_prctl


def detect_host_features(cpuinfo_text: str | None = None) -> tuple[str, ...]:
    """Known x86 features in the first "flags" line of /proc/cpuinfo (or of the given text), in a fixed
    order. This machine's amx_int8 counts only where the OS grants its tile state."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ()
        return tuple(f for f in detect_host_features(cpuinfo_text) if f != "amx_int8" or amx_state_granted())
    flags: set[str] = set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    return tuple(feat for flag, feat in _X86_FLAGS.items() if flag in flags)


def known_features(arch: str, flags) -> tuple[str, ...]:
    """The known features (KNOWN_FEATURES order) among a CPU's reported flags (x86 "flags", aarch64 "Features")."""
    names = {**_X86_FLAGS, **_ARM_FLAGS}
    got = {names.get(f, f) for f in flags}
    return tuple(f for f in KNOWN_FEATURES.get(arch, ()) if f in got)


def same_kernel_features(arch: str, measured, profile) -> bool:
    """Whether a CPU's known features and a profile's agree on those the kernels are chosen by (on
    aarch64 fp16 and sve are not: a Cortex-A76 reports fp16, which rpi5's profile need not list)."""
    used = set(KNOWN_FEATURES.get(arch, ())) - {"fp16", "sve"}
    return set(measured) & used == set(profile) & used


def _fail(path: Path, problem: str, solutions: str) -> UserError:
    return UserError(f"{path}: {problem}. Possible solutions: {solutions}.")


def _get(table: dict, key: str, typ: type | tuple, path: Path, where: str = "", required: bool = True):
    field = f"{where}{key}"
    if key not in table:
        if required:
            raise _fail(path, f"missing required field {field!r}",
                        f"add {field} to the profile (see the rpi4 board's board.toml)")
        return None
    value = table[key]
    # bool is an int subclass: reject it where an int is wanted
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise _fail(path, f"field {field!r} has value {value!r} of type {type(value).__name__}, expected {want}",
                    f"write {field} as a TOML {want}")
    return value


def _str_list(value: list, field: str, path: Path) -> tuple[str, ...]:
    if not all(isinstance(v, str) for v in value):
        raise _fail(path, f"field {field!r} has value {value!r}: not a list of strings", f"quote every {field} entry")
    return tuple(value)


def _check_keys(table: dict, allowed: tuple, where: str, path: Path) -> None:
    for key in table:
        if key not in allowed:
            raise _fail(path, f"unknown field {where}{key!r}",
                        f"fix the spelling; known fields{' in ' + where.rstrip('.') if where else ''}: "
                        + ", ".join(allowed))


def _positive(data: dict, key: str, path: Path) -> int:
    value = _get(data, key, int, path)
    if value < 1:
        raise _fail(path, f"field {key!r} has value {value!r}, must be at least 1", f"set {key} to a positive integer")
    return value


def _json_value(value: Any) -> bool:
    if isinstance(value, list):
        return all(_json_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_value(v) for k, v in value.items())
    return isinstance(value, str | int | float | bool)


def read_board(path: str | Path) -> Board:
    """Read and validate the profile `path` (a board.toml)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise _fail(path, f"invalid TOML ({e})", "fix the syntax at the place the TOML error names") from None

    fmt = _get(data, "format", str, path)
    version = _get(data, "version", int, path)
    if fmt != FORMAT or version != VERSION:
        raise _fail(path, f"unsupported profile format {fmt!r} version {version!r}; this mpqdm reads "
                    f"format {FORMAT!r} version {VERSION} only",
                    f"write the profile as format = {FORMAT!r}, version = {VERSION} (version 2 adds the field cpu, "
                    "the CPU model the board reports), or use a matching mpqdm")
    _check_keys(data, _TOP_KEYS, "", path)

    name = _get(data, "name", str, path)
    if name != path.parent.name:
        raise _fail(path, f"field 'name' has value {name!r} but the folder is {path.parent.name!r}",
                    "make name equal the folder name, or rename the folder")
    description = _get(data, "description", str, path)
    arch = _get(data, "arch", str, path)
    if arch not in ARCHES:
        raise _fail(path, f"field 'arch' has value {arch!r}", f"use one of {', '.join(ARCHES)}")
    cpu = _get(data, "cpu", str, path)
    if cpu == "detect":
        if arch != "x86_64" or arch != platform.machine():
            raise _fail(path, f"field 'cpu' has value 'detect' (arch {arch})",
                        "name the CPU model; detect is for the build machine's own x86_64 CPU")
        cpu = cpu_model()
    elif not cpu.strip():
        raise _fail(path, "field 'cpu' is empty", 'name the CPU model the board reports, e.g. "Cortex-A76"')
    memory_mb = _positive(data, "memory_mb", path)
    threads = _positive(data, "threads", path)
    group_size = _positive(data, "group_size", path)

    features = _get(data, "cpu_features", (list, str), path)
    if isinstance(features, str):
        if features != "detect" or arch != "x86_64":
            raise _fail(path, f"field 'cpu_features' has value {features!r} (arch {arch})",
                        'give a list of feature names, or "detect" (x86_64 boards only)')
        features = detect_host_features()
    features = _str_list(list(features), "cpu_features", path)
    unknown = [f for f in features if f not in KNOWN_FEATURES[arch]]
    if unknown:
        raise _fail(path, f"field 'cpu_features' has unknown {arch} feature(s) {unknown!r}",
                    f"use names from {', '.join(KNOWN_FEATURES[arch])}")

    target = dict(_get(data, "target", dict, path))
    kind = _get(target, "kind", str, path, "target.")
    if kind not in TARGET_KINDS:
        raise _fail(path, f"field 'target.kind' has value {kind!r}", f"use one of {', '.join(TARGET_KINDS)}")
    if target.get("mattr") == "detect":
        if arch != "x86_64":
            raise _fail(path, f"field 'target.mattr' has value 'detect' (arch {arch})",
                        "list the mattr entries; detect works for x86_64 boards only")
        target["mattr"] = [m for f in detect_host_features() for m in _X86_MATTR[f].split(",")]
    for key, value in target.items():
        if not _json_value(value):
            raise _fail(path, f"field 'target.{key}' has value {value!r}, not JSON-like",
                        "write TVM target options as strings, numbers, booleans, lists or tables")

    toolchain = _get(data, "toolchain", dict, path)
    _check_keys(toolchain, _TOOLCHAIN_KEYS, "toolchain.", path)
    cc = _get(toolchain, "cc", str, path, "toolchain.")
    if not cc:
        raise _fail(path, "field 'toolchain.cc' is empty", 'name a compiler, e.g. "gcc" or "aarch64-linux-gnu-gcc"')
    cflags = _str_list(_get(toolchain, "cflags", list, path, "toolchain.", required=False) or [],
                       "toolchain.cflags", path)
    opt = {k: _get(toolchain, k, str, path, "toolchain.", required=False) or None
           for k in ("qemu", "qemu_cpu", "sysroot")}

    cuda_arch = None
    cuda = _get(data, "cuda", dict, path, required=False)
    if cuda is not None:
        _check_keys(cuda, ("arch",), "cuda.", path)
        cuda_arch = _get(cuda, "arch", str, path, "cuda.")
        if not cuda_arch.startswith("sm_"):
            raise _fail(path, f"field 'cuda.arch' has value {cuda_arch!r}", 'use an sm_XX name, e.g. "sm_87"')

    return Board(name=name, description=description, cpu=cpu, arch=arch, memory_mb=memory_mb, threads=threads,
                 group_size=group_size, cpu_features=features, target=target, cc=cc, cflags=cflags,
                 qemu=opt["qemu"], qemu_cpu=opt["qemu_cpu"], sysroot=opt["sysroot"], cuda_arch=cuda_arch,
                 path=path.parent.resolve())
