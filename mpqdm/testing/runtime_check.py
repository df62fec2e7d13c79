"""Running mpqdm-run from Python and comparing it with the PyTorch fake-quant model (tests, benchmarks).
The runner and the PyTorch run are product code (backend_tvm/run.py, frontend/torch_run.py); the
integer reference is test-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mpqdm.backend_tvm.run import run_binary
from mpqdm.frontend.evaluate import load_for_sampling
from mpqdm.frontend.sampling import ddim_sample, ddim_schedule
from mpqdm.frontend.torch_run import psnr
from mpqdm.frontend.torch_run import torch_samples as fake_quant_samples

__all__ = ["fake_quant_samples", "intref_samples", "psnr", "run_binary"]


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
