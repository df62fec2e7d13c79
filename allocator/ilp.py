"""The ILP (PuLP + the CBC solver its wheel bundles): one (activation bits, weight bits) choice per
channel group, minimising the summed cost under the weight-memory, latency and average-bits budgets.

    x[l,g,a,b] binary, sum_ab x = 1 per group; one activation width per layer (z[l,a]);
    bits never increase along the kurtosis order; u[l,a,b] >= x[l,g,a,b] marks the widths used
    memory  = sum fixed_bytes + sum gbytes[b][g] x                      <= M
    latency = sum t0[a,b] u + sum n_g slope[a,b] x + sum qt[a] z + F    <= L
              (pinned layers included; F: the float calls of the UNet call)
    avg     = sum n_g k b x / sum c_out k                                <= B
    linear  lo <= sum coeff[l,a,b,g] x <= hi   (optional: e.g. a drift measured per layer and width)
An infeasible budget is named with the smallest value that can be met (a second solve).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pulp

from mpqdm.core.errors import UserError
from mpqdm.core.latency import mix_ms

from .problem import LayerProblem


@dataclass
class Linear:
    """A further budget: lo <= the sum over the chosen widths of coeff[layer][(abits, bits)][group] <= hi
    (layers or widths without coefficients count 0)."""
    coeff: dict[str, dict[tuple[int, int], np.ndarray]]
    lo: float
    hi: float


@dataclass
class Budgets:
    latency_ms: float | None = None
    weight_kb: float | None = None
    avg_bits: float | None = None
    linear: Linear | None = None


@dataclass
class Solution:
    choice: dict[str, tuple[int, list[int]]]     # layer -> (abits, bits per group)
    cost: float
    weight_bytes: int
    latency_ms: float
    avg_bits: float
    solve_s: float
    fixed_ms: float = 0.0           # of latency_ms: the UNet call's float calls, which no plan changes
    optimal: bool = True            # False: the solver stopped at its time limit with this feasible plan


def _choices(p: LayerProblem):
    return [(a, b) for a in p.cost for b in p.cost[a]]


def layer_terms(p: LayerProblem, abits: int, bits: list[int]) -> tuple[float, int, float]:
    """(cost, weight bytes, latency ms) of one layer's choice: the plan-side recomputation."""
    cost = sum(float(p.cost[abits][b][g]) for g, b in enumerate(bits))
    nbytes = p.fixed_bytes + sum(int(p.gbytes[b][g]) for g, b in enumerate(bits))
    lat = mix_ms({b: (p.t0[abits, b], p.slope[abits, b]) for b in set(bits)}, list(zip(p.sizes, bits, strict=True)))
    return cost, nbytes, lat + p.qt.get(abits, 0.0)


def totals(problems: list[LayerProblem], choice: dict, fixed: float = 0.0) -> tuple[float, int, float, float]:
    cost, nbytes, lat, wb, w = 0.0, 0.0, fixed, 0.0, 0.0
    for p in problems:
        a, bits = choice[p.name]
        c, m, t = layer_terms(p, a, bits)
        cost, nbytes, lat = cost + c, nbytes + m, lat + t
        wb += p.k * sum(n * b for n, b in zip(p.sizes, bits, strict=True))
        w += p.k * p.c_out
    return cost, int(nbytes), lat, wb / w


