"""The PyTorch model (FP folder or fake-quant export) run the way mpqdm-run runs it: DDIM samples from
given noise, or one UNet call at a sampling step. Arrays are NHWC float32, as the runtime's files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .evaluate import load_for_sampling
from .sampling import ddim_sample, ddim_schedule


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


@torch.no_grad()
def torch_samples(model_dir: Path, noise_nhwc: np.ndarray, steps: int) -> np.ndarray:
    """The DDIM run (eta 0) from the same noise."""
    _, sched, eps = load_for_sampling(model_dir, steps)
    s = ddim_schedule(sched.alphas_cumprod, steps, sched.config.num_train_timesteps)
    return ddim_sample(eps, _nchw(noise_nhwc), s).permute(0, 2, 3, 1).numpy()


def torch_eps_fn(model_dir: Path, steps: int):
    """The model loaded once -> eps_at(x_nhwc, step): one UNet call on x at sampling step `step` (0: the
    noisiest), as `mpqdm-run --unet-step`."""
    _, sched, eps = load_for_sampling(model_dir, steps)
    s = ddim_schedule(sched.alphas_cumprod, steps, sched.config.num_train_timesteps)

    @torch.no_grad()
    def eps_at(x_nhwc: np.ndarray, step: int) -> np.ndarray:
        x = _nchw(x_nhwc)
        t = torch.full((x.shape[0],), int(s.timesteps[step]), dtype=torch.long)
        return eps(x, t, step).permute(0, 2, 3, 1).numpy()

    return eps_at


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 2.0) -> float:
    """PSNR in dB over the model's [-1, 1] range (peak-to-peak 2)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


def rel_error(a: np.ndarray, ref: np.ndarray) -> float:
    """||a - ref|| / ||ref|| over the whole array."""
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(np.asarray(a, np.float64) - ref) / max(np.linalg.norm(ref), 1e-30))
