"""Run single generated kernels from C (runtime/tests/kernel_harness.c), natively or under qemu:
how kernel tests reach the aarch64 builds without libtvm on the 'board'."""

from __future__ import annotations

import bisect
import subprocess
from pathlib import Path

import numpy as np

from mpqdm.backend_tvm.emulate import (  # noqa: F401  (the tests and benchmarks take them from here)
    compile_object,
    count_instructions,
    counted,
    insn_plugin,
    link,
    write_args,
)
from mpqdm.core.board import Board


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
