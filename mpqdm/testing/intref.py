"""The integer reference forward, computed from the export alone: the oracle for the backend.

Each quantized layer: input codes q_x = clamp(round((x / s) / d_a[i]) + z_a[i], 0, 2^a - 1);
int64 accumulation acc[c] = sum (q_x - z_a) * (q_w[c] - z_w[c]); y[c] = d_a[i] * d_w[c] * acc[c] + b[c],
computed in plan order and scattered back to the original channel order. No fake-quant involved.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mpqdm.frontend.quant.export import load_export
from mpqdm.frontend.quant.quantizer import StepIndex
from mpqdm.frontend.quant.swap import quant_layers, set_module


class IntRefLayer(nn.Module):
    def __init__(self, name: str, meta: dict, t: dict, order, step_index: StepIndex):
        super().__init__()
        self.name, self.meta, self.step_index = name, meta, step_index
        self.qmax = 2 ** meta["abits"] - 1
        self.order = torch.as_tensor(order, dtype=torch.int64)
        self.wc = t[f"{name}.wcodes"].to(torch.int64) - t[f"{name}.wzero"].to(torch.int64).view(
            -1, *([1] * (t[f"{name}.wcodes"].dim() - 1)))
        self.wstep = t[f"{name}.wstep"].double()
        self.bias = t.get(f"{name}.bias")
        self.astep, self.azero = t[f"{name}.astep"], t[f"{name}.azero"].to(torch.int64)
        self.smooth = t[f"{name}.smooth"]
        self.last_codes = None

    def input_codes(self, x: torch.Tensor) -> torch.Tensor:
        i = self.step_index.value
        s = self.smooth.view(1, -1, 1, 1) if self.meta["kind"] == "conv2d" else self.smooth
        xs = x / s
        return torch.clamp(torch.round(xs / self.astep[i]) + self.azero[i], 0, self.qmax).to(torch.int64)

    def accumulate(self, qx: torch.Tensor) -> torch.Tensor:
        """int64 accumulators [.., c_out (plan order), ..] from input codes."""
        xc = qx - self.azero[self.step_index.value]
        c_out = self.wc.shape[0]
        if self.meta["kind"] == "linear":
            return torch.matmul(xc, self.wc.t())
        kh, kw = self.meta["kernel"]
        n, _, h, w = xc.shape
        cols = F.unfold(xc.double(), (kh, kw), padding=self.meta["padding"], stride=self.meta["stride"])
        acc = torch.matmul(self.wc.reshape(c_out, -1), cols.to(torch.int64))       # [n, c_out, L]
        (ph, pw), (sh, sw) = self.meta["padding"], self.meta["stride"]
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        return acc.view(n, c_out, ho, wo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qx = self.input_codes(x)
        self.last_codes = qx
        acc = self.accumulate(qx)
        if acc.abs().max() >= 2 ** 31:
            raise OverflowError(f"{self.name}: accumulator exceeds int32")
        scale = self.astep[self.step_index.value].double() * self.wstep
        conv = self.meta["kind"] == "conv2d"
        y = acc.double() * (scale.view(1, -1, 1, 1) if conv else scale)
        if self.bias is not None:
            y = y + (self.bias.double().view(1, -1, 1, 1) if conv else self.bias.double())
        out = torch.empty_like(y)
        out.index_copy_(1 if conv else y.dim() - 1, self.order, y)
        return out.float()


def integer_reference(export_dir):
    """-> (UNet running the integer reference, StepIndex to set the sampling step)."""
    qunet, plan, meta, tensors, _ = load_export(export_dir)
    unet = copy.deepcopy(qunet)
    step_index = StepIndex()
    for name in quant_layers(unet):
        set_module(unet, name, IntRefLayer(name, meta["layers"][name], tensors, plan.layers[name].order, step_index))
    unet.mpq_step_index = step_index
    return unet.eval(), qunet.eval()
