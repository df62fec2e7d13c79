"""MPQ-DM's outlier-driven mixed quantization (OMQ): kurtosis per channel, per-channel costs,
and the N-1 / N / N+1 split with k searched per layer."""

from __future__ import annotations

import torch
from torch import nn

from mpqdm.core.bitplan import Group, LayerPlan

from .calibrate import LayerRecord
from .layers import QuantLayer
from .quantizer import ActQuantizer, StepIndex, WeightQuantizer
from .ranges import act_ranges


def kurtosis(w: torch.Tensor) -> torch.Tensor:
    """Plain (not excess) kurtosis per output channel over all its inputs: E[(w-mu)^4] / sigma^4."""
    flat = w.detach().double().reshape(w.shape[0], -1)
    d = flat - flat.mean(1, keepdim=True)
    var = d.pow(2).mean(1)
    return (d.pow(4).mean(1) / var.pow(2).clamp(min=1e-30)).float()


@torch.no_grad()
def channel_costs(layer: QuantLayer, rec: LayerRecord, bits: list[int], abits: int,
                  method: str) -> torch.Tensor:
    """[len(bits), c_out]: squared output error of each channel when it alone takes each width.

    Measured on the kept calibration inputs with the input quantized at `abits` (per-step ranges):
    sum over samples and positions of (X W_c - Q(X/s) Q_b(W_c s))^2. Channels do not interact, so
    the cost of any grouping is the sum of its channels' costs.
    """
    ranges = act_ranges(rec, layer.smooth, method)
    idx = StepIndex()
    aq = ActQuantizer(abits, len(ranges), idx).to(layer.smooth.device)
    for i, (lo, hi) in enumerate(ranges):
        aq.set_range(i, lo, hi)
    w = layer.fp.weight.detach()
    ws = layer.smoothed_weight().detach()
    c_out = w.shape[0]
    costs = torch.zeros(len(bits), c_out, dtype=torch.float64)
    quants = []
    for b in bits:
        wq = WeightQuantizer(torch.full((c_out,), b)).to(w.device)
        wq.init_range(ws, method)
        quants.append(wq(ws))
    dim = 1 if layer.is_conv else -1
    for step, x in sorted(rec.kept.items()):
        x = x.to(w.device)
        idx.value = step
        y = layer.op(x, w)
        xq = aq(layer.smoothed_input(x))
        for k, wqb in enumerate(quants):
            e = (layer.op(xq, wqb) - y).double().pow(2).movedim(dim, 0).reshape(c_out, -1).sum(1)
            costs[k] += e.cpu()
    return costs


def omq_split(kurt: torch.Tensor, costs: torch.Tensor, bits: list[int], n: int, abits: int,
              group: int = 1, fractions=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5)) -> LayerPlan:
    """Top-k kurtosis channels get n+1 bits, bottom-k n-1, the rest n; k (a multiple of `group`)
    chosen among the fractions of c_out by the smallest summed calibration cost."""
    c_out = kurt.numel()
    order = torch.argsort(kurt, descending=True, stable=True)
    row = {b: costs[bits.index(b)][order] for b in (n - 1, n, n + 1) if b in bits}
    best = None
    for f in fractions:
        k = int(round(f * c_out / group)) * group
        if 2 * k > c_out or (k > 0 and (n - 1 not in row or n + 1 not in row)):
            continue
        total = row[n][k:c_out - k].sum() + (row[n + 1][:k].sum() + row[n - 1][c_out - k:].sum() if k else 0)
        if best is None or total < best[0]:
            best = (float(total), k)
    k = best[1]
    spans = [(0, k, n + 1), (k, c_out - k, n), (c_out - k, c_out, n - 1)]
    groups = tuple(Group(a, b, bits_) for a, b, bits_ in spans if b > a)
    return LayerPlan(order=tuple(int(i) for i in order), groups=groups, abits=abits)


def is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d)
