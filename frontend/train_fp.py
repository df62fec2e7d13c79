"""Train the default FP DDPM UNet on MNIST-5k (epsilon prediction, EMA weights), resumably."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mpqdm.core.errors import UserError
from mpqdm.core.io import atomic_torch_save, check_output_dir, ensure_writable_dir, replace_dir, staging_dir, write_json
from mpqdm.core.machine import cpu_name

from .data import mnist32
from .device import pick_device
from .fp_model import default_scheduler, default_unet


@dataclass(frozen=True)
class TrainConfig:
    iters: int = 3500
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    ckpt_every: int = 250

    def __post_init__(self):
        for name in ("iters", "batch", "ckpt_every"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name} must be positive, got {getattr(self, name)}")


def _lr_at(phases: list[dict], it: int) -> float:
    """Linear warm-up, then cosine decay to 5% within each phase (a phase per --extend)."""
    ph = next(p for p in phases if p["start"] <= it < p["end"])
    k, n = it - ph["start"], ph["end"] - ph["start"]
    if k < ph["warmup"]:
        return ph["lr"] * (k + 1) / ph["warmup"]
    frac = (k - ph["warmup"]) / max(1, n - ph["warmup"])
    return ph["lr"] * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def _phases(st: dict | None, cfg: TrainConfig, extend: bool, state_path) -> list[dict]:
    first = [{"start": 0, "end": cfg.iters, "lr": cfg.lr, "warmup": cfg.warmup}]
    if st is None:
        return first
    old = st["config"]
    phases = st.get("phases") or [{"start": 0, "end": old["iters"], "lr": old["lr"], "warmup": old["warmup"]}]
    fixed = ("iters", "lr", "warmup")
    if {k: v for k, v in old.items() if k not in fixed} != {k: v for k, v in asdict(cfg).items() if k not in fixed}:
        raise UserError(f"{state_path} was written with another configuration {old}; "
                        "Possible solutions: pass the same options, or delete that folder to start over.")
    last = phases[-1]
    if cfg.iters == last["end"] and cfg.lr == last["lr"]:
        return phases
    if extend and st["iter"] == last["end"] and cfg.iters > last["end"]:
        return phases + [{"start": last["end"], "end": cfg.iters, "lr": cfg.lr, "warmup": 0}]
    raise UserError(f"{state_path} holds a run to {last['end']} iterations at lr {last['lr']} "
                    f"(now at {st['iter']}); asked for {cfg.iters} at lr {cfg.lr}. Possible solutions: "
                    "the same options to resume, or --extend with more --iters once that run has finished.")


def train_fp(out_dir: str | Path, cfg: TrainConfig = TrainConfig(), device: str = "auto",
             unet_overrides: dict | None = None, progress: bool = True,
             stop_after: int | None = None, extend: bool = False) -> dict | None:
    """Train (or resume) and save a diffusers folder with the EMA weights at `out_dir`.

    stop_after: run at most this many iterations now, checkpoint and return None (train in slices).
    extend: continue a finished run to cfg.iters with a new cosine phase at cfg.lr.
    """
    out_dir = check_output_dir(out_dir, "train-fp", legacy="train_info.json")
    dev = pick_device(device)
    ensure_writable_dir(out_dir.parent)
    state_dir = ensure_writable_dir(out_dir.with_name(out_dir.name + ".train"))
    state_path = state_dir / "state.pt"
    torch.manual_seed(cfg.seed)

    model = default_unet(**(unet_overrides or {})).to(dev)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    sched = default_scheduler()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    data = torch.from_numpy(mnist32()[0]).to(dev)
    gen = torch.Generator().manual_seed(cfg.seed)
    alphas_bar = sched.alphas_cumprod.to(dev)
    start, seconds = 0, 0.0
    st = torch.load(state_path, map_location=dev, weights_only=False) if state_path.exists() else None
    phases = _phases(st, cfg, extend, state_path)
    if st is not None:
        if st.get("unet_overrides") != (unet_overrides or {}):
            raise UserError(f"{state_path} was written for another UNet configuration; "
                            "Possible solutions: delete that folder to start over.")
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        start, seconds = st["iter"], st["seconds"]

    def save_state(it: int):
        atomic_torch_save({"model": model.state_dict(), "ema": ema.state_dict(),
                           "opt": opt.state_dict(), "gen": gen.get_state(), "iter": it,
                           "seconds": seconds, "config": asdict(cfg), "phases": phases,
                           "unet_overrides": unet_overrides or {}}, state_path)

    model.train()
    bar = tqdm(range(start, cfg.iters), initial=start, total=cfg.iters, desc="train-fp",
               disable=not progress)
    t_last = time.perf_counter()
    loss_avg = None
    for it in bar:
        idx = torch.randint(0, data.shape[0], (cfg.batch,), generator=gen)
        x0 = data[idx.to(dev)]
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch,), generator=gen).to(dev)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        ab = alphas_bar[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = _lr_at(phases, it)
        loss = torch.nn.functional.mse_loss(model(xt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema_decay, (1 + it) / (10 + it))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        bar.set_postfix(loss=f"{loss_avg:.4f}")
        now = time.perf_counter()
        seconds += now - t_last
        t_last = now
        if (it + 1) % cfg.ckpt_every == 0 or it + 1 == cfg.iters:
            save_state(it + 1)
        if stop_after is not None and it + 1 - start >= stop_after and it + 1 < cfg.iters:
            save_state(it + 1)
            bar.close()
            return None

    info = {"iters": cfg.iters, "train_seconds": round(seconds, 1), "train_device": describe(dev),
            "config": asdict(cfg), "phases": phases, "final_loss_ema": loss_avg}
    staging = staging_dir(out_dir)
    ema.to("cpu").save_pretrained(staging)
    sched.save_pretrained(staging)
    write_json(staging / "train_info.json", info)
    replace_dir(staging, out_dir, "train-fp")
    return info


def describe(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_name()} CPU, {torch.get_num_threads()} threads"
