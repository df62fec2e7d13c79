"""QAT settings (checked on construction) and the optimiser's parameter groups."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mpqdm.core.errors import UserError

from ..quant.swap import quant_layers


@dataclass(frozen=True)
class QATConfig:
    iterations: int = 100          # one iteration = one DDIM trajectory of `batch` samples
    batch: int = 8                 # over all processes
    window: int = 2                # TRD window; the optimiser steps once per window
    trd_weight: float = 100.0      # 0 = output distillation only
    trd_block: int = -1            # which decoder block TRD taps (an index into up_blocks)
    lora_rank: int = 0             # 0 = full QAT of the weights
    weight_lr_scale: float = 4e-4  # weight (or LoRA) lr = scale * the layer's mean weight step (the
                                   # authors' mean step / 2500; 1e-2 moved 40% of W2 codes and hurt)
    wq_lr: float = 1e-6            # weight steps and zero points
    aq_lr_scale: float = 1e-3      # activation step/zero lr = scale * the layer's mean activation step
                                   # (an absolute 5e-4 drove small steps negative)
    seed: int = 0
    ckpt_every: int = 10

    def __post_init__(self):
        for name in ("iterations", "batch", "window", "ckpt_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.trd_weight < 0 or self.lora_rank < 0:
            raise UserError("--trd-weight and --lora-rank must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def trainable(qunet: nn.Module, cfg: QATConfig) -> list[dict]:
    """AdamW groups: per layer the weight (or its LoRA) at a lr scaled by the layer's mean weight
    step (EfficientDM's scale-aware rate) and its activation Δ/z lists scaled by their mean step;
    then all weight Δ/z."""
    for p in qunet.parameters():
        p.requires_grad_(False)
    groups, wq = [], []
    for layer in quant_layers(qunet).values():
        lr = float(layer.wq.step.detach().abs().mean()) * cfg.weight_lr_scale
        params = list(layer.lora.parameters()) if layer.lora is not None else [layer.fp.weight]
        groups.append({"params": params, "lr": lr, "weight_decay": 0.0})
        wq += [layer.wq.step, layer.wq.zero]
        groups.append({"params": [layer.aq.step, layer.aq.zero], "weight_decay": 0.0,
                       "lr": float(layer.aq.step.detach().abs().mean()) * cfg.aq_lr_scale})
    groups.append({"params": wq, "lr": cfg.wq_lr, "weight_decay": 0.0})
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    return groups


@torch.no_grad()
def keep_steps_positive(qunet: nn.Module) -> None:
    """Projection after each optimiser step: a step that crossed zero would flip its codes' sign."""
    for layer in quant_layers(qunet).values():
        layer.wq.step.clamp_(min=1e-8)
        layer.aq.step.clamp_(min=1e-8)
