"""The project's small MNIST classifier (LeNet-style); its 128-d penultimate layer gives FD features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from mpqdm.core.errors import UserError
from mpqdm.core.io import ensure_writable_dir, write_json

from .data import mnist32, split_indices

FEATURE_DIM = 128


class LeNet(nn.Module):
    """Input: [N, 1, 32, 32] in [-1, 1] (the diffusion model's range)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),        # 28 -> 14
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),       # 10 -> 5
            nn.Flatten(), nn.Linear(64 * 5 * 5, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _shift(x: torch.Tensor, gen: torch.Generator, max_px: int = 2) -> torch.Tensor:
    """Random translation by up to max_px pixels (background is -1)."""
    n = x.shape[0]
    pad = torch.nn.functional.pad(x, (max_px,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_px + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_px + 1, (n,), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = pad[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
    return out


@torch.no_grad()
def accuracy(model: LeNet, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = torch.cat([model(torch.from_numpy(x[i:i + 500])).argmax(1) for i in range(0, len(x), 500)])
    return float((pred.numpy() == y).mean())


def train_classifier(out_dir: str | Path, epochs: int = 20, seed: int = 0, progress: bool = True) -> dict:
    out_dir = ensure_writable_dir(out_dir)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = mnist32()
    tr, te = split_indices(seed=0)
    xtr, ytr = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
    model = LeNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in tqdm(range(epochs), desc="train-classifier", disable=not progress):
        model.train()
        perm = torch.randperm(len(tr), generator=gen)
        for i in range(0, len(tr), 64):
            b = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(_shift(xtr[b], gen)), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    acc = accuracy(model, x[te], y[te])
    save_file(model.state_dict(), str(out_dir / "classifier.safetensors"))
    info = {"format": "mpqdm.classifier", "version": 1, "arch": "LeNet", "feature_dim": FEATURE_DIM,
            "heldout_accuracy": acc, "heldout_images": int(len(te)), "train_images": int(len(tr)),
            "epochs": epochs, "seed": seed}
    write_json(out_dir / "classifier.json", info)
    return info


def load_classifier(path: str | Path) -> tuple[LeNet, dict]:
    path = Path(path)
    meta, weights = path / "classifier.json", path / "classifier.safetensors"
    if not meta.is_file() or not weights.is_file():
        raise UserError(f"no classifier in {str(path)!r} (need classifier.json and classifier.safetensors). "
                        "Possible solutions: mpqdm train-classifier --out " + str(path))
    info = json.loads(meta.read_text())
    model = LeNet()
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), info


@torch.no_grad()
def features(model: LeNet, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """float32 [N, 1, 32, 32] in [-1, 1] -> float64 [N, FEATURE_DIM]."""
    model.eval()
    out = [model.features(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32)))
           for i in range(0, len(x), batch)]
    return torch.cat(out).double().numpy()
