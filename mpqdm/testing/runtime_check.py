"""Running mpqdm-run from Python and comparing it with the PyTorch fake-quant model (tests, benchmarks)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch

from mpqdm.frontend.evaluate import load_for_sampling
from mpqdm.frontend.sampling import ddim_sample, ddim_schedule


def run_binary(cmd: list[str], model: Path, noise: np.ndarray, out: Path, *extra: str,
               timeout: int = 1200) -> np.ndarray:
    """Run `cmd model --noise ... --out out *extra`; returns samples.f32 (or eps.f32) as NHWC."""
    out.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(noise, np.float32).tofile(out / "noise.f32")
    r = subprocess.run([*cmd, str(model), "--noise", str(out / "noise.f32"), "--out", str(out), *extra],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {r.returncode}: {r.stderr[-3000:]}")
    name = "eps.f32" if "--unet-step" in extra else "samples.f32"
    return np.fromfile(out / name, np.float32).reshape(noise.shape)


@torch.no_grad()
def fake_quant_samples(export: Path, noise_nhwc: np.ndarray, steps: int) -> np.ndarray:
    """The PyTorch fake-quant DDIM run (eta 0) from the same noise, NHWC."""
    unet, sched, eps = load_for_sampling(export, steps)
    s = ddim_schedule(sched.alphas_cumprod, steps, sched.config.num_train_timesteps)
    x = torch.from_numpy(np.ascontiguousarray(noise_nhwc.transpose(0, 3, 1, 2)))
    return ddim_sample(eps, x, s).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def intref_samples(export: Path, noise_nhwc: np.ndarray, steps: int) -> np.ndarray:
    """The same DDIM run with the frontend's integer reference UNet (exact integer layers)."""
    from mpqdm.frontend.quant.swap import set_step
    from mpqdm.testing.intref import integer_reference

    ref, _ = integer_reference(export)
    _, sched, _ = load_for_sampling(export, steps)
    s = ddim_schedule(sched.alphas_cumprod, steps, sched.config.num_train_timesteps)

    def eps(x, t, i):
        set_step(ref, i)
        return ref(x, t).sample

    x = torch.from_numpy(np.ascontiguousarray(noise_nhwc.transpose(0, 3, 1, 2)))
    return ddim_sample(eps, x, s).permute(0, 2, 3, 1).numpy()


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 2.0) -> float:
    """PSNR in dB over the model's [-1, 1] range (peak-to-peak 2)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)
