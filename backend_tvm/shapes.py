"""The kernel shape of every Conv2d / Linear of a UNet at batch 1 (one forward pass with hooks)."""

from __future__ import annotations

import torch
from torch import nn

from frontend.quant.swap import quant_targets
from mpqdm.errors import UserError

from .kernels.qconv import ConvSpec


def check_supported(name: str, mod: nn.Module) -> None:
    """The conv geometry our kernels implement; anything else is named."""
    if not isinstance(mod, nn.Conv2d):
        return
    bad = {"groups": mod.groups != 1, "dilation": tuple(mod.dilation) != (1, 1),
           "stride": mod.stride[0] != mod.stride[1], "padding": mod.padding[0] != mod.padding[1]
           or isinstance(mod.padding, str), "padding_mode": mod.padding_mode != "zeros",
           "kernel_size": mod.kernel_size[0] != mod.kernel_size[1]}
    for attr, is_bad in bad.items():
        if is_bad:
            raise UserError(f"layer {name!r}: Conv2d with {attr}={getattr(mod, attr)!r} is not supported by the "
                            "backend kernels (square kernels, equal strides and paddings, zero padding, "
                            "dilation 1, groups 1). Possible solutions: keep this layer in floating point")


def layer_specs(unet: nn.Module, groups_of=None, abits: int = 8) -> dict[str, ConvSpec]:
    """name -> ConvSpec (a Linear is the 1x1 conv on [rows, 1, 1, c_in]); `groups_of(name, c_out)`
    gives the groups, one 8-bit group by default."""
    specs, hooks = {}, []
    groups_of = groups_of or (lambda name, c_out: ((c_out, 8),))

    def hook(name, mod):
        def fn(_m, args):
            x = args[0]
            if isinstance(mod, nn.Conv2d):
                _, c, h, w = x.shape
                specs[name] = ConvSpec(1, h, w, c, mod.out_channels, *mod.kernel_size, mod.stride[0],
                                       mod.padding[0], groups_of(name, mod.out_channels), abits)
            else:
                rows = x[:1].numel() // x.shape[-1]
                specs[name] = ConvSpec(rows, 1, 1, x.shape[-1], mod.out_features,
                                       groups=groups_of(name, mod.out_features), abits=abits)
        return fn

    for name, mod in quant_targets(unet).items():
        check_supported(name, mod)
        hooks.append(mod.register_forward_pre_hook(hook(name, mod)))
    c = unet.config
    size = c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0]
    try:
        with torch.no_grad():
            unet(torch.zeros(1, c.in_channels, size, size), torch.tensor([10]))
    finally:
        for h in hooks:
            h.remove()
    return specs


def shape_key(s: ConvSpec) -> str:
    """The shape part of a latency-table key: batch-1 geometry, no bits."""
    return f"n{s.n}_{s.h}x{s.w}x{s.c_in}-{s.c_out}_k{s.kh}x{s.kw}_s{s.stride}_p{s.pad}"
