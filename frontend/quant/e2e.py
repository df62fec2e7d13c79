"""End-to-end sensitivity per layer and width: the UNet's noise-prediction error (as
plan_error.measured_error defines it) when one layer alone is quantized at (a, b), every other layer
FP, over the statistics' own FP trajectories (E2E_SEED, disjoint from the held-out ones).

All the widths of one layer run in one batch: the layer is replaced by a module that quantizes each
slice of its input batch at its own (a, b), so the rest of the UNet runs once per step for all of them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from .calibrate import CalibData
from .layers import QuantLayer
from .plan_error import E2E_SEED, Trajectories
from .quantizer import StepIndex
from .ranges import init_layer
from .swap import quant_targets, set_module


@dataclass(frozen=True)
class E2EConfig:
    samples: int = 8       # trajectories of the statistics
    every: int = 2         # evaluated steps: every k-th of the calibration's
    seed: int = E2E_SEED


class Widths(nn.Module):
    """Slice v of the input batch through variants[v] (all slices the same size)."""

    def __init__(self, variants: list[QuantLayer]):
        super().__init__()
        self.variants = nn.ModuleList(variants)

    def forward(self, x):
        return torch.cat([m(c) for m, c in zip(self.variants, x.chunk(len(self.variants)), strict=True)])


@torch.no_grad()
def layer_errors(unet: nn.Module, calib: CalibData, traj: Trajectories, bits: list[int], abits: list[int],
                 method: str, smoothing: bool, names: list[str] | None = None, every: int = 1,
                 progress: bool = True) -> dict[str, dict[str, list[float]]]:
    """{layer: {str(a): [error at each of `bits`]}}: the end-to-end error with that layer alone at
    W b A a (all channels), every other layer FP; on every `every`-th step of the trajectories."""
    targets = quant_targets(unet)
    names = list(targets) if names is None else names
    widths = [(a, b) for a in abits for b in bits]
    n = traj.x.shape[1]
    steps = list(range(0, len(traj.t), every))
    dev = next(unet.parameters()).device
    out = {}
    for name in tqdm(names, desc="e2e", disable=not progress):
        fp = targets[name]
        idx = StepIndex()
        variants = []
        for a, b in widths:
            layer = QuantLayer(copy.deepcopy(fp), torch.full((fp.weight.shape[0],), b), a, calib.config.steps, idx)
            init_layer(layer, calib.layers[name], method, smoothing)
            variants.append(layer)
        set_module(unet, name, Widths(variants).to(dev))
        err = torch.zeros(len(widths), dtype=torch.float64)
        try:
            for i in steps:
                idx.value, t = i, traj.t[i]
                x = traj.x[i].to(dev).repeat(len(widths), 1, 1, 1)
                eps = unet(x, torch.full((x.shape[0],), t, device=dev)).sample.cpu()
                d = (eps.view(len(widths), n, -1) - traj.eps[i].view(1, n, -1)).double().pow(2)
                err += d.mean((1, 2))
        finally:
            set_module(unet, name, fp)
        err /= len(steps)
        out[name] = {str(a): [float(err[widths.index((a, b))]) for b in bits] for a in abits}
    return out
