"""FLOPs of one UNet call (batch 1), counted by PyTorch's FlopCounterMode (2 FLOPs per MAC)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def unet_flops(unet) -> int:
    c = unet.config
    size = c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0]
    x = torch.zeros(1, c.in_channels, size, size)
    with FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor([500]))
    return int(counter.get_total_flops())
