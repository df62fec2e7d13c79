"""QAT's fast path: the same loss as train._trajectory, computed with fewer, larger operations.

- The teacher's trajectory is computed first (or read from a shared cache): it never depends on
  the student.
- The student runs a whole TRD window as one batch (the window's x_t stacked, one activation
  step per sample), so each optimiser step costs one forward, one backward and one weight
  fake-quant instead of `window` of each.
- Models are channels-last and AdamW is fused. Optionally (`compile_`) the student, the teacher and
  the TRD term are compiled by torch.compile: faster, but its float32 gradients are several times
  further from float64's than eager PyTorch's (benchmarks/qat_grad_check.py), so it is off by default.
Per step the loss is the plain path's: sum over pixels of (eps_q - eps_fp)^2, mean over the batch.
"""

from __future__ import annotations

import torch

from ..quant.swap import set_step
from .config import QATConfig, keep_steps_positive
from .teacher import TeacherSteps
from .trd import trd_loss


def compiled(module, enabled: bool):
    """torch.compile on CPU needs a C++ compiler (scripts/install.sh installs g++)."""
    return torch.compile(module, dynamic=False) if enabled else module


class FastLoop:
    def __init__(self, q, fwd, tap_q, cfg: QATConfig, compile_: bool = False, teacher=None):
        self.q, self.tap_q, self.cfg = q, tap_q, cfg
        self.run = compiled(fwd, compile_)
        self.teacher = compiled(teacher, compile_) if teacher is not None else None
        self.trd = compiled(trd_loss, compile_) if tap_q is not None else None

    def trajectory(self, steps: TeacherSteps, sched, opt, lr_sched) -> tuple[float, float]:
        """One iteration from the teacher's steps: one optimiser step per window. Returns the summed
        per-step output losses and the summed TRD terms (as train._trajectory)."""
        cfg, n, b = self.cfg, steps.x.shape[0], steps.x.shape[1]
        dev = steps.x.device
        out_sum = trd_sum = 0.0
        for w0 in range(0, n, cfg.window):
            k = min(cfg.window, n - w0)
            x = steps.x[w0:w0 + k].flatten(0, 1).contiguous(memory_format=torch.channels_last)
            t = torch.as_tensor(sched.timesteps[w0:w0 + k].copy(), device=dev).repeat_interleave(b)
            set_step(self.q, torch.arange(w0, w0 + k, device=dev).repeat_interleave(b))
            eps_q = self.run(x, t).sample
            per_step = (eps_q - steps.eps[w0:w0 + k].flatten(0, 1)).pow(2).flatten(1).sum(1).view(k, b).mean(1)
            loss = per_step.sum()
            out_sum += float(loss.detach())
            if self.trd is not None:
                f_q = self.tap_q.pop().unflatten(0, (k, b))
                rel = self.trd(list(steps.feats[w0:w0 + k].unbind(0)), list(f_q.unbind(0)))
                trd_sum += float(rel.detach())
                loss = loss + cfg.trd_weight * rel
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            keep_steps_positive(self.q)
            lr_sched.step()
        return out_sum, trd_sum
