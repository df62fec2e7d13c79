"""Loading a user's diffusers UNet folder, with clear errors for what we cannot use."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import DDPMScheduler, UNet2DModel

from mpqdm.core.errors import UserError

from .fp_model import default_scheduler


def resolve_unet_dir(path: str | Path) -> Path:
    """The folder holding the UNet's config.json: the folder itself or its `unet/` subfolder."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model folder {str(path)!r} does not exist. "
                        "Possible solutions: check the path; the default model is models/mnist-default")
    if not path.is_dir():
        raise UserError(f"{str(path)!r} is a file; a model is a diffusers folder with config.json")
    for cand in (path, path / "unet"):
        cfg = cand / "config.json"
        if cfg.is_file():
            try:
                name = json.loads(cfg.read_text()).get("_class_name")
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise UserError(f"{str(cfg)!r} is not valid JSON") from None
            if name != "UNet2DModel":
                raise UserError(f"{str(cfg)!r} describes a {name!r}, not a UNet2DModel. "
                                "Possible solutions: point to a diffusers UNet2DModel folder")
            return cand
    raise UserError(f"{str(path)!r} is not a diffusers model folder (no config.json in it or in unet/). "
                    "Possible solutions: save the model with UNet2DModel.save_pretrained(folder)")


def load_unet(path: str | Path) -> UNet2DModel:
    d = resolve_unet_dir(path)
    try:
        return UNet2DModel.from_pretrained(d, low_cpu_mem_usage=False).eval()
    except Exception as exc:  # noqa: BLE001 (diffusers, json and safetensors raise many types)
        raise UserError(f"could not load the UNet from {str(d)!r} ({type(exc).__name__}: {exc}). Possible "
                        "solutions: give a diffusers UNet2DModel folder (config.json and its weights)") from None


def load_scheduler(path: str | Path) -> DDPMScheduler:
    """The training scheduler saved beside the model (or in scheduler/); the default one otherwise."""
    path = Path(path)
    for cand in (path, path / "scheduler"):
        if (cand / "scheduler_config.json").is_file():
            return DDPMScheduler.from_pretrained(cand)
    return default_scheduler()


def check_mnist_shape(unet: UNet2DModel, path) -> None:
    c = unet.config
    size = c.sample_size if isinstance(c.sample_size, int) else tuple(c.sample_size)
    if c.in_channels != 1 or c.out_channels != 1 or size not in (32, (32, 32)):
        raise UserError(f"model {str(path)!r} is {c.in_channels}->{c.out_channels} channels at "
                        f"{size}; MNIST evaluation needs a 1-channel 32x32 UNet")


def model_fingerprint(path: str | Path) -> str:
    """sha256 over the UNet folder's config and weight files: names a model in plans and caches."""
    import hashlib

    d = resolve_unet_dir(path)
    h = hashlib.sha256()
    files = sorted(p for p in d.iterdir()
                   if p.is_file() and (p.name == "config.json" or p.suffix in (".safetensors", ".bin")))
    for p in files:
        h.update(p.name.encode())
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
