"""The measured end-to-end error of a quantized model, defined once for every stage and benchmark:
the mean squared difference between its noise predictions and the FP model's over FP DDIM
trajectories, both models fed the FP trajectory's x_t, averaged over all elements, samples and steps.

The held-out trajectories (64 samples, 20 steps) start from noise of HELDOUT_SEED, which neither
calibration (CalibConfig.seed) nor the end-to-end statistics (E2E_SEED) use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..sampling import ddim_schedule, ddim_step
from .swap import set_step

HELDOUT_SEED = 20_261_201
E2E_SEED = 4_321           # the statistics' own trajectories (frontend/quant/e2e.py)


@dataclass
class Trajectories:
    x: torch.Tensor      # [steps, n, C, H, W]: the FP trajectory's x_t
    t: list[int]         # the timestep of each step
    eps: torch.Tensor    # [steps, n, C, H, W]: the FP model's noise prediction


@torch.no_grad()
def fp_trajectories(unet: nn.Module, alphas_cumprod, samples: int = 64, steps: int = 20,
                    seed: int = HELDOUT_SEED, batch: int = 64) -> Trajectories:
    """DDIM (eta 0) trajectories of the FP model from seeded Gaussian noise."""
    sched = ddim_schedule(alphas_cumprod, steps)
    c = unet.config
    dev = next(unet.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((samples, c.in_channels, c.sample_size, c.sample_size), generator=gen)
    xs, eps = [], []
    for x in noise.split(batch):
        x = x.to(dev)
        bx, be = [], []
        for i, t in enumerate(sched.timesteps):
            e = unet(x, torch.full((x.shape[0],), int(t), device=dev)).sample
            bx.append(x.cpu())
            be.append(e.cpu())
            x = ddim_step(x, e, sched, i)
        xs.append(torch.stack(bx))
        eps.append(torch.stack(be))
    return Trajectories(torch.cat(xs, 1), [int(t) for t in sched.timesteps], torch.cat(eps, 1))


@torch.no_grad()
def measured_error(qunet: nn.Module, traj: Trajectories, batch: int = 64) -> float:
    """Mean over steps, samples and elements of (eps_q - eps_fp)^2, the quantized model at each
    step's own activation ranges (an FP model, without them, scores 0)."""
    dev = next(qunet.parameters()).device
    total, count = 0.0, 0
    for i, t in enumerate(traj.t):
        if hasattr(qunet, "mpq_step_index"):
            set_step(qunet, i)
        for x, e in zip(traj.x[i].split(batch), traj.eps[i].split(batch), strict=True):
            out = qunet(x.to(dev), torch.full((x.shape[0],), t, device=dev)).sample
            total += float((out.cpu() - e).double().pow(2).sum())
            count += e.numel()
    return total / count
