"""Allocator solve time on the DDPM CIFAR-10 UNet configuration (35.7M parameters, random weights,
statistics from a small random calibration), group size 16, bits {1, 2, 3, 4, 8}, 4-bit activations,
with the host latency table (the committed one, or one profiled into out/bench/ when it lacks this
model's call kinds). Budgets: the weight memory of uniform W3 and 97% of its latency, so the
ILP has to trade; the plan is then recomputed from the written BitPlan against both budgets.

Run: .venv/bin/python benchmarks/allocate_cifar.py     (makes the random model and its statistics
under out/bench/ first when missing, mpqdm/testing/bench.py; then 3 solves). Writes benchmarks/results/allocate_cifar.*
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mpqdm.allocator.ilp import Budgets, solve, totals
from mpqdm.allocator.problem import DEFAULT_COST, build, fixed_ms
from mpqdm.boards.registry import load_board
from mpqdm.core.bitplan import BitPlan
from mpqdm.core.latency import LatencyTable
from mpqdm.core.stats import read_stats
from mpqdm.testing.bench import cifar_random, cifar_stats, host_table_with, markdown_table, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

BITS, GROUP = (1, 2, 3, 4, 8), 16


def main() -> None:
    from mpqdm.allocator.allocate import plan_totals, to_plan

    board = load_board("host")
    stats = read_stats(cifar_stats(ROOT))
    table_path = host_table_with(cifar_random(ROOT), ROOT)
    table = LatencyTable.load(table_path, "host")
    entries = list(table.entries.values())
    source = {"path": str(table_path.relative_to(ROOT)), "cpu": sorted({e["cpu"] for e in entries}),
              "measured": max(e["measured"] for e in entries)}
    t = time.perf_counter()
    problems = build(stats, table, board.threads, GROUP, BITS, (4,))
    build_s = time.perf_counter() - t
    uniform = {p.name: (next(iter(p.cost)), [3 if p.pinned is None else 8] * len(p.sizes)) for p in problems}
    fixed = fixed_ms(stats, table, board.threads)      # the float calls: budgets are whole UNet calls
    _, mem3, lat3, _ = totals(problems, uniform, fixed)
    budgets = Budgets(latency_ms=0.97 * lat3, weight_kb=mem3 / 1024)
    rows, load = [], os.getloadavg()[0]
    for run in range(3):
        sol = solve(problems, budgets, threads=2, fixed=fixed)
        plan = to_plan(stats, problems, sol, GROUP)
        path = ROOT / "out" / "plans" / "ddpm-cifar10-random.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        plan.save(path)
        nbytes, ms, _ = plan_totals(BitPlan.load(path), stats, table, board.threads)
        rows.append({"run": run, "layers": len(problems), "groups": sum(len(p.sizes) for p in problems),
                     "choices_per_group": len(BITS), "build_s": round(build_s, 2), "solve_s": round(sol.solve_s, 2),
                     "weight_kb_budget": round(budgets.weight_kb, 2), "weight_kb_plan": round(nbytes / 1024, 2),
                     "latency_ms_budget": round(budgets.latency_ms, 4), "latency_ms_plan": round(ms, 4),
                     "avg_wbits": round(sol.avg_bits, 3), "meets_both": nbytes / 1024 <= budgets.weight_kb
                     and ms <= budgets.latency_ms * (1 + 1e-9), "under_10_s": sol.solve_s < 10})
        print(rows[-1], flush=True)
    e2e = stats["e2e"]         # how long the statistics' end-to-end errors took (made once, cached in out/bench)
    save_rows(RESULTS / "allocate_cifar.json", rows, group_size=GROUP, bits=list(BITS), abits=4,
              budgets="weight memory of uniform W3A4, 97% of its latency (host table, 2 threads)",
              cost_model=DEFAULT_COST, statistics_version=stats["version"], statistics_e2e=e2e,
              latency_table=source, load_average_at_start=round(load, 2))
    (RESULTS / "allocate_cifar.md").write_text(
        "# Allocator on the DDPM CIFAR-10 configuration (random weights), host latency table\n\n"
        "Command: `.venv/bin/python benchmarks/allocate_cifar.py`\n\n"
        "Budgets: the weight memory of uniform W3A4 and 97% of its latency; plan values recomputed from the "
        f"written BitPlan. Solve: PuLP's bundled CBC, 2 threads. Cost model: {DEFAULT_COST}, statistics "
        f"v{stats['version']}; their end-to-end errors took {e2e['seconds']:.0f} s ({e2e['samples']} trajectory, "
        f"every {e2e['every']}th of {stats['calibration']['steps']} steps). Latency table: `{source['path']}` "
        f"({', '.join(source['cpu'])}, measured up to {source['measured']}). Load average at start {load:.2f}.\n\n"
        + markdown_table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
