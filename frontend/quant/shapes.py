"""The kernel shape of every Conv2d / Linear of a UNet at batch 1 (one forward pass with hooks)."""

from __future__ import annotations

import torch
from torch import nn

from mpqdm.core.scheme import ConvSpec
from mpqdm.core.support import check_conv, check_unet_config

from .swap import quant_targets


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
        if isinstance(mod, nn.Conv2d):
            check_conv(name, mod)
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


def check_lowerable(unet: nn.Module) -> None:
    """What the backend will refuse, refused before any calibration is spent: the model's
    configuration and every quantizable conv's geometry (core/support.py, which lowering uses too)."""
    check_unet_config(unet.config)
    for name, mod in quant_targets(unet).items():
        if isinstance(mod, nn.Conv2d):
            check_conv(name, mod)
