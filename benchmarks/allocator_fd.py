"""Allocator results: the ILP plan against the OMQ rule and uniform bits at equal packed weight memory,
on the default model, each row with two FDs so that the table shows its own spread.

Run: .venv/bin/python benchmarks/allocator_fd.py [--only W3A4-ptq-uniform-mse,...] [--threads 2] [--report]
- Row sets: W2A8, W3A4 and W2A4 after PTQ (FD under evaluation seeds 0 and 1), W2A4 after QAT
  (400 iterations x batch 8, output distillation, QAT seeds 0 and 1, evaluation seed 0); FD of 1,000
  samples, 20 DDIM steps.
- Budget WnAm: the packed weight memory of uniform Wn (policy-pinned layers at W8A8) and 1.1x the
  latency of uniform WnAm per UNet call (the host table, 2 threads). ILP: the statistics' default cost
  (e2e) with bits {1,2,3,4,8} and the activation width chosen per layer, solved once and committed
  under benchmarks/allocator_plans/ (a time-limited solve is not repeatable; both seeds and
  later sessions use the same plan). OMQ: MPQ-DM's rule with the released code's fixed 10% split
  (N+1 / N / N-1 by kurtosis, A = m). Uniform: every channel at N. Uniform and OMQ run with the mse and
  the minmax range methods and the better mean counts; the ILP's plan takes the statistics' method.
- QAT rows equal to the QAT ablation's (uniform = its baseline, OMQ = its omq variant) take its
  committed FDs; the others run here with the same settings (mpqdm/testing/bench.py qat_export).
Resumable: each finished row leaves row.json under out/allocator/, and the committed rows of the same
settings are kept. Writes benchmarks/results/allocator.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PLANS_DIR = ROOT / "benchmarks" / "allocator_plans"     # inputs of the rows; how each was solved: PLANS_INDEX
PLANS_INDEX = RESULTS / "allocator_plans.json"
WORK = ROOT / "out" / "allocator"
SETS = [("W2A8", 2, 8, "ptq"), ("W3A4", 3, 4, "ptq"), ("W2A4", 2, 4, "ptq"), ("W2A4", 2, 4, "qat")]
PLANS = ("ilp", "omq", "uniform")
METHODS = {"ilp": ("mse",), "omq": ("mse", "minmax"), "uniform": ("mse", "minmax")}
SEEDS, ITERATIONS, BATCH, LATENCY_SLACK, BOARD = (0, 1), 400, 8, 1.1, "host"
SETTINGS = {"iterations": ITERATIONS, "batch": BATCH, "latency_slack": LATENCY_SLACK, "format": 2}
# the Pareto plot (PTQ): uniform points, and ILP plans at (memory of uniform W_m, latency of uniform W_l A_l)
UNIFORM_POINTS = [("W2A4", 2, 4), ("W3A4", 3, 4), ("W4A4", 4, 4), ("W8A8", 8, 8)]
PARETO = {"W2A4": (2, 2, 4), "W3A4": (3, 3, 4), "W4A4": (4, 4, 4), "W8A8": (8, 8, 8), "W3-at-W2A4": (3, 2, 4)}


def rows_wanted() -> list[tuple]:
    rows = [(b, w, a, kind, plan, m) for b, w, a, kind in SETS for plan in PLANS
            for m in (METHODS[plan] if kind == "ptq" else ("mse",))]
    rows += [(b, w, a, "ptq", "uniform", "mse") for b, w, a in UNIFORM_POINTS if (b, w, a, "ptq") not in SETS]
    return rows + [(b, m, la, "pareto", "ilp", "mse") for b, (m, _, la) in PARETO.items()]


def key(row) -> str:
    budget, _, _, kind, plan, method = row
    return f"{budget}-{kind}-{plan}-{method}"


def context():
    from mpqdm.boards.registry import latency_path, load_board
    from mpqdm.core.latency import LatencyTable
    from mpqdm.core.resources import DEFAULT_MODEL
    from mpqdm.core.stats import read_stats
    from mpqdm.deploy.shipped import stats_for
    from mpqdm.frontend.model_io import load_unet, model_fingerprint

    board = load_board(BOARD)
    stats = read_stats(stats_for(model_fingerprint(DEFAULT_MODEL)))
    table = LatencyTable.load(latency_path(board), board.name)    # the committed table, whichever CPU made it
    return board, stats, table, load_unet(DEFAULT_MODEL)


def uniform_totals(unet, stats, table, board, wbits: int, abits: int) -> tuple[int, float]:
    from mpqdm.allocator.allocate import plan_totals
    from mpqdm.frontend.quant.ptq import uniform_plan
    from mpqdm.frontend.quant.swap import LayerPolicy

    plan = uniform_plan(unet, stats["model"]["sha256"], wbits, abits, LayerPolicy(), True, board.group_size)
    nbytes, ms, _ = plan_totals(plan, stats, table, board.threads)
    return nbytes, ms


def ilp_plan(budget: str, wbits: int, abits: int, ctx, pareto: bool = False, bits: tuple | None = None,
             name: str | None = None, linear=None) -> Path:
    """The committed ILP plan of this budget, solved here the first time. Pareto plans: the memory of
    uniform `wbits`, the latency (1.0x) of PARETO's uniform point. `bits`: other candidate widths;
    `linear`: problems -> (an ilp.Linear budget, a note for the index); either saved as `name`."""
    from mpqdm.allocator.allocate import TIME_LIMIT_S, to_plan
    from mpqdm.allocator.ilp import Budgets, solve
    from mpqdm.allocator.problem import build, fixed_ms

    path = PLANS_DIR / (name or f"ilp-{'pareto-' if pareto else ''}{budget}.json")
    if path.is_file():
        return path
    board, stats, table, unet = ctx or context()
    nbytes, ms = uniform_totals(unet, stats, table, board, wbits, abits)
    if pareto:
        ms = uniform_totals(unet, stats, table, board, *PARETO[budget][1:])[1]
    kw = {} if bits is None else {"bits": bits}
    problems = build(stats, table, board.threads, board.group_size, **kw)
    budgets = Budgets(weight_kb=nbytes / 1024 * (1 + 1e-12), latency_ms=(1.0 if pareto else LATENCY_SLACK) * ms)
    if linear is not None:
        budgets.linear, kw["linear"] = linear(problems)
    sol = solve(problems, budgets, 2, TIME_LIMIT_S, fixed_ms(stats, table, board.threads))
    print(f"ILP {budget}: cost {sol.cost:.4g}, {sol.weight_bytes / 1024:.2f} KB, {sol.latency_ms:.3f} ms "
          f"({'optimal' if sol.optimal else 'time limit'}, {sol.solve_s:.0f} s)", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_plan(stats, problems, sol, board.group_size).save(path)
    index_plan(path.name, {"cost": sol.cost, "weight_kb": round(sol.weight_bytes / 1024, 2), "optimal": sol.optimal,
                           "latency_ms": round(sol.latency_ms, 3), "solve_s": round(sol.solve_s, 1),
                           **kw})
    return path


def index_plan(name: str, entry: dict) -> None:
    """Where and how a committed plan was solved (a BitPlan file holds no provenance)."""
    from mpqdm.core.machine import provenance
    from mpqdm.testing.bench import save_rows

    doc = json.loads(PLANS_INDEX.read_text()) if PLANS_INDEX.is_file() else {}
    plans = {**doc.get("plans", {}), name: {**entry, **provenance()}}
    save_rows(PLANS_INDEX, None, plans=plans, plans_dir=str(PLANS_DIR.relative_to(ROOT)))


def ablation_fd(variant: str, seed: int, samples: int) -> float | None:
    """The QAT ablation's committed FD of this W2A4 row, when made with these settings."""
    path = RESULTS / "qat_ablation.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    for r in doc.get("rows", []):
        if (r["config"], r["variant"], r["seed"], r.get("iterations"), r.get("batch"), r.get("samples")) == (
                "W2A4", variant, seed, ITERATIONS, BATCH, samples):
            return r["fd"]
    return None


