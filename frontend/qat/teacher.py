"""The teacher's side of one QAT iteration, computed once: the FP DDIM trajectory from the iteration's
noise (x_t and the FP noise prediction at every step) and the tapped decoder features TRD compares.

It depends only on (FP model, seed, iteration, batch, process rank, timesteps), so every run of an
ablation with the same seed can share it: `TeacherCache` keeps one file per iteration under a folder
named by that key (its key.json says what it holds). Features are a separate file, so runs without
TRD read only the small part.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from mpqdm.core.errors import UserError
from mpqdm.core.io import atomic_torch_save, ensure_writable_dir, write_json

from ..sampling import DDIMSchedule, ddim_step
from .trd import FeatureTap

CACHE_VERSION = 1


@dataclass
class TeacherSteps:
    x: torch.Tensor                    # [steps, B, C, H, W]: the FP trajectory's x_t at each step
    eps: torch.Tensor                  # [steps, B, C, H, W]: the FP model's noise prediction there
    feats: torch.Tensor | None = None  # [steps, B, C', H', W']: the tapped block's output (TRD)


@torch.no_grad()
def run_teacher(teacher, x: torch.Tensor, sched: DDIMSchedule, tap: FeatureTap | None) -> TeacherSteps:
    """The FP trajectory from noise `x`; with `tap`, the tapped block's output at every step."""
    xs, eps, feats = [], [], []
    for i, t in enumerate(sched.timesteps):
        e = teacher(x, torch.full((x.shape[0],), int(t), device=x.device)).sample
        xs.append(x)
        eps.append(e)
        if tap is not None:
            feats.append(tap.pop().contiguous())
        x = ddim_step(x, e, sched, i)
    return TeacherSteps(torch.stack(xs), torch.stack(eps), torch.stack(feats) if feats else None)


class TeacherCache:
    """Teacher trajectories on disk, one iteration per file, written atomically (two runs may share
    a folder: the one that finds a file missing computes and writes it)."""

    def __init__(self, root: str | Path, key: dict):
        self.key = {"version": CACHE_VERSION, **key}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / digest
        ensure_writable_dir(self.dir)
        kfile = self.dir / "key.json"
        if not kfile.is_file():
            write_json(kfile, self.key)
        elif json.loads(kfile.read_text()) != self.key:
            raise UserError(f"{self.dir} holds teacher trajectories of another key. Possible solutions: "
                            "delete that folder")

    def _paths(self, it: int) -> tuple[Path, Path]:
        return self.dir / f"{it:06d}.pt", self.dir / f"{it:06d}.feats.pt"

    def get(self, it: int, want_feats: bool, compute) -> TeacherSteps:
        """Iteration `it`'s trajectory: from disk, or from `compute()` (then saved)."""
        main, fpath = self._paths(it)
        if main.is_file() and (fpath.is_file() or not want_feats):
            d = torch.load(main, weights_only=True)
            feats = torch.load(fpath, weights_only=True) if want_feats else None
            return TeacherSteps(d["x"], d["eps"], feats)
        steps = compute()
        atomic_torch_save({"x": steps.x, "eps": steps.eps}, main)
        if steps.feats is not None:
            atomic_torch_save(steps.feats, fpath)
        return steps
