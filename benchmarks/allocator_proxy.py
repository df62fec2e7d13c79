"""Does the allocator's cost predict the measured end-to-end error? Many plans at three memory
budgets, each measured and costed by the old (per-layer gain at W4A8) and the new (end-to-end per
layer and width) cost model.

Run: .venv/bin/python benchmarks/allocator_proxy.py [--stats FILE] [--only W2,W3]
Budgets: the packed weight memory of uniform W2, W3 and W4 (policy-pinned layers at W8A8). Plans per
budget, each within 1% of its budget's memory: uniform at A4 and at A8; OMQ (the fixed 10% split,
A4; not at W4, whose N+1 = 5 bits is no candidate width, so neither cost has it); ILP plans of the new
cost (bits {1,2,3,4,8}, activation widths chosen per layer, with no latency bound and with 1.0x and 1.1x
uniform A4's, solves stopped after SOLVE_S; N and its neighbouring widths, A4 fixed; {1,2,3,4,8}, A4);
ILP plans of the old cost (A4 fixed and free); random monotone mixes (the ILP on random costs, two of
them 1-bit heavy). A plan outside 1% of its budget (a time-limited solve can stop below it) is listed
but left out of the correlations.
Measured error: frontend/quant/plan_error.py (PTQ with the plan, 64 held-out trajectories, 20 steps).
The statistics default to the shipped ones of the default model (models/stats). Resumable: each plan's
error is kept in out/allocator_proxy/. Writes benchmarks/results/allocator_proxy.{json,md,png}.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from mpqdm.allocator.allocate import plan_totals, to_plan
from mpqdm.allocator.ilp import Budgets, solve
from mpqdm.allocator.problem import build, fixed_ms, plan_cost
from mpqdm.boards.registry import latency_path, load_board
from mpqdm.core.bitplan import BitPlan, LayerPlan
from mpqdm.core.io import write_json
from mpqdm.core.latency import LatencyTable
from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.core.stats import read_stats
from mpqdm.deploy.shipped import stats_for
from mpqdm.frontend.model_io import load_scheduler, load_unet, model_fingerprint
from mpqdm.frontend.quant.calibrate import CalibConfig, calibrate
from mpqdm.frontend.quant.omq import omq_split
from mpqdm.frontend.quant.plan_error import fp_trajectories, measured_error
from mpqdm.frontend.quant.ptq import ptq_model, uniform_plan
from mpqdm.frontend.quant.swap import LayerPolicy
from mpqdm.testing.bench import markdown_table, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "out" / "allocator_proxy"
BOARD, BUDGETS, GROUP, SOLVE_S = "host", (2, 3, 4), 8, 30


def omq(stats: dict, base: BitPlan, n: int) -> BitPlan:
    """MPQ-DM's rule from the statistics' kurtosis: top 10% of channels N+1, bottom 10% N-1 (A4)."""
    layers = dict(base.layers)
    for name, L in stats["layers"].items():
        if L["policy"] == "quant":
            layers[name] = omq_split(torch.tensor(L["kurtosis"]), torch.zeros(3, L["c_out"]), [n - 1, n, n + 1],
                                     n, 4, GROUP, (0.1,))
    return BitPlan(base.model_sha256, base.model_class, GROUP, base.smoothing, layers)


def ilp(stats, table, threads, budget_kb, bits, abits, cost_model, latency_ms=None, rng=None, one_bit=False):
    problems = build(stats, table, threads, GROUP, bits, abits, cost_model=cost_model)
    if rng is not None:            # random monotone mixes: random costs falling with the bits
        for p in problems:
            if p.pinned:
                continue
            decay = rng.uniform(0.3, 1.5)
            for a in p.cost:
                for b in p.cost[a]:
                    p.cost[a][b] = rng.uniform(0.5, 1.5, len(p.sizes)) * np.exp(-decay * b)
                if one_bit and 1 in p.cost[a] and rng.random() < 0.6:
                    p.cost[a][1] = p.cost[a][2] * 1.05
    fixed = fixed_ms(stats, table, threads)
    # a latency bound at uniform's makes CBC's proof slow (minutes, gap ~3% after 60 s): the best plan found in
    # SOLVE_S stands, as it would for a user's tight budget
    sol = solve(problems, Budgets(weight_kb=budget_kb, latency_ms=latency_ms), threads=2, fixed=fixed,
                time_limit=SOLVE_S)
    return to_plan(stats, problems, sol, GROUP)


def plans_for(n: int, stats, unet, table, threads) -> tuple[dict[str, BitPlan], float]:
    sha, pol = stats["model"]["sha256"], LayerPolicy()
    uni4 = uniform_plan(unet, sha, n, 4, pol, True, GROUP)
    nbytes, lat4, _ = plan_totals(uni4, stats, table, threads)
    kb = nbytes / 1024
    wide = (1, 2, 3, 4, 8)
    near = wide[max(wide.index(n) - 1, 0):wide.index(n) + 2]       # N and its neighbours among the widths
    out = {"uniform-A4": uni4, "uniform-A8": uniform_plan(unet, sha, n, 8, pol, True, GROUP),
           **({"omq-A4": omq(stats, uni4, n)} if n + 1 in wide else {}),   # W4's OMQ needs 5 bits: no costs
           "ilp-new": ilp(stats, table, threads, kb, wide, (4, 8), "e2e"),
           "ilp-new-lat1.0": ilp(stats, table, threads, kb, wide, (4, 8), "e2e", lat4),
           "ilp-new-lat1.1": ilp(stats, table, threads, kb, wide, (4, 8), "e2e", 1.1 * lat4),
           "ilp-new-A4": ilp(stats, table, threads, kb, wide, (4,), "e2e"),
           f"ilp-new-{''.join(map(str, near))}-A4": ilp(stats, table, threads, kb, near, (4,), "e2e"),
           "ilp-old-A4": ilp(stats, table, threads, kb, wide, (4,), "gain"),
           "ilp-old": ilp(stats, table, threads, kb, wide, (4, 8), "gain")}
    rng = np.random.default_rng(n)
    for i in range(4):
        out[f"random-{i}" + ("-1bit" if i >= 2 else "")] = ilp(stats, table, threads, kb, wide, (4,), "e2e",
                                                              rng=rng, one_bit=i >= 2)
    return out, kb


def plan_key(plan: BitPlan) -> str:
    return hashlib.sha256(json.dumps(plan.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stats", help="statistics v3 of the default model (default: the shipped ones)")
    ap.add_argument("--samples", type=int, default=64, help="held-out trajectories")
    ap.add_argument("--only", default="", help="budgets, e.g. W2,W3")
    ap.add_argument("--report", action="store_true", help="only rewrite the .md and .png from the results JSON")
    args = ap.parse_args()
    if args.report:
        doc = json.loads((RESULTS / "allocator_proxy.json").read_text())
        return report(doc["plans"], ROOT / doc["statistics"], save=False)
    torch.set_num_threads(2)
    stats_path = Path(args.stats) if args.stats else stats_for(model_fingerprint(DEFAULT_MODEL))
    stats = read_stats(stats_path)
    board = load_board(BOARD)
    table = LatencyTable.load(latency_path(board), board.name)
    unet = load_unet(DEFAULT_MODEL).eval().requires_grad_(False)
    sched = load_scheduler(DEFAULT_MODEL)
    calib = None
    t0 = time.perf_counter()
    traj = fp_trajectories(unet, sched.alphas_cumprod, args.samples, stats["calibration"]["steps"])
    print(f"held-out trajectories: {time.perf_counter() - t0:.0f} s", flush=True)
    rows, only = [], set(filter(None, args.only.split(",")))
    WORK.mkdir(parents=True, exist_ok=True)
    for n in BUDGETS:
        budget = f"W{n}"
        if only and budget not in only:
            continue
        plans, kb = plans_for(n, stats, unet, table, board.threads)
        for name, plan in plans.items():
            nbytes, ms, avg = plan_totals(plan, stats, table, board.threads)
            cache = WORK / f"{budget}-{name}-{plan_key(plan)}.json"
            if cache.is_file():
                err = json.loads(cache.read_text())["measured_error"]
            else:
                if calib is None:       # the statistics' own calibration, as mpqdm quantize would run it
                    calib = calibrate(unet, sched.alphas_cumprod, CalibConfig(**stats["calibration"]), progress=False)
                t = time.perf_counter()
                err = measured_error(ptq_model(copy.deepcopy(unet), plan, calib, stats["method"]), traj)
                write_json(cache, {"measured_error": err, "seconds": round(time.perf_counter() - t, 1)})
            rows.append({"name": name, "budget": budget, "weight_kb": round(nbytes / 1024, 2),
                         "budget_kb": round(kb, 2), "within_1pct": abs(nbytes / 1024 - kb) <= 0.01 * kb,
                         "avg_wbits": round(avg, 3), "a8_layers": sum(isinstance(p, LayerPlan) and p.abits == 8
                                                                      for p in plan.layers.values()),
                         "latency_ms": round(ms, 4), "measured_error": err,
                         "cost_old": plan_cost(plan, stats, "gain"), "cost_new": plan_cost(plan, stats, "e2e")})
            print({k: rows[-1][k] for k in ("budget", "name", "weight_kb", "measured_error", "cost_old",
                                            "cost_new")}, flush=True)
    report(rows, stats_path)


def spearman(rows, key) -> float:
    ok = [r for r in rows if r["within_1pct"]]
    return round(float(spearmanr([r[key] for r in ok], [r["measured_error"] for r in ok]).statistic), 3)


def report(rows: list[dict], stats_path: Path, save: bool = True) -> None:
    budgets = sorted({r["budget"] for r in rows})
    within = {b: {"old": spearman([r for r in rows if r["budget"] == b], "cost_old"),
                  "new": spearman([r for r in rows if r["budget"] == b], "cost_new")} for b in budgets}
    pooled = {"old": spearman(rows, "cost_old"), "new": spearman(rows, "cost_new")}
    stats = read_stats(stats_path)
    if save:
        table = LatencyTable.load(latency_path(load_board(BOARD)), BOARD)
        save_rows(RESULTS / "allocator_proxy.json", None, plans=rows, spearman_old=pooled["old"],
                  spearman_new=pooled["new"], spearman_within=within, statistics=str(stats_path.relative_to(ROOT))
                  if stats_path.is_relative_to(ROOT) else str(stats_path), e2e_statistics=stats.get("e2e"),
                  latency_table=str(latency_path(load_board(BOARD)).relative_to(ROOT)), solve_limit_s=SOLVE_S,
                  latency_table_measured_on=sorted({f"{e['cpu']} build {e['build_id']}"
                                                    for e in table.entries.values()}))
    plot(rows, RESULTS / "allocator_proxy.png")
    lines = ["# Allocator cost against the measured end-to-end error (default model, PTQ)", "",
             "Command: `.venv/bin/python benchmarks/allocator_proxy.py`", "",
             "Measured error: mean squared noise-prediction error against the FP model over 64 held-out DDIM "
             "trajectories, 20 steps, both fed the FP x_t (frontend/quant/plan_error.py). cost_old: per-layer gain "
             "at W4A8 x channel output errors; cost_new: per-layer, per-width end-to-end error x the group's share "
             "of the layer's output error. Latency: host table, 2 threads.", "",
             "| budget | spearman_old | spearman_new |", "|---|---|---|"]
    lines += [f"| {b} | {within[b]['old']} | {within[b]['new']} |" for b in budgets]
    lines += [f"| pooled | {pooled['old']} | {pooled['new']} |", ""]
    small = ("measured_error", "cost_old", "cost_new")       # four significant digits, not two decimals
    shown = [{**r, **{k: f"{r[k]:.4g}" for k in small}} for r in rows]
    lines.append(markdown_table(shown, ["budget", "name", "weight_kb", "avg_wbits", "a8_layers", "latency_ms",
                                        "measured_error", "cost_old", "cost_new", "within_1pct"]))
    (RESULTS / "allocator_proxy.md").write_text("\n".join(lines))
    print(f"spearman pooled old {pooled['old']} new {pooled['new']}; within {within}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("cost_old", "cost_new"), strict=True):
        for b in sorted({r["budget"] for r in rows}):
            rs = [r for r in rows if r["budget"] == b]
            ax.scatter([r[key] for r in rs], [r["measured_error"] for r in rs], label=b, s=18)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())     # log minor labels overlap on short ranges
        ax.set_xlabel(key)
        ax.set_ylabel("measured error")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
