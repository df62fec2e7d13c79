"""The quantized layer's scheme (format owner): what one packed mixed-precision layer computes, how
its weights are laid out and how its kernel is called. Lowering, profiling, the allocator's shape
keys and the benchmarks all take these from here; the kernels (backend_tvm/kernels/qconv*.py)
generate their TensorIR from a ConvSpec.

A layer is a conv2d on NHWC activation codes; a dense layer is the 1x1 conv on [rows, 1, 1, c_in].
Its output channels, in plan order, form groups of (channels, weight bits), each bit width 1..8
(core/bits.py); its input codes have `abits` bits, 4 or 8. The weights are
packed per group (core/packing.py). The kernel's arguments, in order (QConvArgs):

    x      uint8   [n, h, w, c_in]   activation codes; padding reads the zero code az
    wp     uint32  [words]           the packed weights, groups in plan order, then guard words
    perm   int32   [c_out]           plan position of every output channel (original order); the
                                     identity for a layer of one group (weight_constants), whose
                                     kernels on CPUs then need not read it
    sw     float32 [c_out]           weight step per output channel (original order)
    zw     int32   [c_out]           weight zero point
    colsum int32   [c_out]           sum of the channel's weight codes
    bias   float32 [c_out]
    act    float32 [1]               the input step sa of the sampling step
    az     int32   [1]               the input zero code
    y      float32 [n, ho, wo, c_out] the output (last: the kernels' convention)

    y[p, c] = (acc - az colsum[c] - zw[c] rowsum[p] + K zw[c] az) * (sa sw[c]) + bias[c]
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .bits import ABITS, check_bits
from .errors import UserError
from .packing import LANES, group_words, pack_layer


def conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output rows (or columns) of a conv: the one formula."""
    return (size + 2 * pad - kernel) // stride + 1


@dataclass(frozen=True)
class ConvGeometry:
    """X [n, h, w, c_in] -> Y [n, ho, wo, c_out] with a kh x kw kernel, one stride and zero padding."""

    n: int
    h: int
    w: int
    c_in: int
    c_out: int
    kh: int = 1
    kw: int = 1
    stride: int = 1
    pad: int = 0

    def __post_init__(self):
        for f in ("n", "h", "w", "c_in", "c_out", "kh", "kw", "stride", "pad"):
            v, least = getattr(self, f), 0 if f == "pad" else 1
            if not isinstance(v, int) or isinstance(v, bool):
                raise UserError(f"conv {f} must be an int, got {v!r}")
            if v < least:
                raise UserError(f"conv {f} must be >= {least}, got {v}")
        if self.ho < 1 or self.wo < 1:
            raise UserError(f"conv output is empty: input {self.h}x{self.w}, kernel {self.kh}x{self.kw}, "
                            f"pad {self.pad}")

    @property
    def ho(self) -> int:
        return conv_out(self.h, self.kh, self.stride, self.pad)

    @property
    def wo(self) -> int:
        return conv_out(self.w, self.kw, self.stride, self.pad)


