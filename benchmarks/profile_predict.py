"""Does the host's whole-step latency table predict a UNet call? One run, table and benches together.

1. `mpqdm profile` of the default model on the host (every call kind, the runtime's own thread pool,
   2 threads) into boards/host/latency.json (or --table).
2. Five plans of the default model: uniform W2A4, W4A4, W8A8, and two ILP plans with mixed widths
   (ilp-1: the packed weight memory of uniform W3 and a latency at most 1.1x uniform W2A4's predicted
   step; ilp-2: the memory of uniform W2, A4 or A8 per layer). Each is PTQ-exported (a small
   calibration: timing does not depend on it), compiled and built for the host.
3. predicted: the table's step_ms of the plan (allocator.allocate.plan_step_ms), by call kind.
   measured: `mpqdm-run --bench` at 2 threads, median of 3 benches of 2 samples x 20 steps each,
   taken in rounds over the five plans (noise on the shared machine then falls on every plan alike).
Writes benchmarks/results/profile_predict.{json,md}. Run on a quiet machine:
    .venv/bin/python benchmarks/profile_predict.py [--table PATH] [--reuse-table]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from mpqdm.allocator.allocate import allocate_to, plan_step_ms
from mpqdm.allocator.ilp import Budgets, totals
from mpqdm.allocator.problem import build as build_problems
from mpqdm.backend_tvm.build import build
from mpqdm.backend_tvm.compile import compile_export
from mpqdm.backend_tvm.profile import profile
from mpqdm.backend_tvm.run import bench_binary
from mpqdm.boards.registry import latency_path, load_board
from mpqdm.core.bitplan import BitPlan
from mpqdm.core.latency import LatencyTable
from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.core.stats import read_stats
from mpqdm.deploy.shipped import stats_for
from mpqdm.frontend.model_io import model_fingerprint
from mpqdm.frontend.quant.calibrate import CalibConfig
from mpqdm.frontend.quant.ptq import PTQConfig, quantize
from mpqdm.testing.bench import markdown_table, save_rows

RESULTS = Path(__file__).resolve().parent / "results"
OUT = Path("out/profile_predict")
THREADS = 2
CALIB = CalibConfig(samples=8, steps=20, batch=8)


def uniform_choice(problems, wbits: int, abits: int) -> dict:
    return {p.name: (p.pinned[1], [p.pinned[0]] * len(p.sizes)) if p.pinned else (abits, [wbits] * len(p.sizes))
            for p in problems}


def plans(stats_path: Path, table_path: Path) -> dict[str, Path | tuple]:
    """name -> ("uniform", wbits, abits) or a BitPlan file of the ILP."""
    stats = read_stats(stats_path)
    table = LatencyTable.load(table_path, "host")
    board = load_board("host")
    problems = build_problems(stats, table, THREADS, board.group_size, abits=(4, 8))
    mem = {b: totals(problems, uniform_choice(problems, b, 4))[1] for b in (2, 3)}
    w2a4 = sum(plan_step_ms_uniform(stats, table, problems, 2, 4).values())
    out: dict[str, Path | tuple] = {f"uniform-W{w}A{a}": ("uniform", w, a) for w, a in ((2, 4), (4, 4), (8, 8))}
    OUT.mkdir(parents=True, exist_ok=True)
    for name, budgets in (("ilp-1", Budgets(weight_kb=mem[3] / 1024, latency_ms=1.1 * w2a4)),
                          ("ilp-2", Budgets(weight_kb=mem[2] / 1024))):
        allocate_to(OUT / f"{name}.json", stats_path, "host", budgets, table_path=table_path, threads=THREADS,
                    pareto_points=0)
        out[name] = OUT / f"{name}.json"
    return out


def plan_step_ms_uniform(stats, table, problems, w, a) -> dict:
    from mpqdm.allocator.allocate import to_plan
    from mpqdm.allocator.ilp import Solution

    sol = Solution(uniform_choice(problems, w, a), 0.0, 0, 0.0, 0.0, 0.0)
    return plan_step_ms(to_plan(stats, problems, sol, load_board("host").group_size), stats, table, THREADS)


def export(name: str, spec) -> Path:
    d = OUT / "exports" / name
    if isinstance(spec, tuple):
        _, w, a = spec
        quantize(DEFAULT_MODEL, d, PTQConfig(plan="uniform", wbits=w, abits=a, calib=CALIB), device="cpu",
                 progress=False)
    else:
        quantize(DEFAULT_MODEL, d, PTQConfig(plan="uniform", calib=CALIB), plan_file=spec, device="cpu",
                 progress=False)
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", type=Path, default=None, help="default: boards/host/latency.json")
    ap.add_argument("--reuse-table", action="store_true", help="measure only what the table lacks")
    ap.add_argument("--md-only", action="store_true", help="rewrite the Markdown from the JSON")
    args = ap.parse_args()
    if args.md_only:
        return write_md()
    load = os.getloadavg()[0]
    t0 = time.time()
    table_path = args.table or latency_path(load_board("host"))
    prof = profile(DEFAULT_MODEL, "host", threads=THREADS, table_path=table_path, fresh=not args.reuse_table)
    print(f"profile: {prof['entries']} measured, {prof['skipped']} reused in {time.time() - t0:.0f} s")
    stats_path = stats_for(model_fingerprint(DEFAULT_MODEL))
    stats = read_stats(stats_path)
    table = LatencyTable.load(table_path, "host")
    built = {}
    for name, spec in plans(stats_path, table_path).items():
        ex = export(name, spec)
        cdir = OUT / "compiled" / name
        compile_export(ex, "host", cdir, progress=False)
        build(cdir, "host")
        built[name] = (BitPlan.load(ex / "quant_plan.json"), cdir)
    benches: dict[str, list] = {name: [] for name in built}
    for _ in range(3):
        for name, (_, cdir) in built.items():
            benches[name].append(bench_binary([str(cdir / "mpqdm-run")], cdir / "model.mpq", OUT / "bench",
                                              threads=THREADS, count=2))
    rows = []
    for name, (plan, _) in built.items():
        pred = plan_step_ms(plan, stats, table, THREADS)
        med = statistics.median(b["ms_per_step"] for b in benches[name])
        mid = min(benches[name], key=lambda b: abs(b["ms_per_step"] - med))
        predicted = sum(pred.values())
        rows.append({"plan": name, "predicted_ms": round(predicted, 4), "measured_ms": round(med, 4),
                     "ratio": round(predicted / med, 4), "benches_ms": [b["ms_per_step"] for b in benches[name]],
                     "avg_wbits": round(plan.avg_wbits(
                         {n: L["weights_per_channel"] for n, L in stats["layers"].items()}), 3),
                     "predicted_by_kind": {k: round(v, 4) for k, v in sorted(pred.items())},
                     "measured_by_kind": dict(sorted(mid["ms_by_kind"].items()))})
        print(f"{name}: predicted {predicted:.3f} ms, measured {med:.3f} ms ({predicted / med:.3f})")
    save_rows(RESULTS / "profile_predict.json", rows, load_average_at_start=round(load, 2), threads=THREADS,
              table=str(table_path), build_id=prof["build_id"], seconds=round(time.time() - t0))
    write_md()


def write_md() -> None:
    d = json.loads((RESULTS / "profile_predict.json").read_text())
    rows = d["rows"]
    table = [{**{k: r[k] for k in ("plan", "avg_wbits", "predicted_ms", "measured_ms", "ratio")},
              "3 benches (ms)": " ".join(f"{b:.2f}" for b in r["benches_ms"])} for r in rows]
    md = ["# Whole-step latency table: predicted against measured", "",
          f"`python benchmarks/profile_predict.py` (commit {d['commit']}, {d['machine']}); {d['threads']} threads, "
          f"load average at start {d['load_average_at_start']:.2f}; the table (build {d['build_id']}) and the "
          f"benches in one run of {d['seconds']} s. Measured: median of 3 `mpqdm-run --bench` runs (2 samples x 20 "
          "steps each), taken in rounds over the plans.", "",
          markdown_table(table, list(table[0])), "",
          "Per call kind (ms per UNet call, predicted / measured, the bench closest to the median):", ""]
    kinds = sorted({k for r in rows for k in r["predicted_by_kind"]})
    md.append(markdown_table([{"plan": r["plan"], **{k: f"{r['predicted_by_kind'].get(k, 0):.3f} / "
                                                     f"{r['measured_by_kind'].get(k, 0):.3f}" for k in kinds}}
                              for r in rows], ["plan", *kinds]))
    (RESULTS / "profile_predict.md").write_text("\n".join(md) + "\n")

if __name__ == "__main__":
    main()
