"""The allocation problem: per quantized layer, channel groups in kurtosis order and, for every
(activation bits, weight bits) choice, its cost, weight bytes and latency terms.

- Groups: output channels sorted by descending kurtosis, cut into groups of G (the last may be
  smaller). G must be a multiple of the kernels' channel tile (packing.LANES), so that the packed
  size of a plan is the sum of its groups' sizes.
- Cost of group g at (a, b), by `cost_model`:
  "e2e": the layer's measured end-to-end error at (a, b) with all its channels at b
  (statistics' "e2e"), times the group's share of the layer's output error at (a, b) (the summed
  per-channel errors of its channels over all channels'). A width-specific gain, measured where it
  is used: 1-bit groups pay their own measured error, not an extrapolation from 4 bits.
  The default: its rank correlation with a plan's measured end-to-end error is 0.92-0.98 within each
  memory budget and 0.97 pooled, above "gain"'s in each (benchmarks/results/allocator_proxy.md).
  "gain": one per-layer gain measured at W4A8 times the group's summed output errors.
- Weight bytes, exactly as packed (core/packing.py layer_weight_bytes): the group's words at b
  bits, plus per layer the guard words and a float32 step and int32 zero point per channel.
- Latency: the model of core/latency.py (LatencyTable.layer_ms): each width a layer uses pays
  its fixed cost t0_b once, each channel its slope_b; a plan's widths run in one contiguous block
  each (bits never increase along the kurtosis order), so this is the kernel the plan compiles to.
  Each layer's input quantizer at its activation width (qt[a]; 0 where it runs inside the GroupNorm
  before the layer, whose time is a fixed call), and the calls no plan changes
  (fixed_ms: GroupNorm, attention, ...), make the latency a whole UNet call.
Layers the policy keeps at 8 bits are pinned (W8A8, their cost counted as constants); float layers
are outside the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mpqdm.core.bits import CANDIDATE_WBITS
from mpqdm.core.errors import UserError
from mpqdm.core.latency import LatencyTable
from mpqdm.core.latency import partial_width as default_partial
from mpqdm.core.packing import LANES, group_bytes, layer_fixed_bytes

DEFAULT_BITS = CANDIDATE_WBITS


@dataclass
class LayerProblem:
    name: str
    shape: str                      # latency-table shape key
    c_out: int
    k: int                          # weights per output channel
    order: tuple[int, ...]          # channels by descending kurtosis
    sizes: tuple[int, ...]          # group sizes along `order`
    pinned: tuple[int, int] | None  # (wbits, abits) of a pinned layer
    # per abits: per bits: per group
    cost: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    gbytes: dict[int, np.ndarray] = field(default_factory=dict)       # per bits: per group
    t0: dict[tuple[int, int], float] = field(default_factory=dict)    # (a, b) -> fixed ms
    slope: dict[tuple[int, int], float] = field(default_factory=dict)  # (a, b) -> ms per channel
    qt: dict[int, float] = field(default_factory=dict)                # a -> the input quantizer's ms

    @property
    def fixed_bytes(self) -> int:
        return layer_fixed_bytes(self.c_out)


def groups_of(kurt: list[float], group_size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    order = tuple(int(i) for i in np.argsort(-np.asarray(kurt, dtype=np.float64), kind="stable"))
    n = len(order)
    sizes = tuple(min(group_size, n - s) for s in range(0, n, group_size))
    return order, sizes


COST_MODELS, DEFAULT_COST = ("e2e", "gain"), "e2e"


def channel_costs(L: dict, cand: list[int], a: int, b: int, cost_model: str) -> np.ndarray:
    """Per output channel: its cost at (a, b), so that a group's or a plan's cost is a sum of these."""
    row = np.asarray(L["cost"][str(a)][cand.index(b)], dtype=np.float64)
    if cost_model == "gain":
        return L["sensitivity"] * row
    total = row.sum()
    share = row / total if total > 0 else np.full(len(row), 1 / len(row))
    return float(L["e2e"][str(a)][cand.index(b)]) * share


def group_costs(L: dict, cand: list[int], a: int, b: int, order, bounds, cost_model: str) -> np.ndarray:
    """Per group (channels in `order`, cut at `bounds`): the cost of the group at (a, b)."""
    return np.add.reduceat(channel_costs(L, cand, a, b, cost_model)[list(order)], bounds[:-1])


def build(stats: dict, table: LatencyTable, threads: int, group_size: int, bits=DEFAULT_BITS,
          abits=(4, 8), partial_width=None, cost_model: str = DEFAULT_COST) -> list[LayerProblem]:
    partial_width = partial_width or default_partial
    if cost_model not in COST_MODELS:
        raise UserError(f"unknown cost model {cost_model!r}. Possible solutions: {', '.join(COST_MODELS)}")
    if group_size < 1 or group_size % LANES:
        raise UserError(f"group size {group_size} is not a multiple of {LANES} (the kernels' channel tile). "
                        f"Possible solutions: --group-size {max(LANES, group_size // LANES * LANES)}")
    cand = stats["candidate_bits"]
    missing = [b for b in bits if b not in cand]
    if missing:
        raise UserError(f"the statistics have no costs for {missing}-bit weights (they cover {cand}). "
                        "Possible solutions: choose --bits among those, or re-run mpqdm stats")
    out, fused = [], table.fused_quantizers(stats["model"]["sha256"][:16])
    for name, L in stats["layers"].items():
        if L["policy"] == "float":
            continue
        order, sizes = groups_of(L["kurtosis"], group_size)
        k = int(L["weights_per_channel"])
        pinned = (8, 8) if L["policy"] == "w8a8" else None
        p = LayerProblem(name, L["shape"], int(L["c_out"]), k, order, sizes, pinned)
        widths = [8] if pinned else list(bits)
        acts = [8] if pinned else list(abits)
        bounds = np.cumsum((0,) + sizes)
        for a in acts:
            p.cost[a] = {b: group_costs(L, cand, a, b, order, bounds, cost_model) for b in widths}
            for b in widths:
                p.t0[a, b], p.slope[a, b] = table.fit(L["shape"], p.c_out, partial_width(p.c_out), b, a, threads)
            p.qt[a] = 0.0 if name in fused else table.time("quantize", L["shape"], 0, a, threads, 0)
        p.gbytes = {b: np.array([group_bytes(k, n, b) for n in sizes]) for b in widths}
        out.append(p)
    if not out:
        raise UserError("the statistics hold no quantized layer")
    return out


def fixed_ms(stats: dict, table: LatencyTable, threads: int) -> float:
    """The plan-independent ms of one UNet call of the statistics' model (its float calls)."""
    return table.fixed_ms(stats["model"]["sha256"][:16], threads)


def plan_cost(plan, stats: dict, cost_model: str = DEFAULT_COST) -> float:
    """The predicted cost of any written plan (BitPlan), channel by channel, as build() counts it:
    groups of other orders or sizes than the allocator's included. Pinned layers count at W8A8."""
    cand, total = stats["candidate_bits"], 0.0
    for name, lp in plan.layers.items():
        L = stats["layers"][name]
        if L["policy"] == "float" or not hasattr(lp, "groups"):
            continue
        for b, chans in _channels_by_bits(lp.bits_per_channel()).items():
            total += channel_costs(L, cand, lp.abits, b, cost_model)[chans].sum()
    return float(total)


def _channels_by_bits(bits) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for c, b in enumerate(bits):
        out.setdefault(b, []).append(c)
    return out
