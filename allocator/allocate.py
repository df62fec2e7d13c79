"""`mpqdm allocate`: statistics + board latency table + budgets -> BitPlan and a report."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from mpqdm.boards.registry import latency_path, load_board
from mpqdm.core.bitplan import BitPlan, FloatLayer, Group, LayerPlan
from mpqdm.core.errors import UserError
from mpqdm.core.io import check_output_file
from mpqdm.core.latency import LatencyTable, UnmeasuredTable, partial_width
from mpqdm.core.packing import layer_weight_bytes
from mpqdm.core.report import markdown_table
from mpqdm.core.stats import read_stats

from .ilp import Budgets, Solution, layer_terms, smallest, solve
from .problem import DEFAULT_BITS, DEFAULT_COST, LayerProblem, build, fixed_ms

TIME_LIMIT_S = 60.0     # the solver's; the best plan found by then is returned, with a note


def to_plan(stats: dict, problems: list[LayerProblem], sol: Solution, group_size: int) -> BitPlan:
    layers = {}
    for name, entry in stats["layers"].items():
        if entry["policy"] == "float":
            layers[name] = FloatLayer()
    for p in problems:
        a, bits = sol.choice[p.name]
        groups, start = [], 0
        for n, b in zip(p.sizes, bits, strict=True):
            if groups and groups[-1][2] == b:            # bits never rise along the order: one run per width
                groups[-1][1] += n
            else:
                groups.append([start, start + n, b])
            start += n
        layers[p.name] = LayerPlan(p.order, tuple(Group(*g) for g in groups), a)
    layers = {name: layers[name] for name in stats["layers"]}   # the statistics' layer order
    return BitPlan(stats["model"]["sha256"], stats["model"]["class"], group_size, bool(stats["smoothing"]), layers)


def plan_layers(plan: BitPlan, stats: dict) -> list[tuple]:
    """The quantized layers of a plan as LatencyTable.step_ms takes them."""
    return [(n, stats["layers"][n]["shape"], p.c_out, partial_width(p.c_out),
             [(g.stop - g.start, g.wbits) for g in p.groups], p.abits)
            for n, p in plan.layers.items() if isinstance(p, LayerPlan)]


def plan_step_ms(plan: BitPlan, stats: dict, table: LatencyTable, threads: int) -> dict[str, float]:
    """Predicted ms of one UNet call of a written plan, by call kind (the table's whole-step model)."""
    return table.step_ms(stats["model"]["sha256"][:16], plan_layers(plan, stats), threads)


def plan_totals(plan: BitPlan, stats: dict, table: LatencyTable, threads: int) -> tuple[int, float, float]:
    """Weight bytes (as packed), latency ms of one whole UNet call and average weight bits of a written
    plan, from the plan alone (not from the ILP): what a budget is checked against."""
    nbytes, wbits, weights = 0, 0, 0
    for name, p in plan.layers.items():
        if not isinstance(p, LayerPlan):
            continue
        L = stats["layers"][name]
        groups = [(g.stop - g.start, g.wbits) for g in p.groups]
        nbytes += layer_weight_bytes(L["weights_per_channel"], groups)
        wbits += L["weights_per_channel"] * sum(n * b for n, b in groups)
        weights += L["weights_per_channel"] * p.c_out
    ms = sum(plan_step_ms(plan, stats, table, threads).values())
    return nbytes, ms, wbits / max(weights, 1)


def latency_table(board, table_path, budgets: Budgets) -> LatencyTable:
    """The board's measured table; a board never profiled takes memory and bits budgets only."""
    path = Path(table_path) if table_path else latency_path(board)
    if table_path or path.is_file():
        table = LatencyTable.load(path, board.name)
        try:
            found = table.check_measured_on(board, path)
        except UserError as exc:
            if budgets.latency_ms is not None:
                raise
            # a table of another CPU predicts no latency here, but a memory or bits budget needs none
            print(f"warning: {exc} Latency is not modelled for this allocation.", file=sys.stderr)
            return UnmeasuredTable(board.name)
        for w in found:
            print(f"warning: {w}", file=sys.stderr)
        if table.emulated and budgets.latency_ms is not None:
            raise UserError(f"latency table {str(path)!r} was measured on an emulated board (qemu): its times are no "
                            f"milliseconds, and a latency budget needs the board profiled first. Possible solutions: "
                            f"profile a real {board.name} (mpqdm profile --board "
                            f"{board.name} --tracker HOST:PORT), or a --weight-memory-kb budget")
        return table
    if budgets.latency_ms is not None:
        raise UserError(f"board {board.name!r} has no measured latency table ({path}): a latency budget needs "
                        f"the board profiled first (mpqdm profile MODEL --board {board.name}, on the board). "
                        "Possible solutions: a --weight-memory-kb budget or fixed bits instead")
    return UnmeasuredTable(board.name)


def allocate(stats_path, board_name: str, budgets: Budgets, abits: int | None = None, bits=DEFAULT_BITS,
             group_size: int | None = None, table_path=None, threads: int | None = None, solver_threads: int = 2,
             cost_model: str = DEFAULT_COST, time_limit: float | None = TIME_LIMIT_S):
    board = load_board(board_name)
    stats = read_stats(stats_path)          # the user's own input is checked first
    table = latency_table(board, table_path, budgets)
    for what, v in (("latency", budgets.latency_ms), ("weight memory", budgets.weight_kb),
                    ("average bits", budgets.avg_bits)):
        if v is not None and v <= 0:
            raise UserError(f"the {what} budget must be positive, got {v:g}")
    g = board.group_size if group_size is None else group_size
    args = (threads or board.threads, g, bits, (abits,) if abits else (4, 8))
    try:
        problems = build(stats, table, *args, cost_model=cost_model)
        fixed = fixed_ms(stats, table, args[0])
    except UserError:
        if budgets.latency_ms is not None or not table.measured:
            raise
        table = UnmeasuredTable(board.name)          # a table without this model's shapes binds nothing
        problems, fixed = build(stats, table, *args, cost_model=cost_model), 0.0
    sol = solve(problems, budgets, solver_threads, time_limit, fixed)
    if not sol.optimal:
        print(f"note: the solver stopped at its time limit ({time_limit:g} s) with a plan that meets the budgets "
              "but is not proven the best. Possible solutions: --time-limit with more seconds", file=sys.stderr)
    if not table.measured:
        sol = dataclasses.replace(sol, latency_ms=None)     # not modelled: say so, never "0 ms"
    return to_plan(stats, problems, sol, g), sol, problems, stats


def allocate_to(out, stats_path, board_name: str, budgets: Budgets, abits: int | None = None, bits=DEFAULT_BITS,
                group_size: int | None = None, table_path=None, threads: int | None = None,
                pareto_points: int = 5, cost_model: str = DEFAULT_COST,
                time_limit: float | None = TIME_LIMIT_S) -> tuple[BitPlan, Solution, Path]:
    """`mpqdm allocate`: the plan at `out`, its report (and, with pareto_points > 0, the Pareto and
    bits plots) beside it. Returns the plan, the solution and the report's path."""
    out = check_output_file(out, "allocate")
    plan, sol, problems, _ = allocate(stats_path, board_name, budgets, abits, bits, group_size, table_path, threads,
                                      cost_model=cost_model, time_limit=time_limit)
    plan.save(out)
    stem = out.with_suffix("")
    report = stem.with_suffix(".report.md")
    write_report(report, report_rows(problems, sol), sol, budgets, board_name)
    if pareto_points > 0:
        plot(stem.with_suffix(".pareto.png"), stem.with_suffix(".bits.png"), problems, sol, budgets, pareto_points, 2)
    return plan, sol, report


def report_rows(problems: list[LayerProblem], sol: Solution) -> list[dict]:
    rows = []
    for p in problems:
        a, bits = sol.choice[p.name]
        cost, nbytes, ms = layer_terms(p, a, bits)
        mix = {}
        for n, b in zip(p.sizes, bits, strict=True):
            mix[b] = mix.get(b, 0) + n
        rows.append({"layer": p.name, "c_out": p.c_out, "abits": a,
                     "wbits": " ".join(f"{n}@{b}" for b, n in sorted(mix.items(), reverse=True)),
                     "avg_wbits": round(sum(n * b for b, n in mix.items()) / p.c_out, 3),
                     "cost": f"{cost:.4g}", "weight_kb": f"{nbytes / 1024:.2f}", "ms": f"{ms:.4f}"})
    return rows


def latency_text(sol: Solution) -> str:
    if sol.latency_ms is None:
        return "not modelled (no timed latency table for these layers)"
    return f"{sol.latency_ms:.4f} ms"


def split_text(sol: Solution) -> str:
    if sol.latency_ms is None or sol.latency_ms <= 0:
        return ""
    q = sol.latency_ms - sol.fixed_ms
    return (f" ({q:.4f} ms, {100 * q / sol.latency_ms:.0f}%, in the quantized layers and their quantizers; "
            f"{sol.fixed_ms:.4f} ms in the float calls)")


def write_report(path: Path, rows: list[dict], sol: Solution, budgets: Budgets, board: str) -> None:
    lines = [f"# Bit allocation for board {board}", "",
             f"Predicted cost {sol.cost:.5g}; weight memory {sol.weight_bytes / 1024:.2f} KB"
             f" (budget {budgets.weight_kb if budgets.weight_kb is not None else 'none'});"
             f" latency {latency_text(sol)} per UNet call{split_text(sol)}"
             f" (budget {budgets.latency_ms if budgets.latency_ms is not None else 'none'});"
             f" average weight bits {sol.avg_bits:.3f}; solved in {sol.solve_s:.2f} s"
             + ("." if sol.optimal else " (stopped at the time limit: feasible, not proven the best)."), "",
             markdown_table(rows, list(rows[0]))]
    path.write_text("\n".join(lines) + "\n")


def plot(path_pareto: Path, path_bits: Path, problems: list[LayerProblem], sol: Solution, budgets: Budgets,
         points: int, threads: int) -> None:
    """Predicted cost against latency and against weight memory over several budgets (each curve
    tightens one budget from the plan's value down to the smallest feasible), and the chosen bits."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, obj, scale, unit in ((axes[0], "latency_ms", "latency", 1.0, "ms per UNet call"),
                                      (axes[1], "weight_kb", "memory", 1 / 1024, "weight KB")):
        others = {k: v for k, v in vars(budgets).items() if k != key}
        lo = smallest(problems, obj, Budgets(**others), threads, sol.fixed_ms)
        if lo is None:                  # nothing to trade (a board without a latency table)
            ax.set_title(f"no {obj} model")
            continue
        lo *= scale
        hi = sol.latency_ms if obj == "latency" else sol.weight_bytes * scale
        xs, ys = [], []
        for v in np.linspace(lo, max(hi, lo), points):
            try:
                s = solve(problems, Budgets(**others, **{key: float(v) * (1 + 1e-9)}), threads, TIME_LIMIT_S,
                          sol.fixed_ms)
            except UserError:
                continue
            xs.append(s.latency_ms if obj == "latency" else s.weight_bytes * scale)
            ys.append(s.cost)
        ax.plot(xs, ys, "o-")
        ax.set_xlabel(unit)
        ax.set_ylabel("predicted cost")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path_pareto, dpi=110)
    plt.close(fig)

    widths = sorted({b for p in problems for a in p.cost for b in p.cost[a]})
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(problems)), 4))
    bottom = np.zeros(len(problems))
    for b in widths:
        share = np.array([sum(n for n, bb in zip(p.sizes, sol.choice[p.name][1], strict=True) if bb == b) / p.c_out
                          for p in problems])
        ax.bar(range(len(problems)), share, bottom=bottom, label=f"{b} bits")
        bottom += share
    ax.set_xticks(range(len(problems)), [p.name for p in problems], rotation=90, fontsize=6)
    ax.set_ylabel("share of output channels")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path_bits, dpi=110)
    plt.close(fig)
