"""`mpqdm profile`: time every kernel configuration the allocator can choose for a model's layer
shapes on a board, and merge the timings into boards/<board>/latency.json (core/latency.py).

Per quantized layer shape: every weight width in `wbits` x activation width in `abits`, each at
full width (c_out channels) and at one partial width (half, rounded to the packing's lanes) for
the fixed cost. Layers the policy keeps at 8 bits get W8A8 only. The host is timed in-process;
a board needs TVM's RPC tracker (not built yet): nothing is made up for boards not measured.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mpqdm.boards.registry import latency_path, load_board
from mpqdm.core.bits import ABITS, CANDIDATE_WBITS, check_bits
from mpqdm.core.errors import UserError
from mpqdm.core.io import ensure_writable_dir
from mpqdm.core.latency import LatencyTable, partial_width
from mpqdm.core.machine import commit
from mpqdm.core.scheme import ConvSpec, random_args
from mpqdm.frontend.model_io import load_unet
from mpqdm.frontend.quant.shapes import layer_specs
from mpqdm.frontend.quant.swap import LayerPolicy

from .kernels.qconv_schedule import schedule_qconv
from .tvm_compat import TVM_VERSION, target, tensor, tvm

DEFAULT_WBITS, DEFAULT_ABITS = CANDIDATE_WBITS, ABITS


def time_kernel(spec: ConvSpec, board, repeats: int, min_repeat_ms: int, rng) -> tuple[float, float]:
    """(median ms, spread = (p90 - p10) / median) of the board's kernel for `spec` on this machine."""
    ex = tvm.compile(schedule_qconv(spec, board), target=target(board.tvm_target_dict()))
    args = [tensor(a) for a in random_args(spec, rng).ordered()]
    f = ex.mod.time_evaluator("qconv", tvm.cpu(), number=1, repeat=repeats, min_repeat_ms=min_repeat_ms)
    t = np.asarray(f(*args).results) * 1e3
    med = float(np.median(t))
    return med, float((np.percentile(t, 90) - np.percentile(t, 10)) / med)


NAMED_MODELS = ("ddpm-cifar10",)


def load_model(model) -> object:
    """A diffusers folder, or 'ddpm-cifar10': that public architecture with random weights."""
    if str(model) == "ddpm-cifar10":
        from mpqdm.frontend.fp_model import ddpm_cifar10_unet

        return ddpm_cifar10_unet()
    return load_unet(model)


def work_list(model_dir, wbits, abits, policy: LayerPolicy) -> list[tuple[str, ConvSpec, int, int, int]]:
    """Distinct (shape, wbits, abits, channels) jobs, each named by its first layer."""
    specs = layer_specs(load_model(model_dir))
    jobs, seen = [], set()
    for name, s in specs.items():
        kind = policy.kind(name)
        if kind == "float":
            continue
        pairs = [(8, 8)] if kind == "w8a8" else [(w, a) for w in wbits for a in abits]
        for w, a in pairs:
            for ch in (s.c_out, partial_width(s.c_out)):
                key = (s.shape_key(), w, a, ch)
                if key not in seen:
                    seen.add(key)
                    jobs.append((name, s, w, a, ch))
    return jobs


def profile(model_dir, board_name: str = "host", wbits=DEFAULT_WBITS, abits=DEFAULT_ABITS, repeats: int = 10,
            min_repeat_ms: int = 20, table_path: Path | None = None, progress: bool = True,
            threads: int | None = None) -> dict:
    """`mpqdm profile`; `threads` (default: the board profile's) must be set before TVM's pool starts."""
    board = load_board(board_name)
    set_threads(threads or board.threads)
    if board.name != "host":
        raise UserError(f"board {board.name!r} can only be profiled on the board itself (TVM RPC tracker), which "
                        "is not built yet; no timings are made up for it. Possible solutions: --board host")
    check_bits(wbits, "--wbits")
    check_bits(abits, "--abits", ABITS)
    path = Path(table_path or latency_path(board))
    table = LatencyTable.load_or_empty(path, board.name)       # a bad table is refused before the timing
    ensure_writable_dir(path.parent)
    threads = int(tvm.runtime.num_threads())
    tgt = board.tvm_target_dict()
    build_id = hashlib.sha256(f"{commit()}|{TVM_VERSION}|{tgt}".encode()).hexdigest()[:12]
    jobs = work_list(model_dir, wbits, abits, LayerPolicy())
    rng = np.random.default_rng(0)
    entries = []
    for _name, s, w, a, ch in tqdm(jobs, desc=f"profile {board.name}", disable=not progress):
        med, spread = time_kernel(s.with_width(ch, w, a), board, repeats, min_repeat_ms, rng)
        entries.append({"op": "qconv", "shape": s.shape_key(), "wbits": w, "abits": a, "threads": threads,
                        "channels": ch, "median_ms": round(med, 5), "spread": round(spread, 4), "repeats": repeats,
                        "build_id": build_id, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    table.merge(entries)
    table.save(path)
    return {"table": str(path), "entries": len(entries), "total_entries": len(table.entries), "threads": threads,
            "shapes": len({e["shape"] for e in entries}), "build_id": build_id}


def set_threads(n: int | None) -> None:
    """TVM's thread pool reads TVM_NUM_THREADS once, at its first use: call this before that."""
    if n is not None:
        if n < 1:
            raise UserError(f"--threads must be >= 1, got {n}")
        os.environ["TVM_NUM_THREADS"] = str(n)
