"""Run single generated kernels from C (runtime/tests/kernel_harness.c), natively or under qemu:
how kernel tests reach the aarch64 builds without libtvm on the 'board'."""

from __future__ import annotations

import bisect
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

from mpqdm.backend_tvm.build import make
from mpqdm.backend_tvm.tvm_compat import target, tvm
from mpqdm.core.board import Board

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


def run(exe: Path, board: Board, arrays: list[np.ndarray], outputs: set[int], work: Path,
        threads: int = 1) -> list[np.ndarray]:
    """Run the harness on `arrays`; returns the output arrays (same shapes and dtypes)."""
    write_args(work / "args.bin", arrays, outputs)
    cmd = board.qemu_command(exe) if board.is_cross else [str(exe)]
    r = subprocess.run([*cmd, str(work / "args.bin"), str(work / "out.bin"), str(threads)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{exe.name} on {board.name} exited with {r.returncode}: {r.stderr.strip()[-2000:]}")
    raw = (work / "out.bin").read_bytes()
    res, off = [], 0
    for i in sorted(outputs):
        a = arrays[i]
        res.append(np.frombuffer(raw[off: off + a.nbytes], dtype=a.dtype).reshape(a.shape))
        off += a.nbytes
    return res


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


def by_symbol(blocks: Path, binary: Path, nm: str = "aarch64-linux-gnu-nm") -> dict[str, int]:
    """Executed instructions per function of a statically linked `binary`, from the plugin's per-block
    counts (`counted(..., blocks=)`): each block is charged to the last symbol at or below its address."""
    out = subprocess.run([nm, "-n", "--defined-only", str(binary)], capture_output=True, text=True, check=True).stdout
    syms = [(int(a, 16), name) for a, kind, name in (ln.split(maxsplit=2) for ln in out.splitlines()
                                                      if ln.count(" ") >= 2) if kind.lower() in "tw"]
    addrs = [a for a, _ in syms]
    totals: dict[str, int] = {}
    for line in Path(blocks).read_text().splitlines():
        vaddr, n, execs = line.split()
        i = bisect.bisect_right(addrs, int(vaddr, 16)) - 1
        name = syms[i][1] if i >= 0 else "?"
        totals[name] = totals.get(name, 0) + int(n) * int(execs)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def count_instructions(exe: Path, board: Board, arrays: list[np.ndarray], outputs: set[int], work: Path) -> int:
    """Guest instructions of one kernel call under qemu (1 thread): a run with 2 calls minus one with 1."""
    if not board.is_cross or not board.qemu:
        raise ValueError(f"board {board.name!r} does not run under qemu")
    plugin = insn_plugin(work)
    write_args(work / "args.bin", arrays, outputs)
    counts = [counted([*board.qemu_command(exe), str(work / "args.bin"), str(work / "out.bin"), "1", str(calls)],
                      plugin)["insns"] for calls in (1, 2)]
    return counts[1] - counts[0]
