"""QAT settings (checked on construction) and the optimiser's parameter groups."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from mpqdm.errors import UserError

from ..quant.swap import quant_layers


@dataclass(frozen=True)
class QATConfig:
    iterations: int = 100          # one iteration = one DDIM trajectory of `batch` samples
    batch: int = 8                 # over all processes
    window: int = 2                # TRD window; the optimiser steps once per window
    trd_weight: float = 100.0      # 0 = output distillation only
    lora_rank: int = 0             # 0 = full QAT of the weights
    weight_lr_scale: float = 1e-2  # weight (or LoRA) lr = scale * the layer's mean weight step
    wq_lr: float = 1e-6            # weight steps and zero points
    aq_lr: float = 5e-4            # activation step / zero lists
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
    step (EfficientDM's scale-aware rate), then weight Δ/z, then activation Δ/z lists."""
    for p in qunet.parameters():
        p.requires_grad_(False)
    groups, wq, aq = [], [], []
    for layer in quant_layers(qunet).values():
        lr = float(layer.wq.step.detach().abs().mean()) * cfg.weight_lr_scale
        params = list(layer.lora.parameters()) if layer.lora is not None else [layer.fp.weight]
        groups.append({"params": params, "lr": lr, "weight_decay": 0.0})
        wq += [layer.wq.step, layer.wq.zero]
        aq += [layer.aq.step, layer.aq.zero]
    groups += [{"params": wq, "lr": cfg.wq_lr, "weight_decay": 0.0},
               {"params": aq, "lr": cfg.aq_lr, "weight_decay": 0.0}]
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    return groups