def run_row(row, ctx, args) -> dict:
    from mpqdm.allocator.allocate import plan_totals
    from mpqdm.core.bitplan import BitPlan, LayerPlan
    from mpqdm.core.resources import DEFAULT_MODEL
    from mpqdm.frontend.evaluate import EvalConfig, evaluate
    from mpqdm.frontend.quant.ptq import PTQConfig, quantize
    from mpqdm.testing.bench import qat_export

    budget, wbits, abits, kind, plan, method = row
    board, stats, table, unet = ctx
    plan_file = ilp_plan(budget, wbits, abits, ctx, kind == "pareto") if plan == "ilp" else None
    t0, fds, exports = time.perf_counter(), [], []
    if kind in ("ptq", "pareto"):
        out = WORK / f"s{args.samples}" / key(row) / "export"
        if not (out / "quant_export.json").is_file():
            cfg = PTQConfig(plan="omq" if plan == "omq" else "uniform", wbits=wbits, abits=abits,
                            method=stats["method"] if plan == "ilp" else method, omq_fractions=(0.1,))
            quantize(DEFAULT_MODEL, out, cfg, plan_file=plan_file, device=args.device)
        exports = [out]
        fds = [evaluate(out, out.parent / f"eval-s{s}", EvalConfig(samples=args.samples, seed=s),
                        device=args.device)["fd"] for s in SEEDS]
    else:
        variant = "omq" if plan == "omq" else "baseline"
        for s in SEEDS:
            shared = None if plan == "ilp" else ablation_fd(variant, s, args.samples)
            exp = None if shared is not None else qat_export(
                ROOT, budget, wbits, abits, variant, ITERATIONS, BATCH, device=args.device, seed=s,
                teacher_cache=WORK / "teacher", plan_file=plan_file, plan_name="ilp" if plan_file else "")
            fds.append(shared if shared is not None else evaluate(
                exp, exp.parent / "eval-s0", EvalConfig(samples=args.samples), device=args.device)["fd"])
            exports += [exp] if exp else []
    bp = BitPlan.load(plan_file) if plan_file else None
    if bp is None and exports:
        bp = BitPlan.load(exports[0] / "quant_plan.json")
    nbytes, ms, avg = plan_totals(bp, stats, table, board.threads) if bp else (None, None, None)
    uni_bytes, uni_ms = uniform_totals(unet, stats, table, board, wbits, abits)
    if kind == "pareto":
        uni_ms = uniform_totals(unet, stats, table, board, *PARETO[budget][1:])[1]
    return {"set": f"{budget} {kind.upper()}", "budget": budget, "evaluated": kind, "plan": plan, "method": method,
            "weight_kb": round(nbytes / 1024, 2) if bp else None,
            "memory_vs_uniform": round(nbytes / uni_bytes, 4) if bp else None,
            "avg_wbits": round(avg, 3) if bp else None,
            "a8_layers": sum(isinstance(p, LayerPlan) and p.abits == 8 for p in bp.layers.values()) if bp else None,
            "latency_ms": round(ms, 3) if bp else None, "latency_vs_uniform": round(ms / uni_ms, 3) if bp else None,
            "fd": fds, "fd_mean": round(statistics.mean(fds), 3), "fd_spread": round(max(fds) - min(fds), 3),
            "seeds": "evaluation 0, 1" if kind != "qat" else "QAT 0, 1 (evaluation 0)", "samples": args.samples,
            "shared_with_qat_ablation": kind == "qat" and plan != "ilp", "seconds": round(time.perf_counter() - t0)}


