"""Initial quantizer ranges from calibration records: smoothing, activation ranges per step, weights."""

from __future__ import annotations

import torch

from mpqdm.core.errors import UserError

from .calibrate import CalibData, LayerRecord
from .layers import QuantLayer
from .swap import quant_layers

METHODS = ("minmax", "mse")


def smoothing_factors(rec: LayerRecord, weight: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant: s_j = max|X_j|^alpha / max|W_j|^(1 - alpha); 1 where either is zero."""
    wmax = weight.detach().abs().transpose(0, 1).reshape(weight.shape[1], -1).amax(1).cpu()
    xmax = rec.absmax
    s = xmax.pow(alpha) / wmax.pow(1 - alpha)
    ok = (xmax > 0) & (wmax > 0) & torch.isfinite(s)
    return torch.where(ok, s, torch.ones_like(s)).clamp(1e-4, 1e4)


def act_ranges(rec: LayerRecord, smooth: torch.Tensor, method: str) -> list[tuple[float, float]]:
    """Per sampling step (lo, hi) of the smoothed input x / s."""
    out = []
    s = smooth.cpu()
    for i in range(len(rec.cmin)):
        if method == "minmax":
            lo = (torch.minimum(rec.cmin[i] / s, torch.zeros(()))).min()
            hi = (torch.maximum(rec.cmax[i] / s, torch.zeros(()))).max()
        elif method == "mse":  # percentile clipping of the recorded rows
            v = (rec.rows[i] / s).flatten()
            if v.numel() > 4_000_000:
                v = v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(i))[:4_000_000]]
            lo, hi = torch.quantile(v, 0.001), torch.quantile(v, 0.999)
        else:
            raise UserError(f"unknown range method {method!r}. Possible solutions: {', '.join(METHODS)}")
        out.append((float(lo), float(hi)))
    return out


@torch.no_grad()
def init_layer(layer: QuantLayer, rec: LayerRecord, method: str, smoothing: bool) -> None:
    if len(rec.cmin) != layer.aq.n_steps:
        raise UserError(f"calibration has {len(rec.cmin)} steps but the layer expects {layer.aq.n_steps}")
    if smoothing:
        layer.smooth.copy_(smoothing_factors(rec, layer.fp.weight).to(layer.smooth.device))
    layer.wq.init_range(layer.smoothed_weight(), method)
    for i, (lo, hi) in enumerate(act_ranges(rec, layer.smooth, method)):
        layer.aq.set_range(i, lo, hi)


def init_model(qunet, calib: CalibData, method: str = "mse", smoothing: bool = True) -> None:
    """Set smoothing factors, weight ranges and per-step activation ranges of every QuantLayer."""
    if method not in METHODS:
        raise UserError(f"unknown range method {method!r}. Possible solutions: {', '.join(METHODS)}")
    for name, layer in quant_layers(qunet).items():
        init_layer(layer, calib.layers[name], method, smoothing)
