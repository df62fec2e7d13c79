"""Fake-quant wrappers for Conv2d and Linear: smoothing, activation and weight quantizers.

The wrapped FP module is kept (`.fp`), so the swap is reversible and its weight stays the
trainable parameter. Forward: Q_a(x / s) conv Q_w(W * s) + b, with s the per-input-channel
SmoothQuant factor (ones when smoothing is off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import ActQuantizer, StepIndex, WeightQuantizer


class QuantLayer(nn.Module):
    def __init__(self, fp: nn.Conv2d | nn.Linear, wbits: torch.Tensor, abits: int, n_steps: int,
                 step_index: StepIndex):
        super().__init__()
        if isinstance(fp, nn.Conv2d) and fp.groups != 1:
            raise NotImplementedError("grouped convolutions are not quantized")
        self.fp = fp
        c_in = fp.weight.shape[1]
        self.register_buffer("smooth", torch.ones(c_in))
        self.wq = WeightQuantizer(wbits)
        self.aq = ActQuantizer(abits, n_steps, step_index)
        self.lora: nn.Module | None = None   # QALoRA adapter (frontend.qat.lora), merged before export

    @property
    def is_conv(self) -> bool:
        return isinstance(self.fp, nn.Conv2d)

    def _in_shape(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, 1, 1) if self.is_conv else t

    def weight(self) -> torch.Tensor:
        """The FP weight, plus the LoRA adapter's update when one is attached."""
        return self.fp.weight if self.lora is None else self.fp.weight + self.lora.delta()

    def smoothed_weight(self) -> torch.Tensor:
        w = self.weight()
        return w * (self.smooth.view(1, -1, 1, 1) if self.is_conv else self.smooth.view(1, -1))

    def smoothed_input(self, x: torch.Tensor) -> torch.Tensor:
        return x / self._in_shape(self.smooth, x)

    def op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        fp = self.fp
        if self.is_conv:
            return F.conv2d(x, w, fp.bias, fp.stride, fp.padding, fp.dilation, fp.groups)
        return F.linear(x, w, fp.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(self.aq(self.smoothed_input(x)), self.wq(self.smoothed_weight()))

    def extra_repr(self) -> str:
        bits = sorted(set(self.wq.bits.tolist()))
        return f"wbits={bits}, abits={self.aq.bits}, steps={self.aq.n_steps}"
