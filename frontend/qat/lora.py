"""QALoRA-style adapters: W + B A inside the fake-quant layer, merged into W before export."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..quant.swap import quant_layers


class LoRA(nn.Module):
    def __init__(self, weight: torch.Tensor, rank: int):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.shape = tuple(weight.shape)
        fan_in = weight[0].numel()
        self.a = nn.Parameter(torch.empty(rank, fan_in, device=weight.device))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.b = nn.Parameter(torch.zeros(weight.shape[0], rank, device=weight.device))

    def delta(self) -> torch.Tensor:
        return (self.b @ self.a).view(self.shape)


def add_lora(qunet: nn.Module, rank: int) -> None:
    for layer in quant_layers(qunet).values():
        layer.lora = LoRA(layer.fp.weight.detach(), rank)


@torch.no_grad()
def merge_lora(qunet: nn.Module) -> None:
    for layer in quant_layers(qunet).values():
        if layer.lora is not None:
            layer.fp.weight += layer.lora.delta()
            layer.lora = None
