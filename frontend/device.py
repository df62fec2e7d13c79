"""Device choice shared by the commands: CUDA when present, else CPU."""

from __future__ import annotations

import torch

from mpqdm.core.errors import UserError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}. Possible solutions: auto, cpu, cuda, cuda:0") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but CUDA is not available here. "
                        "Possible solutions: --device cpu") from None
    return dev
