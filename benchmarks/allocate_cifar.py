"""Allocator solve time on the DDPM CIFAR-10 UNet configuration (35.7M parameters, random weights,
statistics from a small random calibration), group size 16, bits {1, 2, 3, 4, 8}, 4-bit activations,
with the host latency table. Budgets: the weight memory of uniform W3 and 97% of its latency, so the
ILP has to trade; the plan is then recomputed from the written BitPlan against both budgets.

Run: .venv/bin/python benchmarks/allocate_cifar.py     (makes out/ddpm-cifar10-random and its
statistics first when missing: about 3 min; then 3 solves). Writes benchmarks/results/allocate_cifar.*
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import markdown_table, save_rows  # noqa: E402

from allocator.bitplan import BitPlan  # noqa: E402
from allocator.ilp import Budgets, solve, totals  # noqa: E402
from allocator.problem import build  # noqa: E402
from boards.latency import LatencyTable  # noqa: E402
from boards.profile import load_board  # noqa: E402
from frontend.quant.stats import read_stats  # noqa: E402
from mpqdm.paths import REPO_ROOT, RESULTS  # noqa: E402

MODEL, STATS = REPO_ROOT / "out" / "ddpm-cifar10-random", REPO_ROOT / "out" / "stats" / "ddpm-cifar10-random.json"
BITS, GROUP = (1, 2, 3, 4, 8), 16


def prepare() -> None:
    if not MODEL.is_dir():
        subprocess.run([sys.executable, "-c", "import torch; from frontend.fp_model import ddpm_cifar10_unet; "
                        f"torch.manual_seed(0); ddpm_cifar10_unet().save_pretrained({str(MODEL)!r})"],
                       check=True, cwd=REPO_ROOT)
    if not STATS.is_file():
        subprocess.run([sys.executable, "-m", "mpqdm.cli", "stats", str(MODEL), "--calib-samples", "2",
                        "--calib-steps", "4", "--out", str(STATS)], check=True, cwd=REPO_ROOT)


def main() -> None:
    from allocator.allocate import plan_totals, to_plan

    prepare()
    board = load_board("host")
    stats = read_stats(STATS)
    table = LatencyTable.load(board.path / "latency.json", "host")
    t = time.perf_counter()
    problems = build(stats, table, board.threads, GROUP, BITS, (4,))
    build_s = time.perf_counter() - t
    uniform = {p.name: (next(iter(p.cost)), [3 if p.pinned is None else 8] * len(p.sizes)) for p in problems}
    _, mem3, lat3, _ = totals(problems, uniform)
    budgets = Budgets(latency_ms=0.97 * lat3, weight_kb=mem3 / 1024)
    rows = []
    for run in range(3):
        sol = solve(problems, budgets, threads=2)
        plan = to_plan(stats, problems, sol, GROUP)
        path = REPO_ROOT / "out" / "plans" / "ddpm-cifar10-random.json"
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
    save_rows(RESULTS / "allocate_cifar.json", rows, group_size=GROUP, bits=list(BITS), abits=4,
              budgets="weight memory of uniform W3A4, 97% of its latency (host table, 2 threads)")
    (RESULTS / "allocate_cifar.md").write_text(
        "# Allocator on the DDPM CIFAR-10 configuration (random weights), host latency table\n\n"
        "Command: `.venv/bin/python benchmarks/allocate_cifar.py`\n\n"
        "Budgets: the weight memory of uniform W3A4 and 97% of its latency; plan values recomputed from the "
        "written BitPlan. Solve: PuLP's bundled CBC, 2 threads.\n\n" + markdown_table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
