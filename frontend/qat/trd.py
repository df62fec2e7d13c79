"""TRD: time-smoothed relation distillation (MPQ-DM).

Features of the last decoder block of both models, averaged over a window of consecutive sampling
steps, L2-normalised over channels; per sample the spatial similarity matrix S = F^T F (HW x HW);
loss = sum over rows of KL(softmax(S_fp) || softmax(S_q)), mean over the batch. The quantized side
keeps its graph (the authors' code detached it, so the term trained nothing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mpqdm.core.errors import UserError


class FeatureTap:
    """Keeps the latest output of one module (with its graph)."""

    def __init__(self, module: nn.Module):
        self.feature: torch.Tensor | None = None
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, _mod, _args, out) -> None:
        self.feature = out[0] if isinstance(out, tuple) else out

    def pop(self) -> torch.Tensor:
        if self.feature is None:
            raise RuntimeError("the tapped block did not run in this forward pass")
        f, self.feature = self.feature, None
        return f

    def close(self) -> None:
        self._handle.remove()


def last_decoder_block(unet: nn.Module, index: int = -1) -> nn.Module:
    """The decoder block TRD taps: the last one by default (MPQ-DM's choice)."""
    n = len(unet.up_blocks)
    if not -n <= index < n:
        raise UserError(f"--trd-block {index}: the model has {n} decoder blocks. Possible solutions: "
                        f"an index in {-n}..{n - 1}")
    return unet.up_blocks[index]


class _Gram(torch.autograd.Function):
    """f^T f with one matmul in the backward, f (g + g^T), instead of autograd's two."""

    @staticmethod
    def forward(ctx, f: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f)
        return f.transpose(1, 2) @ f

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        return f @ (g + g.transpose(1, 2))


def relation(feature: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, HW, HW] cosine similarities between spatial positions."""
    f = F.normalize(feature.float().flatten(2), dim=1)
    return _Gram.apply(f)


def window_mean(features: list[torch.Tensor]) -> torch.Tensor:
    """The time smoothing: the mean feature over the window's sampling steps."""
    return torch.stack(features).mean(0)


def trd_loss(fp_window: list[torch.Tensor], q_window: list[torch.Tensor]) -> torch.Tensor:
    """Per row KL(p || softmax(s_q)) = sum p (log p - s_q) + logsumexp(s_q), as sum p = 1: the same
    value as with log_softmax(s_q), without materialising it."""
    log_p = F.log_softmax(relation(window_mean(fp_window)), dim=-1)
    s_q = relation(window_mean(q_window))
    kl = (log_p.exp() * (log_p - s_q)).sum(-1) + torch.logsumexp(s_q, dim=-1)   # [B, HW], one KL per row
    return kl.sum(1).mean()
