"""Allocator results: the ILP plan against the OMQ rule and uniform bits at equal weight memory, on the
default model, plus the solve time on the DDPM CIFAR-10 configuration (benchmarks/allocate_cifar.py).

Run: .venv/bin/python benchmarks/allocator_fd.py [--samples 1000] [--only W3A4-ilp,...]
- Budget WnAm: the packed weight memory of uniform Wn (policy-pinned layers at W8A8) with m-bit
  activations. ILP: `mpqdm allocate` at that memory, activations fixed at m, bits {1,2,3,4,8}, the
  board's group size, no latency bound. OMQ: MPQ-DM's rule with the released code's fixed 10% split
  (N+1 / N / N-1 bits by kurtosis). Uniform: every channel at N.
- W2A8 and W3A4 are evaluated after PTQ (MSE ranges), W2A4 after QAT (40 iterations x batch 8, TRD
  weight 100, the QAT ablation's settings); FD of 1,000 samples, 20 DDIM steps.
Resumable: finished rows are kept in allocator.json; exports and evaluations are cached under out/.
The QAT uniform and OMQ rows are the QAT ablation's rows of the same setting, built once by
mpqdm/testing/bench.py. Writes benchmarks/results/allocator.{json,md} and
allocator_{pareto,bits}_W2A4.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from mpqdm.allocator.allocate import allocate, plan_totals, plot
from mpqdm.allocator.ilp import Budgets, totals
from mpqdm.allocator.problem import (
    DEFAULT_BITS,
    build,
)
from mpqdm.boards.registry import latency_path, load_board
from mpqdm.core.bitplan import BitPlan
from mpqdm.core.latency import LatencyTable
from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.core.stats import read_stats
from mpqdm.frontend.evaluate import EvalConfig, evaluate
from mpqdm.frontend.qat.config import QATConfig
from mpqdm.frontend.qat.train import qat, run_dir
from mpqdm.frontend.quant.ptq import PTQConfig, quantize
from mpqdm.testing.bench import markdown_table, qat_export, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

STATS = ROOT / "out" / "stats" / "mnist-default.json"
WORK = ROOT / "out" / "allocator"
BUDGETS = [("W2A8", 2, 8, "ptq"), ("W3A4", 3, 4, "ptq"), ("W2A4", 2, 4, "qat")]
PLANS = ("ilp", "omq", "uniform")
# ILP variants with other candidate bits, where the default candidates lose: name -> bits, budgets
VARIANTS = {"ilp-234": ((2, 3, 4), ("W3A4",))}
BOARD = "host"


def ilp_plan(budget: str, wbits: int, abits: int, stats: dict, table: LatencyTable, threads: int,
             name: str = "ilp") -> Path:
    """The ILP plan at the weight memory of uniform `wbits` (activations fixed at `abits`)."""
    path = WORK / f"{name}-{budget}.json"
    bits = VARIANTS[name][0] if name in VARIANTS else DEFAULT_BITS
    board = load_board(BOARD)
    problems = build(stats, table, threads, board.group_size, abits=(abits,))
    uniform = {p.name: (abits if p.pinned is None else 8, [wbits if p.pinned is None else 8] * len(p.sizes))
               for p in problems}
    mem = totals(problems, uniform)[1]
    budgets = Budgets(weight_kb=mem / 1024 * (1 + 1e-12))
    p, sol, problems, _ = allocate(STATS, BOARD, budgets, abits=abits, bits=bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    p.save(path)
    if budget == "W2A4" and name == "ilp":
        plot(RESULTS / "allocator_pareto_W2A4.png", RESULTS / "allocator_bits_W2A4.png", problems, sol, budgets,
             points=6, threads=2)
    return path


def run_row(budget, wbits, abits, kind, name, stats, table, threads, samples, device) -> dict:
    plan_file = ilp_plan(budget, wbits, abits, stats, table, threads, name) if name.startswith("ilp") else None
    ptq = PTQConfig(plan="omq" if name == "omq" else "uniform", wbits=wbits, abits=abits, method="mse",
                    omq_fractions=(0.1,))
    out = WORK / f"{budget}-{name}" / "export"
    t0 = time.perf_counter()
    if kind == "ptq" and not (out / "quant_export.json").is_file():
        quantize(DEFAULT_MODEL, out, ptq, plan_file=plan_file, device=device)
    if kind == "qat" and name in ("uniform", "omq"):      # the QAT ablation's rows of the same setting
        out = qat_export(ROOT, budget, wbits, abits, {"uniform": "trd", "omq": "mpqdm"}[name], device=device)
    elif kind == "qat" and not (run_dir(out) / "summary.json").is_file():
        cfg = QATConfig(iterations=40, batch=8, trd_weight=100.0, seed=0, ckpt_every=5)
        qat(DEFAULT_MODEL, out, cfg, ptq, plan_file=plan_file, resume=(run_dir(out) / "checkpoint.pt").is_file(),
            device=device)
    nbytes, ms, avg = plan_totals(BitPlan.load(out / "quant_plan.json"), stats, table, threads)
    m = evaluate(out, out.parent / "eval", EvalConfig(samples=samples), device=device)
    return {"name": name, "budget": budget, "evaluated": kind, "weight_memory_kb": round(nbytes / 1024, 2),
            "avg_wbits": round(avg, 4), "latency_ms": round(ms, 3),
            f"fd_{kind}": m["fd"], "fd_ptq" if kind == "qat" else "fd_qat": None, "samples": samples,
            "seconds": round(time.perf_counter() - t0, 1)}


def cifar_solve_seconds() -> float:
    subprocess.run([sys.executable, str(Path(__file__).parent / "allocate_cifar.py")], check=True, cwd=ROOT)
    rows = json.loads((RESULTS / "allocate_cifar.json").read_text())["rows"]
    return sorted(r["solve_s"] for r in rows)[len(rows) // 2]


def outcome(plans: list[dict]) -> list[str]:
    out = []
    for budget, _, _, kind in BUDGETS:
        fd = {p["name"]: p[f"fd_{kind}"] for p in plans if p["budget"] == budget}
        if all(n in fd for n in PLANS):
            best = min(PLANS, key=fd.get)
            extra = [n for n in fd if n not in PLANS]
            out.append(f"{budget} ({kind.upper()}): lowest FD is {best} ({fd[best]:.2f}); "
                       + ", ".join(f"{k} {fd[k]:.2f}" for k in PLANS) + f": {'met' if best == 'ilp' else 'missed'}"
                       + "".join(f"; variant {n} (bits {', '.join(map(str, VARIANTS[n][0]))}): {fd[n]:.2f}"
                                 for n in extra))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default="", help="comma-separated BUDGET-PLAN keys")
    ap.add_argument("--skip-cifar", action="store_true", help="keep the CIFAR-10 solve time already recorded")
    args = ap.parse_args()
    out_json = RESULTS / "allocator.json"
    old = json.loads(out_json.read_text()) if out_json.is_file() else {}
    plans = [p for p in old.get("plans", []) if p.get("samples") == args.samples]
    solve_s = old.get("solve_seconds_cifar10_unet")
    if solve_s is None or not args.skip_cifar:
        solve_s = cifar_solve_seconds()
    if not STATS.is_file():
        subprocess.run([sys.executable, "-m", "mpqdm.cli", "stats", str(DEFAULT_MODEL), "--out", str(STATS)],
                       check=True, cwd=ROOT)
    stats = read_stats(STATS)
    board = load_board(BOARD)
    table = LatencyTable.load(latency_path(board), BOARD)
    done = {(p["budget"], p["name"]) for p in plans}
    only = {k for k in args.only.split(",") if k}
    for budget, w, a, kind in BUDGETS:
        for name in [*PLANS, *(v for v, (_, where) in VARIANTS.items() if budget in where)]:
            if (budget, name) in done or (only and f"{budget}-{name}" not in only):
                continue
            print(f"== {budget} {name} ({kind})", flush=True)
            plans.append(run_row(budget, w, a, kind, name, stats, table, board.threads, args.samples, args.device))
            write(plans, solve_s, args.samples)
    write(plans, solve_s, args.samples)


def write(plans: list[dict], solve_s: float, samples: int) -> None:
    order = {(b, n): i for i, (b, n) in enumerate((b[0], n) for b in BUDGETS for n in (*PLANS, *VARIANTS))}
    plans.sort(key=lambda p: order[(p["budget"], p["name"])])
    res = outcome(plans)
    save_rows(RESULTS / "allocator.json", None, solve_seconds_cifar10_unet=solve_s, plans=plans, outcome=res,
              samples=samples, ddim_steps=20, board=BOARD)
    cols = ["budget", "evaluated", "name", "weight_memory_kb", "avg_wbits", "latency_ms", "fd_ptq", "fd_qat",
            "seconds"]
    (RESULTS / "allocator.md").write_text(
        "# Allocator: ILP plan against the OMQ rule and uniform bits at equal weight memory (default model)\n\n"
        "Command: `.venv/bin/python benchmarks/allocator_fd.py`\n\n"
        f"FD of {samples} samples, 20 DDIM steps. Weight memory as packed (steps and zero points included); "
        f"latency per UNet call of the quantized layers from the host table (2 threads). The ILP budget is "
        f"the uniform plan's memory. Solve time on the DDPM CIFAR-10 configuration: {solve_s} s "
        "(`allocate_cifar.md`).\n\n" + markdown_table(plans, cols) + "\n" + "\n".join(f"- {r}" for r in res) + "\n")


if __name__ == "__main__":
    main()
