"""Data-free calibration: FP DDIM trajectories from Gaussian noise, layer inputs recorded per step.

One pass over the trajectories keeps, per layer and step: per-input-channel min / max / abs-max,
and a random subsample of input rows (all channels); plus, at a few steps, whole inputs of a few
samples (for layer output errors). Everything later (smoothing, activation ranges, costs) is
computed from these exactly, without a second pass. No training images are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from mpqdm.core.errors import UserError

from ..sampling import ddim_schedule, ddim_step
from .swap import quant_targets


@dataclass(frozen=True)
class CalibConfig:
    samples: int = 64
    steps: int = 20
    batch: int = 32
    seed: int = 1234
    rows_per_step: int = 256      # input rows kept per layer and step (percentiles)
    keep_samples: int = 2         # whole inputs kept for layer errors ...
    keep_every: int = 4           # ... at every k-th step

    def __post_init__(self):
        if self.steps < 1:
            raise UserError(f"calibration needs at least one sampling step, got steps={self.steps}. "
                            "Possible solutions: --calib-steps 20")
        if self.samples < 1 or self.batch < 1:
            raise UserError(f"calibration needs samples >= 1 and batch >= 1, got {self.samples}, {self.batch}")


@dataclass
class LayerRecord:
    cmin: list = field(default_factory=list)     # per step: [C_in]
    cmax: list = field(default_factory=list)
    rows: list = field(default_factory=list)     # per step: [R, C_in]
    kept: dict = field(default_factory=dict)     # step -> [keep_samples, ...] whole inputs

    @property
    def absmax(self) -> torch.Tensor:
        return torch.maximum(torch.stack(self.cmin).abs().amax(0), torch.stack(self.cmax).abs().amax(0))


@dataclass
class CalibData:
    config: CalibConfig
    timesteps: list[int]
    layers: dict[str, LayerRecord]
    net_inputs: dict[int, tuple[torch.Tensor, torch.Tensor]]  # step -> (x_t, t) of kept samples


def _channels_last_rows(x: torch.Tensor, is_conv: bool) -> torch.Tensor:
    return (x.movedim(1, -1) if is_conv else x).reshape(-1, x.shape[1] if is_conv else x.shape[-1])


@torch.no_grad()
def calibrate(unet: nn.Module, alphas_cumprod, cfg: CalibConfig = CalibConfig(),
              progress: bool = True) -> CalibData:
    """Run FP trajectories and record every Conv2d / Linear input per sampling step."""
    sched = ddim_schedule(alphas_cumprod, cfg.steps)
    targets = quant_targets(unet)
    recs = {n: LayerRecord() for n in targets}
    gen = torch.Generator().manual_seed(cfg.seed)
    dev = next(unet.parameters()).device
    state = {"step": 0, "first": True}
    acc: dict[str, list] = {n: [None, None, []] for n in targets}
    net_inputs: dict[int, tuple] = {}

    def hook(name, is_conv):
        def fn(_mod, args):
            x = args[0].detach().float()
            rows = _channels_last_rows(x, is_conv)
            a = acc[name]
            mn, mx = rows.amin(0).cpu(), rows.amax(0).cpu()
            a[0] = mn if a[0] is None else torch.minimum(a[0], mn)
            a[1] = mx if a[1] is None else torch.maximum(a[1], mx)
            k = min(cfg.rows_per_step, rows.shape[0])
            pick = torch.randint(0, rows.shape[0], (k,), generator=gen)
            a[2].append(rows[pick.to(rows.device)].cpu())
            if state["first"] and state["step"] % cfg.keep_every == 0:
                recs[name].kept[state["step"]] = x[: cfg.keep_samples].cpu()
        return fn

    handles = [m.register_forward_pre_hook(hook(n, isinstance(m, nn.Conv2d))) for n, m in targets.items()]
    per_step: dict[int, dict] = {i: {} for i in range(cfg.steps)}
    try:
        nb = (cfg.samples + cfg.batch - 1) // cfg.batch
        bar = tqdm(total=nb * cfg.steps, desc="calibrate", disable=not progress)
        for b in range(nb):
            n = min(cfg.batch, cfg.samples - b * cfg.batch)
            x = torch.randn((n, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size),
                            generator=gen).to(dev)
            state["first"] = b == 0
            for i, t in enumerate(sched.timesteps):
                state["step"] = i
                tt = torch.full((n,), int(t), device=dev)
                if b == 0 and i % cfg.keep_every == 0:
                    net_inputs[i] = (x[: cfg.keep_samples].cpu(), tt[: cfg.keep_samples].cpu())
                eps = unet(x, tt).sample
                for name, a in acc.items():
                    d = per_step[i].setdefault(name, [None, None, []])
                    d[0] = a[0] if d[0] is None else torch.minimum(d[0], a[0])
                    d[1] = a[1] if d[1] is None else torch.maximum(d[1], a[1])
                    d[2].extend(a[2])
                    acc[name] = [None, None, []]
                x = ddim_step(x, eps, sched, i)
                bar.update(1)
        bar.close()
    finally:
        for h in handles:
            h.remove()
    for i in range(cfg.steps):
        for name, (mn, mx, rows) in per_step[i].items():
            r = recs[name]
            r.cmin.append(mn)
            r.cmax.append(mx)
            r.rows.append(torch.cat(rows)[: cfg.rows_per_step * 4])
    return CalibData(cfg, [int(t) for t in sched.timesteps], recs, net_inputs)
