"""`mpqdm eval`: DDIM samples -> classifier features -> Frechet distance, resumable, with a grid."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from mpqdm.core.errors import UserError
from mpqdm.core.io import ensure_writable_dir, write_json
from mpqdm.core.resources import DEFAULT_CLASSIFIER

from .classifier import features, load_classifier
from .data import mnist32
from .device import pick_device
from .fd import fd_of_features, gaussian
from .model_io import check_mnist_shape, load_scheduler, load_unet, model_fingerprint
from .quant.export import is_export, load_export
from .quant.swap import set_step
from .sampling import ddim_sample, ddim_schedule, step_map


@dataclass(frozen=True)
class EvalConfig:
    samples: int = 1000
    steps: int = 20
    seed: int = 0
    batch: int = 250

    def __post_init__(self):
        if self.samples < 2:
            raise UserError(f"--samples must be at least 2 (an FD needs a covariance), got {self.samples}")
        if self.batch < 1:
            raise UserError(f"--batch must be positive, got {self.batch}")
        if not 1 <= self.steps <= 1000:
            raise UserError(f"--steps must be in 1..1000, got {self.steps}")


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Model range [-1, 1] -> 8-bit pixels, as the real images are stored."""
    return np.clip(np.round((x + 1) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(u: np.ndarray) -> np.ndarray:
    return u.astype(np.float32) / 127.5 - 1.0


def save_grid(images_u8: np.ndarray, path: Path, rows: int = 8) -> None:
    """[N, 1, H, W] uint8 -> a rows x rows PNG grid with 2-pixel gaps."""
    n = min(len(images_u8), rows * rows)
    h, w = images_u8.shape[-2:]
    grid = np.full((rows * (h + 2) + 2, rows * (w + 2) + 2), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, rows)
        grid[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + c * (w + 2):2 + c * (w + 2) + w] = images_u8[k, 0]
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)


def batch_noise(cfg: EvalConfig, b: int, n: int) -> torch.Tensor:
    """The initial noise of batch b: depends only on (seed, b), so a resumed run is identical."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + b)
    return torch.randn((n, 1, 32, 32), generator=gen)


def eval_noise(cfg: EvalConfig) -> np.ndarray:
    """The noise `evaluate` starts from, NHWC, in sample order (for mpqdm-run --noise)."""
    parts = [batch_noise(cfg, b, min(cfg.batch, cfg.samples - b * cfg.batch)).numpy()
             for b in range(-(-cfg.samples // cfg.batch))]
    return np.concatenate(parts).transpose(0, 2, 3, 1).copy()


def sample_images(eps_fn_factory, cfg: EvalConfig, alphas_cumprod, work: Path, device,
                  num_train_timesteps: int = 1000, progress: bool = True) -> np.ndarray:
    """Generate cfg.samples images as uint8, one cached .npy per batch under `work`."""
    sched = ddim_schedule(alphas_cumprod, cfg.steps, num_train_timesteps)
    nb = (cfg.samples + cfg.batch - 1) // cfg.batch
    out = []
    bar = tqdm(total=cfg.samples, desc="sampling", unit="img", disable=not progress)
    for b in range(nb):
        n = min(cfg.batch, cfg.samples - b * cfg.batch)
        f = work / f"batch{b:04d}_n{n}.npy"
        if f.exists():
            imgs = np.load(f)
        else:
            x = ddim_sample(eps_fn_factory(), batch_noise(cfg, b, n).to(device), sched)
            imgs = to_uint8(x.float().cpu().numpy())
            tmp = f.with_name(f.stem + ".tmp.npy")
            np.save(tmp, imgs)
            tmp.replace(f)
        out.append(imgs)
        bar.update(n)
    bar.close()
    return np.concatenate(out)


def real_stats(classifier) -> tuple[np.ndarray, float]:
    """Features of all 5,000 real images, and the real-vs-real FD floor (1,000 random vs all)."""
    x, _ = mnist32()
    feats = features(classifier, x)
    idx = np.random.default_rng(0).choice(len(x), 1000, replace=False)
    return feats, fd_of_features(feats[idx], feats)


def load_for_sampling(model_dir, steps: int):
    """-> (unet, scheduler, eps_fn) for an FP diffusers folder or a quantized export."""
    if is_export(model_dir):
        unet, _, meta, _, sched = load_export(model_dir)
        deployed = ddim_schedule(sched.alphas_cumprod, steps, sched.config.num_train_timesteps).timesteps
        index = step_map(meta["timesteps"], deployed)

        def eps(x, t, i):
            set_step(unet, index[i])
            return unet(x, t).sample
    else:
        unet, sched = load_unet(model_dir), load_scheduler(model_dir)

        def eps(x, t, i):
            return unet(x, t).sample
    return unet.eval(), sched, eps


def evaluate(model_dir: str | Path, out_dir: str | Path, cfg: EvalConfig = EvalConfig(),
             device: str = "auto", classifier_dir: str | Path = DEFAULT_CLASSIFIER,
             progress: bool = True) -> dict:
    dev = pick_device(device)
    unet, sched, eps = load_for_sampling(model_dir, cfg.steps)
    check_mnist_shape(unet, model_dir)
    classifier, cinfo = load_classifier(classifier_dir)
    out_dir = ensure_writable_dir(out_dir)
    key = f"{model_fingerprint(model_dir)[:16]}_seed{cfg.seed}_steps{cfg.steps}_b{cfg.batch}"
    work = ensure_writable_dir(out_dir / ".partial" / key)
    unet = unet.to(dev)

    t0 = time.perf_counter()
    imgs = sample_images(lambda: eps, cfg, sched.alphas_cumprod, work, dev,
                         sched.config.num_train_timesteps, progress)
    seconds = time.perf_counter() - t0
    real_feats, floor = real_stats(classifier)
    gen_feats = features(classifier, from_uint8(imgs))
    fd = fd_of_features(gen_feats, real_feats)
    save_grid(imgs, out_dir / "samples_grid.png")
    mu_g, _ = gaussian(gen_feats)
    metrics = {"model": str(model_dir), "fd": round(fd, 3), "fd_floor": round(floor, 3),
               "samples": cfg.samples, "ddim_steps": cfg.steps, "eta": 0.0, "seed": cfg.seed,
               "classifier_accuracy": cinfo.get("heldout_accuracy"),
               "sampling_seconds": round(seconds, 1), "device": str(dev),
               "feature_mean_norm": round(float(np.linalg.norm(mu_g)), 4)}
    write_json(out_dir / "metrics.json", metrics)
    return metrics