def finished(samples: int) -> dict[str, dict]:
    path = RESULTS / "allocator.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    same = doc.get("settings") == SETTINGS and doc.get("samples") == samples
    done = {f"{r['budget']}-{r['evaluated']}-{r['plan']}-{r['method']}": r for r in doc.get("rows", [])} if same else {}
    for row in rows_wanted():
        f = WORK / f"s{samples}" / key(row) / "row.json"
        if f.is_file() and json.loads(f.read_text())["samples"] == samples:
            done[key(row)] = json.loads(f.read_text())
    return done


def outcome(rows: list[dict]) -> list[str]:
    out = []
    for budget, _, _, kind in SETS:
        best = {}
        for r in rows:
            if r["budget"] == budget and r["evaluated"] == kind and (
                    r["plan"] not in best or r["fd_mean"] < best[r["plan"]]["fd_mean"]):
                best[r["plan"]] = r
        if set(best) != set(PLANS):
            out.append(f"{budget} {kind.upper()}: not all plans measured yet ({', '.join(sorted(best))})")
            continue
        ilp = best["ilp"]
        rival = min((best[p] for p in PLANS if p != "ilp"), key=lambda r: r["fd_mean"])
        margin = rival["fd_mean"] - ilp["fd_mean"]
        need = max(ilp["fd_spread"], rival["fd_spread"])
        out.append(f"{budget} {kind.upper()}: ILP {ilp['fd_mean']:.2f}, best other {rival['plan']}-{rival['method']} "
                   f"{rival['fd_mean']:.2f}; margin {margin:.2f} against spread {need:.2f}: "
                   + ("met" if margin > need else "missed"))
    return out + pareto_outcome(rows)


