"""What the backend can lower, checked where a model first enters the toolchain (statistics, PTQ)
as well as at lowering, so that a model is refused before calibration is spent on it."""

from __future__ import annotations

from .errors import UserError


def check_conv(name: str, conv) -> None:
    """The conv geometry our kernels implement (a torch Conv2d, read by its attributes); anything
    else is named."""
    bad = {"groups": conv.groups != 1, "dilation": tuple(conv.dilation) != (1, 1),
           "stride": conv.stride[0] != conv.stride[1],
           "padding": isinstance(conv.padding, str) or conv.padding[0] != conv.padding[1],
           "padding_mode": conv.padding_mode != "zeros", "kernel_size": conv.kernel_size[0] != conv.kernel_size[1]}
    for attr, is_bad in bad.items():
        if is_bad:
            raise UserError(f"layer {name!r}: Conv2d with {attr}={getattr(conv, attr)!r} is not supported by the "
                            "backend kernels (square kernels, equal strides and paddings, zero padding, "
                            "dilation 1, groups 1). Possible solutions: keep this layer in floating point")


DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D")
MID_BLOCK = "UNetMidBlock2D"
# config key -> (what the lowering implements, as a value or a test)
_CONFIG = {
    "act_fn": "silu", "time_embedding_type": "positional", "class_embed_type": None, "num_class_embeds": None,
    "center_input_sample": False, "resnet_time_scale_shift": "default", "downsample_type": "conv",
    "upsample_type": "conv", "mid_block_type": MID_BLOCK, "mid_block_scale_factor": 1,
}


def unsupported(what: str) -> UserError:
    return UserError(f"the backend does not lower {what}. Possible solutions: use a UNet2DModel built from "
                     f"the blocks {', '.join(DOWN_BLOCKS + (MID_BLOCK,) + UP_BLOCKS)} with SiLU, positional "
                     "time embedding and output scale factors of 1")


def check_unet_config(config) -> None:
    """A diffusers UNet2DModel config (its config.json as a mapping) that the backend can lower; what
    only the modules show (the convs' geometry: check_conv) the lowering checks as it walks them."""
    cfg = dict(config)
    name = cfg.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise unsupported(f"a {name} (only UNet2DModel)")
    for key, want in _CONFIG.items():
        if key in cfg and cfg[key] != want:
            raise unsupported(f"UNet2DModel with {key}={cfg[key]!r} (needs {want!r})")
    for key, allowed in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        bad = [b for b in cfg.get(key, ()) if b not in allowed]
        if bad:
            raise unsupported(f"block type {bad[0]!r} in {key}")
    if cfg.get("norm_num_groups", 32) is None:
        raise unsupported("UNet2DModel without conv_norm_out (norm_num_groups=None)")
    size = cfg.get("sample_size", 32)
    if not isinstance(size, int) and (len(size) != 2 or size[0] != size[1]):
        raise unsupported(f"a non-square sample_size {size!r}")
