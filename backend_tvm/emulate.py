"""Kernels built for a board and run alone from C (runtime/tests/kernel_harness.c: no libtvm on the
'board'), natively or under qemu-user, and the executed-instruction count of one call under qemu
(our TCG plugin, runtime/tools/insn_count.c): how `mpqdm profile --count-instructions` measures an
emulated board's kernel paths, and how the tests and benchmarks reach the aarch64 builds."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

from mpqdm.core.board import Board

from .build import make
from .tvm_compat import target, tvm

_DTYPES = {np.dtype(np.uint8): (1, 8), np.dtype(np.int32): (0, 32), np.dtype(np.uint32): (1, 32),
           np.dtype(np.float32): (2, 32), np.dtype(np.int8): (0, 8)}


def compile_object(mod: tvm.IRModule, board: Board, path: Path) -> Path:
    """Kernels of `mod` for the board's target, as one object file."""
    ex = tvm.compile(mod, target=target(board.tvm_target_dict()))
    ex.mod.write_to_file(str(path))
    return path


def link(objects: list[Path], board: Board, symbol: str, out: Path) -> Path:
    """The harness running kernel `symbol` of `objects` (`make -C runtime harness`, the board's compiler)."""
    cc = shutil.which(board.cc)
    if cc is None:
        raise FileNotFoundError(f"compiler {board.cc!r} of board {board.name!r} is not installed; "
                                "Possible solutions: bash scripts/install.sh")
    out = Path(out).resolve()
    make("harness", "the kernel harness", cc=cc, board_cflags=" ".join(board.cflags), build=out.parent / ".build",
         kernels=" ".join(str(Path(o).resolve()) for o in objects), symbol=symbol, static=int(board.is_cross), out=out)
    return out


def write_args(path: Path, arrays: list[np.ndarray], outputs: set[int]) -> None:
    with open(path, "wb") as fh:
        fh.write(b"MPQK" + struct.pack("<I", len(arrays)))
        for i, a in enumerate(arrays):
            a = np.ascontiguousarray(a)
            code, bits = _DTYPES[a.dtype]
            fh.write(struct.pack("<4B", code, bits, a.ndim, int(i in outputs)))
            fh.write(struct.pack(f"<{a.ndim}q", *a.shape))
            fh.write(a.tobytes())


def insn_plugin(work: Path) -> Path:
    """The instruction-counting TCG plugin for the build machine's qemu (`make -C runtime insn-plugin`)."""
    out = Path(work).resolve() / "libinsn_count.so"
    make("insn-plugin", "the qemu plugin", build=out.parent / ".build", out=out)
    return out


def counted(qemu_cmd: list[str], plugin: Path, timeout: float = 1200, blocks: Path | None = None) -> dict[str, int]:
    """Run a qemu-user command line (qemu first) under the counting plugin: {"insns", "dots"} (executed
    instructions, of them Arm dot-product instructions); `blocks`: also write the per-block counts
    there (by_symbol reads them)."""
    arg = str(plugin) + (f",tbs={Path(blocks).resolve()}" if blocks is not None else "")
    cmd = [qemu_cmd[0], "-plugin", arg, "-d", "plugin", *qemu_cmd[1:]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(qemu_cmd[-3:])} under qemu exited with {r.returncode}: "
                           f"{r.stderr.strip()[-2000:]}")
    found = {}
    for line in (r.stdout + r.stderr).splitlines():
        key, _, value = line.partition(": ")
        if key in ("insns", "dots") and value.strip().isdigit():
            found[key] = int(value)
    if "insns" not in found:
        raise RuntimeError(f"no instruction count from the plugin: {(r.stdout + r.stderr)[-1000:]}")
    return found


def count_instructions(exe: Path, board: Board, arrays: list[np.ndarray], outputs: set[int], work: Path,
                       plugin: Path | None = None) -> int:
    """Guest instructions of one kernel call under qemu (1 thread): a run with 2 calls minus one with 1
    (`plugin`: insn_plugin's, built here when not given)."""
    if not board.is_cross or not board.qemu:
        raise ValueError(f"board {board.name!r} does not run under qemu")
    plugin = plugin or insn_plugin(work)
    write_args(work / "args.bin", arrays, outputs)
    counts = [counted([*board.qemu_command(exe), str(work / "args.bin"), str(work / "out.bin"), "1", str(calls)],
                      plugin)["insns"] for calls in (1, 2)]
    return counts[1] - counts[0]
