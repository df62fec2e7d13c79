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
