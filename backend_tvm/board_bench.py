"""`mpqdm bench DIR --board B [--tracker HOST:PORT]`: a compiled model run whole on a board.

The C runtime is built with the model's kernels as a shared object (modules.bench_module) that the
board's stock TVM RPC server loads; its mpq_bench runs the sampling loop with the per-call profile,
like `mpqdm-run --bench`. Without a tracker it runs here, in this process.
"""

from __future__ import annotations

from pathlib import Path

from mpqdm.boards.registry import load_board
from mpqdm.core.errors import UserError
from mpqdm.core.io import write_json
from mpqdm.core.machine import commit

from . import modules
from .build import read_compiled
from .farm import Farm
from .plan import call_kind


def bench(compiled_dir, board_name: str, tracker: str | None = None, key: str | None = None,
          threads: int | None = None, count: int = 2, wait_s: float = 60.0) -> dict:
    d = Path(compiled_dir)
    board = load_board(board_name)
    art_path = d / "model.mpq"
    art = read_compiled(d, board)
    if tracker is None and board.is_cross:
        raise UserError(f"board {board.name!r} runs its benchmark on the board. Possible solutions: --tracker "
                        f"HOST:9190 with the board's rpc_server registered under key {board.name}")
    threads = threads or board.threads
    farm = Farm(board, tracker, key or board.name, wait_s) if tracker else Farm.local(board)
    farm.check_reachable()
    so = modules.bench_module(d, board)
    r = farm.bench_artifact(so, art_path.read_bytes(), threads, count)
    by_kind: dict[str, float] = {}
    for c, ms in zip(art["calls"], r["ms_per_call"], strict=True):
        k = call_kind(c["kernel"])
        by_kind[k] = by_kind.get(k, 0.0) + ms
    out = {"board": board.name, "key": r["key"], "cpu": r["cpu"], "features": r["features"],
           "emulated": r["emulated"], "threads": threads, "count": count, "commit": commit(),
           "ms_per_step": r["ms_per_step"], "ms_by_kind": {k: round(v, 4) for k, v in sorted(
               by_kind.items(), key=lambda kv: -kv[1])},
           "arena_kb": r["arena_kb"], "artifact_kb": r["artifact_kb"], "peak_rss_mb": r["peak_rss_mb"],
           "calls": [{"kernel": c["kernel"], "op": c["op"], "ms": round(ms, 5)}
                     for c, ms in zip(art["calls"], r["ms_per_call"], strict=True)]}
    write_json(d / f"bench-{r['key']}.json", out)
    return out
