"""Reversible module swap: every planned Conv2d / Linear of a UNet becomes a QuantLayer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mpqdm.core.bitplan import BitPlan, FloatLayer

from .layers import QuantLayer
from .quantizer import StepIndex

# Ops that are not Conv2d/Linear modules and always stay floating point in the fake-quant model.
FP_OPS = ("attention matmuls (QK^T, AV)", "softmax", "GroupNorm", "SiLU", "upsampling",
          "concatenation", "residual adds", "timestep sinusoidal embedding")


@dataclass(frozen=True)
class LayerPolicy:
    """Which layers keep 8 bits and which stay floating point, by substring of the layer name."""

    eight_bit: tuple[str, ...] = ("conv_in", "conv_out", "time_embedding.")
    floating: tuple[str, ...] = ("conv_shortcut", "downsamplers.")

    def kind(self, name: str) -> str:
        if any(p in name for p in self.floating):
            return "float"
        if any(p in name for p in self.eight_bit):
            return "w8a8"
        return "quant"


# named policies: the MPQ-DM authors' (default), and the shortcut and downsample convs at W8A8 as ONNX
# Runtime's int8 export has them (METHOD.md: quantizing more is a measured trade; benchmarks/shortcut_fd.py)
POLICIES = {"default": LayerPolicy(),
            "shortcuts-w8a8": LayerPolicy(eight_bit=(*LayerPolicy.eight_bit, "conv_shortcut", "downsamplers."),
                                          floating=())}


def quant_targets(unet: nn.Module) -> dict[str, nn.Module]:
    """Every Conv2d and Linear of the model (unwrapped), by qualified name."""
    out = {}
    for name, mod in unet.named_modules():
        if isinstance(mod, QuantLayer):
            out[name] = mod.fp
        elif isinstance(mod, (nn.Conv2d, nn.Linear)) and not name.endswith(".fp"):
            out[name] = mod
    return out


def layer_shapes(unet: nn.Module) -> dict[str, int]:
    return {n: m.weight.shape[0] for n, m in quant_targets(unet).items()}


def set_module(unet: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(unet.get_submodule(parent) if parent else unet, child, new)


def quantize_model(unet: nn.Module, plan: BitPlan, n_steps: int, model_sha256: str | None = None) -> nn.Module:
    """Swap in fake-quant layers as the plan says (in place); returns the model."""
    plan.validate_against(layer_shapes(unet), model_sha256)
    step_index = StepIndex()
    for name, fp in quant_targets(unet).items():
        lp = plan.layers[name]
        if isinstance(lp, FloatLayer):
            continue
        bits = torch.tensor(lp.bits_per_channel(), dtype=torch.int64)
        set_module(unet, name, QuantLayer(fp, bits, lp.abits, n_steps, step_index))
    unet.mpq_step_index = step_index
    return unet


def dequantize_model(unet: nn.Module) -> nn.Module:
    """Swap every QuantLayer back to its FP module (in place)."""
    for name, mod in list(unet.named_modules()):
        if isinstance(mod, QuantLayer):
            set_module(unet, name, mod.fp)
    if hasattr(unet, "mpq_step_index"):
        del unet.mpq_step_index
    return unet


def quant_layers(unet: nn.Module) -> dict[str, QuantLayer]:
    return {n: m for n, m in unet.named_modules() if isinstance(m, QuantLayer)}


def set_step(unet: nn.Module, i: int | torch.Tensor) -> None:
    """The sampling step of the next forward: one int, or a LongTensor of one step per sample."""
    unet.mpq_step_index.value = i.to(torch.int64) if isinstance(i, torch.Tensor) else int(i)
