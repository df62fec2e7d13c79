"""Tiny models for tests and the bad-input benchmark: a random 1-channel 32x32 UNet2DModel with
every block kind the backend lowers, and its PTQ export (a few calibrated steps)."""

from __future__ import annotations

from pathlib import Path

TINY_UNET = dict(
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
    attention_head_dim=8,
)


def tiny_unet(path: Path, **overrides) -> Path:
    """The tiny UNet (seed 0) saved as a diffusers folder with its scheduler."""
    import torch

    from mpqdm.frontend.fp_model import default_scheduler, default_unet

    torch.manual_seed(0)
    default_unet(**{**TINY_UNET, **overrides}).save_pretrained(path)
    default_scheduler().save_pretrained(path)
    return Path(path)


def tiny_export(model: Path, out: Path, plan: str = "omq", wbits: int = 2, abits: int = 4) -> Path:
    """PTQ export of a tiny model with groups of 2 channels (4 trajectories of 3 calibrated steps)."""
    from mpqdm.frontend.quant.calibrate import CalibConfig
    from mpqdm.frontend.quant.ptq import PTQConfig, quantize

    quantize(model, out, PTQConfig(plan=plan, wbits=wbits, abits=abits, group=2,
                                   calib=CalibConfig(samples=4, steps=3, batch=4, keep_every=1)),
             device="cpu", progress=False)
    return Path(out)


def host_source() -> dict:
    """The source fields of a latency entry timed on this machine (core/latency.py)."""
    from mpqdm.boards.registry import load_board

    host = load_board("host")
    return {"key": "local", "cpu": host.cpu, "features": list(host.cpu_features), "emulated": False}


def hand_table(entries: list[dict], models: dict | None = None) -> dict:
    """A latency table document of hand-written entries (their source: this machine)."""
    from mpqdm.core.latency import FORMAT, VERSION

    src = host_source()
    rows = [{**src, "kernel": "", **e} for e in entries]
    return {"format": FORMAT, "version": VERSION, "board": "host", "entries": rows, "models": models or {}}
