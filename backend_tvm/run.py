"""Running a built mpqdm-run from Python: natively, or under the board's emulator (core/board.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np

from mpqdm.core.errors import UserError


def run_binary(cmd: list[str], model: Path, noise: np.ndarray, out: Path, *extra: str,
               timeout: int = 1200) -> np.ndarray:
    """Run `cmd model --noise ... --out out *extra`; returns samples.f32 (or eps.f32) as NHWC."""
    out.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(noise, np.float32).tofile(out / "noise.f32")
    try:
        r = subprocess.run([*cmd, str(model), "--noise", str(out / "noise.f32"), "--out", str(out), *extra],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"{' '.join(cmd)} ran past {timeout} s") from None
    if r.returncode != 0:
        raise UserError(f"{' '.join(cmd)} exited with {r.returncode}: {r.stderr.strip()[-3000:]}")
    name = "eps.f32" if "--unet-step" in extra else "samples.f32"
    return np.fromfile(out / name, np.float32).reshape(noise.shape)


def bench_binary(cmd: list[str], model: Path, out: Path, threads: int = 1, count: int = 4,
                 timeout: int = 600, per_call: bool = False) -> dict:
    """`mpqdm-run --bench` on `count` samples: mean and median ms per step, ms by call kind, arena KB and
    peak RSS MB (its own report); `per_call`: also each call's (kind, ms) in plan order."""
    try:
        r = subprocess.run([*cmd, str(model), "--bench", "--count", str(count), "--threads", str(threads), "--out",
                            str(out)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"{' '.join(cmd)} --bench ran past {timeout} s") from None
    if r.returncode != 0:
        raise UserError(f"{' '.join(cmd)} --bench exited with {r.returncode}: {r.stderr.strip()[-2000:]}")
    step = re.search(r"per step: ([0-9.]+) ms", r.stdout)
    median = re.search(r"median step: ([0-9.]+) ms", r.stdout)
    mem = re.search(r"arena ([0-9.]+) KB, artifact ([0-9.]+) KB, peak RSS ([0-9.]+) MB", r.stdout)
    if not step or not median or not mem:
        raise UserError(f"cannot read the --bench report of {' '.join(cmd)}: {r.stdout[-500:]}")
    calls = [(m.group(1), float(m.group(2)))
             for m in re.finditer(r"^\d+\s+mpq_(\w+?)_\d+\s+\S+\s+([0-9.]+)$", r.stdout, re.M)]
    by_kind: dict[str, float] = {}
    for kind, ms in calls:
        by_kind[kind] = round(by_kind.get(kind, 0.0) + ms, 4)
    return {"ms_per_step": float(step.group(1)), "median_ms_per_step": float(median.group(1)),
            "arena_kb": float(mem.group(1)), "peak_rss_mb": float(mem.group(3)), "threads": threads,
            "count": count, "ms_by_kind": by_kind, **({"ms_by_call": calls} if per_call else {})}