@dataclass(frozen=True)
class ConvSpec(ConvGeometry):
    """A quantized layer: its geometry, its groups of (channels, weight bits) in plan order, its
    activation bits."""

    groups: tuple[tuple[int, int], ...] = ()      # (channels, bits) in plan order
    abits: int = 8
    kernels: tuple[str, ...] = ()     # per group, the kernel path measured fastest ("": the board's rule)

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple((int(n), int(b)) for n, b in self.groups))
        object.__setattr__(self, "kernels", tuple(self.kernels))
        super().__post_init__()
        check_bits(self.abits, "activation bits", ABITS)
        if sum(n for n, _ in self.groups) != self.c_out:
            raise UserError(f"groups cover {sum(n for n, _ in self.groups)} channels, the layer has {self.c_out}")
        check_bits([b for _, b in self.groups], "weight bits")
        named = all(isinstance(k, str) for k in self.kernels)
        if self.kernels and (len(self.kernels) != len(self.groups) or not named):
            raise UserError(f"kernels {self.kernels!r} must name one kernel path (a string) per group")

    def kernel(self, g: int) -> str:
        """Group g's kernel path ("": the board's rule)."""
        return self.kernels[g] if self.kernels else ""

    @property
    def k(self) -> int:
        return self.kh * self.kw * self.c_in

    @property
    def words(self) -> int:
        return sum(group_words(self.k, n, b) for n, b in self.groups) + LANES

    @property
    def dense(self) -> bool:
        return self.h == 1 and self.w == 1

    def with_width(self, channels: int, wbits: int, abits: int, kernel: str = "") -> ConvSpec:
        """The same geometry with `channels` outputs, all at one width, on one kernel path (what
        profiling times)."""
        return ConvSpec(self.n, self.h, self.w, self.c_in, channels, self.kh, self.kw, self.stride, self.pad,
                        ((channels, wbits),), abits, (kernel,) if kernel else ())

    def shape_key(self) -> str:
        """The shape part of a latency-table key: batch-1 geometry, no bits."""
        return f"n{self.n}_{self.h}x{self.w}x{self.c_in}-{self.c_out}_k{self.kh}x{self.kw}_s{self.stride}_p{self.pad}"

    def arg_types(self) -> QConvArgs:
        """(shape, dtype) of every kernel argument."""
        c = (self.c_out,)
        return QConvArgs(x=((self.n, self.h, self.w, self.c_in), "uint8"), wp=((self.words,), "uint32"),
                         perm=(c, "int32"), sw=(c, "float32"), zw=(c, "int32"), colsum=(c, "int32"),
                         bias=(c, "float32"), act=((1,), "float32"), az=((1,), "int32"),
                         y=((self.n, self.ho, self.wo, self.c_out), "float32"))


@dataclass(frozen=True)
class QConvArgs:
    """The kernel's arguments by name (tensor names in a plan, arrays in a benchmark, placeholders in
    a kernel); `ordered()` is the calling convention."""

    x: Any
    wp: Any
    perm: Any
    sw: Any
    zw: Any
    colsum: Any
    bias: Any
    act: Any
    az: Any
    y: Any

    def ordered(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self))


def weight_constants(spec: ConvSpec, rows: np.ndarray, order, wstep, wzero) -> dict[str, np.ndarray]:
    """The kernel's weight arguments wp, perm, sw, zw, colsum from codes `rows` [c_out, K] (K in the
    kernels' (kh, kw, c_in) order) and per-channel steps and zero points, all three in plan order;
    `order[p]` is the original channel at plan position p."""
    order = np.asarray(order, dtype=np.int64)
    if sorted(order.tolist()) != list(range(spec.c_out)):
        raise UserError(f"channel order is not a permutation of 0..{spec.c_out - 1}")

    def original(a) -> np.ndarray:
        a = np.asarray(a)
        out = np.empty_like(a)
        out[order] = a
        return out

    if len(spec.groups) == 1:       # one group: any plan order packs alike, so the channels' own
        rows, wstep, wzero = original(rows), original(wstep), original(wzero)
        order = np.arange(spec.c_out)

    perm = np.empty(spec.c_out, np.int32)
    perm[order] = np.arange(spec.c_out, dtype=np.int32)
    return {"wp": pack_layer(rows, spec.groups).words, "perm": perm,
            "sw": original(np.asarray(wstep, np.float32)), "zw": original(np.asarray(wzero, np.int32)),
            "colsum": original(np.asarray(rows, np.int64).sum(1).astype(np.int32))}


def random_args(spec: ConvSpec, rng: np.random.Generator) -> QConvArgs:
    """Arguments on random codes for a one-width spec (timing and instruction counts): identity
    channel order, unit steps, zero points and bias 0."""
    (c, b), = spec.groups
    rows = rng.integers(0, 1 << b, size=(c, spec.k), dtype=np.uint8)
    wc = weight_constants(spec, rows, np.arange(c), np.ones(c), np.zeros(c))
    return QConvArgs(x=rng.integers(0, 1 << spec.abits, size=(spec.n, spec.h, spec.w, spec.c_in), dtype=np.uint8),
                     **wc, bias=np.zeros(c, np.float32), act=np.ones(1, np.float32), az=np.zeros(1, np.int32),
                     y=np.zeros((spec.n, spec.ho, spec.wo, c), np.float32))
