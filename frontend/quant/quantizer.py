"""Uniform asymmetric quantizers with learnable step and zero point (LSQ-style STE rounding).

Weights: per output channel, any width 1..8 per channel. Activations: per tensor, one (step, zero)
pair per sampling step (TALSQ), selected by the step index the sampler sets.
"""

from __future__ import annotations

import torch
from torch import nn

from mpqdm.core.bits import check_bits
from mpqdm.core.errors import UserError


def _sum_to(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`t` summed down to `like`'s (broadcast) shape."""
    return t.sum() if like.dim() == 0 else t.sum_to_size(like.shape)


class FakeQuant(torch.autograd.Function):
    """(clamp(round(x / s) + round(z), 0, qmax) - round(z)) * s with straight-through rounding (LSQ),
    its gradients written out. Inside the clamp range (bounds included) d/dx = 1, d/ds = round(x/s) -
    x/s, d/dz = 0; outside d/dx = 0, d/ds = clamped code - round(z), d/dz = -s. One saved tensor
    (x) and a handful of passes instead of autograd's graph of a dozen elementwise ops."""

    @staticmethod
    def forward(ctx, x, s, z, qmax):
        qmax = torch.as_tensor(qmax, dtype=x.dtype, device=x.device)
        zr = torch.round(z)
        ctx.save_for_backward(x, s, z, qmax)
        return (torch.minimum(torch.clamp(torch.round(x / s) + zr, min=0.0), qmax) - zr) * s

    @staticmethod
    def backward(ctx, g):
        x, s, z, qmax = ctx.saved_tensors
        zr, v = torch.round(z), x / s
        r = torch.round(v)
        q = r + zr
        inside = (q >= 0) & (q <= qmax)
        clamped = torch.minimum(torch.clamp(q, min=0.0), qmax)
        gx = torch.where(inside, g, torch.zeros_like(g))
        gs = _sum_to(g * torch.where(inside, r - v, clamped - zr), s)
        gz = _sum_to(torch.where(inside, torch.zeros_like(g), -g * s), z)
        return gx, gs, gz, None


def _qmax(bits: torch.Tensor) -> torch.Tensor:
    return (2.0 ** bits.to(torch.float32)) - 1


class WeightQuantizer(nn.Module):
    """Per-output-channel asymmetric fake quantizer; `bits` holds one width per output channel."""

    def __init__(self, bits: torch.Tensor):
        super().__init__()
        bits = torch.as_tensor(bits, dtype=torch.int64)
        check_bits(bits.tolist(), "weight quantizer")
        self.register_buffer("bits", bits.clone())
        self.register_buffer("qmax", _qmax(bits))
        self.step = nn.Parameter(torch.ones(len(bits)))
        self.zero = nn.Parameter(torch.zeros(len(bits)))

    def _view(self, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return t.view(-1, *([1] * (w.dim() - 1)))

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """Integer codes in [0, 2^b - 1], int64, same shape as w."""
        with torch.no_grad():
            s, z, qm = (self._view(t, w) for t in (self.step, self.zero.round(), self.qmax))
            return torch.clamp(torch.round(w / s) + z, torch.zeros_like(qm), qm).to(torch.int64)

    def zero_points(self) -> torch.Tensor:
        return self.zero.detach().round().to(torch.int64)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s, z, qm = (self._view(t, w) for t in (self.step, self.zero, self.qmax))
        return FakeQuant.apply(w, s, z, qm)

    @torch.no_grad()
    def init_range(self, w: torch.Tensor, method: str = "mse", p: float = 2.4, candidates: int = 80) -> None:
        """minmax: the full range; mse: per channel the clip ratio in [0.2, 1] minimising the Lp error."""
        flat = w.reshape(w.shape[0], -1)
        lo, hi = flat.min(1).values.clamp(max=0), flat.max(1).values.clamp(min=0)
        if method == "minmax":
            self._set_range(lo, hi)
            return
        if method != "mse":
            raise UserError(f"unknown weight range method {method!r}. Possible solutions: minmax, mse")
        ratios = torch.linspace(0.2, 1.0, candidates, device=w.device)
        qm = self.qmax.view(1, -1, 1)
        errs = []
        for chunk in ratios.split(16):               # [R, C, K] at a time
            r = chunk.view(-1, 1, 1)
            step = ((hi - lo).view(1, -1, 1) * r / qm).clamp(min=1e-8)
            zero = torch.round(-lo.view(1, -1, 1) * r / step).clamp(torch.zeros_like(qm), qm)
            q = torch.clamp(torch.round(flat / step) + zero, torch.zeros_like(qm), qm)
            errs.append(((q - zero) * step - flat).abs().pow(p).sum(2))
        best = ratios[torch.cat(errs).argmin(0)]
        self._set_range(lo * best, hi * best)

    def _set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        step = ((hi - lo) / self.qmax).clamp(min=1e-8)
        self.step.copy_(step)
        self.zero.copy_(torch.round(-lo / step).clamp(torch.zeros_like(self.qmax), self.qmax))


class StepIndex:
    """The sampling step the activation quantizers use; shared by every layer of one model. `value` is
    an int, or a LongTensor with one step per sample (QAT's fast path runs a window's steps as one batch)."""

    def __init__(self):
        self.value: int | torch.Tensor = 0


class ActQuantizer(nn.Module):
    """Per-tensor asymmetric fake quantizer with one (step, zero) per sampling step."""

    def __init__(self, bits: int, n_steps: int, step_index: StepIndex):
        super().__init__()
        check_bits(bits, "activation quantizer")
        if n_steps < 1:
            raise UserError(f"activation quantizer needs at least one sampling step, got {n_steps}")
        self.bits = int(bits)
        self.qmax = float(2 ** bits - 1)
        self.step = nn.Parameter(torch.ones(n_steps))
        self.zero = nn.Parameter(torch.zeros(n_steps))
        self.step_index = step_index

    @property
    def n_steps(self) -> int:
        return self.step.numel()

    def _params(self, x: torch.Tensor | None = None):
        i = self.step_index.value
        if isinstance(i, torch.Tensor):     # per sample: [B] -> broadcast over x's other dims
            shape = (-1,) + (1,) * (x.dim() - 1)
            return self.step[i].view(shape), self.zero[i].view(shape)
        if not 0 <= i < self.n_steps:
            raise IndexError(f"sampling step {i} outside the {self.n_steps} calibrated steps")
        return self.step[i], self.zero[i]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, z = self._params(x)
        return FakeQuant.apply(x, s, z, self.qmax)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            s, z = self._params(x)
            return torch.clamp(torch.round(x / s) + z.round(), 0, self.qmax).to(torch.int64)

    @torch.no_grad()
    def set_range(self, i: int, lo: float, hi: float) -> None:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        step = max((hi - lo) / self.qmax, 1e-8)
        self.step[i] = step
        self.zero[i] = min(max(round(-lo / step), 0), self.qmax)
