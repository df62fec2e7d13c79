"""DDIM sampling written out, so every stage (QAT, runtime) shares the same timesteps and constants.

Matches diffusers' DDIMScheduler with "leading" spacing, set_alpha_to_one=True and sample clipping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DDIMSchedule:
    timesteps: np.ndarray      # int64 [steps], descending
    alpha_t: np.ndarray        # float64 [steps], alphas_cumprod at each timestep
    alpha_prev: np.ndarray     # float64 [steps], at the next (smaller) timestep, 1.0 after the last
    clip: float | None         # clip the predicted x0 to [-clip, clip]


def ddim_schedule(alphas_cumprod, steps: int = 20, num_train_timesteps: int = 1000,
                  clip: float | None = 1.0) -> DDIMSchedule:
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"DDIM steps must be in 1..{num_train_timesteps}, got {steps}")
    ac = np.asarray(alphas_cumprod, dtype=np.float64)
    stride = num_train_timesteps // steps
    ts = (np.arange(steps) * stride)[::-1].astype(np.int64)
    prev = ts - stride
    a_prev = np.where(prev >= 0, ac[np.clip(prev, 0, None)], 1.0)
    return DDIMSchedule(ts, ac[ts], a_prev, clip)


EpsFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


@torch.no_grad()
def ddim_sample(eps_fn: EpsFn, noise: torch.Tensor, sched: DDIMSchedule) -> torch.Tensor:
    """eta = 0 DDIM. eps_fn(x_t, t, step_index) predicts the noise; step_index 0 is the noisiest."""
    x = noise
    for i, t in enumerate(sched.timesteps):
        x = ddim_step(x, eps_fn(x, torch.full((x.shape[0],), int(t), device=x.device), i), sched, i)
    return x


def ddim_step(x: torch.Tensor, eps: torch.Tensor, sched: DDIMSchedule, i: int) -> torch.Tensor:
    a_t, a_prev = float(sched.alpha_t[i]), float(sched.alpha_prev[i])
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
    if sched.clip is not None:
        x0 = x0.clamp(-sched.clip, sched.clip)
    return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps


def step_map(trained: list[int], deployed) -> list[int]:
    """For each deployed timestep, the index of the nearest trained one: per-step quantizer
    parameters are resampled this way when the step count differs from the calibrated one."""
    tr = np.asarray(trained)
    return [int(np.abs(tr - int(t)).argmin()) for t in deployed]