def pareto_points(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    uni = [r for r in rows if r["evaluated"] == "ptq" and r["plan"] == "uniform" and r["method"] == "mse"
           and r["budget"] in {b for b, _, _ in UNIFORM_POINTS}]
    return uni, [r for r in rows if r["evaluated"] == "pareto"]


def pareto_outcome(rows: list[dict]) -> list[str]:
    """For each uniform point: an ILP plan with no more predicted latency and a lower mean FD?"""
    uni, ilp = pareto_points(rows)
    if len(uni) < len(UNIFORM_POINTS) or len(ilp) < len(PARETO):
        return [f"Pareto: {len(uni)} of {len(UNIFORM_POINTS)} uniform and {len(ilp)} of {len(PARETO)} ILP points "
                "measured"]
    out = []
    for u in uni:
        better = [p for p in ilp if p["latency_ms"] <= u["latency_ms"] * (1 + 1e-9) and p["fd_mean"] < u["fd_mean"]]
        out.append(f"Pareto, uniform {u['budget']} ({u['latency_ms']:.2f} ms, FD {u['fd_mean']:.2f}): "
                   + (f"met by ILP {min(better, key=lambda p: p['fd_mean'])['budget']}" if better else "missed"))
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    uni, ilp = pareto_points(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for pts, label, mark in ((uni, "uniform", "s"), (ilp, "ILP", "o")):
        pts = sorted(pts, key=lambda r: r["latency_ms"])
        ax.errorbar([r["latency_ms"] for r in pts], [r["fd_mean"] for r in pts],
                    yerr=[r["fd_spread"] / 2 for r in pts], marker=mark, label=label, capsize=3)
        for r in pts:
            ax.annotate(r["budget"], (r["latency_ms"], r["fd_mean"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("predicted latency per UNet call, ms (host table, 2 threads)")
    ax.set_ylabel("FD (PTQ, mean of 2 evaluation seeds)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rows: list[dict], samples: int) -> None:
    from mpqdm.testing.bench import markdown_table, save_rows

    order = {key(r): i for i, r in enumerate(rows_wanted())}
    rows = sorted(rows, key=lambda r: order.get(f"{r['budget']}-{r['evaluated']}-{r['plan']}-{r['method']}", 99))
    res = outcome(rows)
    # the rows come from runs of this command, whichever --only or --report split them
    save_rows(RESULTS / "allocator.json", rows, command=".venv/bin/python benchmarks/allocator_fd.py",
              settings=SETTINGS, samples=samples, ddim_steps=20, board=BOARD,
              plans_dir=str(PLANS_DIR.relative_to(ROOT)), outcome=res)
    if any(r["evaluated"] == "pareto" for r in rows):
        plot(rows, RESULTS / "allocator_pareto.png")
    shown = [{**r, "fd": ", ".join(f"{v:.2f}" for v in r["fd"])} for r in rows]
    cols = ["set", "plan", "method", "weight_kb", "memory_vs_uniform", "avg_wbits", "a8_layers", "latency_ms",
            "latency_vs_uniform", "fd", "fd_mean", "fd_spread", "seconds"]
    (RESULTS / "allocator.md").write_text(
        "# Allocator: ILP plan against the OMQ rule and uniform bits at equal packed weight memory (default model)\n\n"
        "Command: `.venv/bin/python benchmarks/allocator_fd.py`\n\n"
        f"FD of {samples} samples, 20 DDIM steps; `fd` lists both seeds (PTQ: evaluation seeds 0 and 1; QAT: QAT "
        f"seeds 0 and 1, {ITERATIONS} iterations x batch {BATCH}). Budget: uniform's packed memory and at most "
        f"{LATENCY_SLACK}x its predicted latency per UNet call (host table, 2 threads; "
        "`latency_vs_uniform`). ILP: the e2e cost, activation widths per layer (`a8_layers`), plans in "
        "`../allocator_plans/` (how each was solved: `allocator_plans.json`). Set `W2A4 PARETO` and the others: "
        "ILP plans at the memory of uniform Wn and 1.0x the "
        "latency of the uniform point named (`W3-at-W2A4`: W3's memory, W2A4's latency), against the uniform "
        "PTQ points (`allocator_pareto.png`). Solve time on the DDPM CIFAR-10 configuration: `allocate_cifar.md`.\n\n"
        + markdown_table(shown, cols) + "\n" + "\n".join(f"- {r}" for r in res) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="PyTorch threads (0: its default)")
    ap.add_argument("--only", default="", help="comma-separated row keys, e.g. W3A4-ptq-uniform-mse")
    ap.add_argument("--report", action="store_true", help="only rewrite the results from the finished rows")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    only = set(filter(None, args.only.split(",")))
    unknown = only - {key(r) for r in rows_wanted()}
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; rows: {', '.join(key(r) for r in rows_wanted())}")
    done = finished(args.samples)
    ctx = None if args.report else context()
    for row in rows_wanted():
        if args.report or key(row) in done or (only and key(row) not in only):
            continue
        print(f"== {key(row)}", flush=True)
        r = run_row(row, ctx, args)
        (WORK / f"s{args.samples}" / key(row)).mkdir(parents=True, exist_ok=True)
        (WORK / f"s{args.samples}" / key(row) / "row.json").write_text(json.dumps(r, indent=1))
        done = finished(args.samples)
        write(list(done.values()), args.samples)
    write(list(finished(args.samples).values()), args.samples)


if __name__ == "__main__":
    main()