class _Model:
    def __init__(self, problems: list[LayerProblem], objective: str, budgets: Budgets, fixed: float = 0.0):
        self.problems = problems
        self.m = pulp.LpProblem("mpqdm_bits", pulp.LpMinimize)
        self.x, cost, mem, lat, wbits, lin = {}, [], [], [fixed], [], []
        coeff = budgets.linear.coeff if budgets.linear is not None else {}
        weights = sum(p.k * p.c_out for p in problems)
        for li, p in enumerate(problems):
            ch = _choices(p)
            acts = sorted(p.cost)
            z = {a: self.m.add_variable(f"z_{li}_{a}", cat="Binary") for a in acts}
            self.m += pulp.lpSum(z.values()) == 1
            lat += [p.qt.get(a, 0.0) * z[a] for a in acts]
            u = {(a, b): self.m.add_variable(f"u_{li}_{a}_{b}", cat="Binary") for a, b in ch}
            mem.append(p.fixed_bytes)
            prev = None
            for g, n in enumerate(p.sizes):
                xs = {(a, b): self.m.add_variable(f"x_{li}_{g}_{a}_{b}", cat="Binary") for a, b in ch}
                self.x[li, g] = xs
                self.m += pulp.lpSum(xs.values()) == 1
                for a in acts:
                    self.m += pulp.lpSum(v for (aa, _), v in xs.items() if aa == a) == z[a]
                for key, v in xs.items():
                    self.m += u[key] >= v
                    a, b = key
                    cost.append(float(p.cost[a][b][g]) * v)
                    mem.append(int(p.gbytes[b][g]) * v)
                    lat.append(n * p.slope[a, b] * v)
                    wbits.append(n * p.k * b / weights * v)
                    if key in coeff.get(p.name, {}):
                        lin.append(float(coeff[p.name][key][g]) * v)
                bits = pulp.lpSum(b * v for (_, b), v in xs.items())
                if prev is not None:
                    self.m += prev >= bits
                prev = bits
            lat += [p.t0[key] * u[key] for key in ch]
        self.cost, self.mem = pulp.lpSum(cost), pulp.lpSum(mem)
        self.lat, self.avg = pulp.lpSum(lat), pulp.lpSum(wbits)
        self.m += {"cost": self.cost, "latency": self.lat, "memory": self.mem, "avg": self.avg}[objective]
        if budgets.weight_kb is not None:
            self.m += self.mem <= budgets.weight_kb * 1024
        if budgets.latency_ms is not None:
            self.m += self.lat <= budgets.latency_ms
        if budgets.avg_bits is not None:
            self.m += self.avg <= budgets.avg_bits
        if budgets.linear is not None:
            self.m += pulp.lpSum(lin) <= budgets.linear.hi
            self.m += pulp.lpSum(lin) >= budgets.linear.lo

    def solve(self, threads: int, time_limit: float | None) -> bool:
        """True when a plan was found; self.optimal says whether it was proven best before the time limit."""
        with warnings.catch_warnings():    # PuLP 3.3 warns that the bundled CBC goes away in 4.0 (pinned)
            warnings.simplefilter("ignore", DeprecationWarning)
            self.m.solve(pulp.PULP_CBC_CMD(msg=False, threads=threads, timeLimit=time_limit, gapRel=1e-6))
        self.optimal = self.m.sol_status == pulp.LpSolutionOptimal
        return pulp.LpStatus[self.m.status] == "Optimal"     # PuLP's "Optimal" includes stopped-on-time

    def choice(self) -> dict:
        out = {}
        for li, p in enumerate(self.problems):
            picks = [max(self.x[li, g].items(), key=lambda kv: kv[1].value() or 0)[0] for g in range(len(p.sizes))]
            out[p.name] = (picks[0][0], [b for _, b in picks])
        return out


def smallest(problems, objective: str, budgets: Budgets, threads: int, fixed: float = 0.0) -> float | None:
    m = _Model(problems, objective, budgets, fixed)
    if not m.solve(threads, None):
        return None
    return pulp.value(m.m.objective)


def solve(problems: list[LayerProblem], budgets: Budgets, threads: int = 2,
          time_limit: float | None = None, fixed: float = 0.0) -> Solution:
    """`fixed`: the plan-independent ms of the UNet call, counted in the latency. `time_limit`: seconds
    after which the best plan found so far is returned (Solution.optimal False). A tight latency bound
    with free activation widths can take CBC minutes to prove on the default model."""
    t = time.perf_counter()
    m = _Model(problems, "cost", budgets, fixed)
    if not m.solve(threads, time_limit):
        if m.m.status == pulp.LpStatusNotSolved:        # stopped on time before any plan: not "infeasible"
            raise UserError(f"the solver found no plan within its time limit ({time_limit:g} s). Possible "
                            "solutions: --time-limit with more seconds, or looser budgets")
        raise UserError(_infeasible(problems, budgets, threads, fixed))
    choice = m.choice()
    cost, nbytes, lat, avg = totals(problems, choice, fixed)
    return Solution(choice, cost, nbytes, lat, avg, time.perf_counter() - t, fixed, m.optimal)


def _infeasible(problems, budgets: Budgets, threads: int, fixed: float = 0.0) -> str:
    """Which budget cannot be met and the smallest value that can (with the other budgets, and alone)."""
    msgs = []
    for name, obj, value, unit, scale in (("latency", "latency", budgets.latency_ms, "ms per UNet call", 1.0),
                                           ("weight memory", "memory", budgets.weight_kb, "KB", 1 / 1024),
                                           ("average weight bits", "avg", budgets.avg_bits, "bits", 1.0)):
        if value is None:
            continue
        others = Budgets(**{k: v for k, v in vars(budgets).items()
                            if k != {"latency": "latency_ms", "memory": "weight_kb", "avg": "avg_bits"}[obj]})
        with_others = smallest(problems, obj, others, threads, fixed)
        if with_others is not None and with_others * scale <= value * (1 + 1e-9):
            continue
        alone = smallest(problems, obj, Budgets(), threads, fixed)
        msg = f"{name} {value:g} {unit} cannot be met"
        if with_others is not None:
            msg += f"; the smallest with the other budgets is {with_others * scale:.6g} {unit}"
        msg += f"; the smallest on its own is {alone * scale:.6g} {unit}"
        msgs.append(msg)
    if not msgs:
        msgs.append("the budgets cannot be met together (each alone can)")
    return "no plan fits: " + "; ".join(msgs) + ". Possible solutions: relax the named budget"
