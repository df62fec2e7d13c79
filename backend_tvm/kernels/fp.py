"""Floating-point kernels of the UNet (float32, NHWC activations): conv2d, dense, group norm (+SiLU),
SiLU, add, channel concat, nearest 2x upsampling and the sinusoidal timestep embedding.

Every op has a frozen spec (Python ints, validated), `<op>_func(spec)` returning the TE PrimFunc
(inputs..., output) and `schedule_<op>(spec, name)` returning an IRModule holding that function
under `name`, scheduled for CPUs: parallel over the outermost spatial loops, the innermost contiguous
loop vectorized. Attention lives in attention.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mpqdm.core.scheme import ConvGeometry

from ..tvm_compat import Schedule, te, tirx, tvm
from . import vmath

MAX_LANES = 16      # widest vector we ask for (LLVM splits it into the target's registers)
PARALLEL_MIN = 16384   # elements below which a pass runs on one thread (a launch costs more than it saves)


# -- validation -----------------------------------------------------------------------------------------

def check_ints(op: str, spec, fields: tuple[str, ...], minimum: int = 1) -> None:
    """ValueError naming the first field of `spec` that is not an int >= minimum."""
    for f in fields:
        v = getattr(spec, f)
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{op} {f} must be an int, got {v!r}")
        if v < minimum:
            raise ValueError(f"{op} {f} must be >= {minimum}, got {v}")


# -- schedule helpers -----------------------------------------------------------------------------------

def lanes(extent: int) -> int:
    """Vector width for a contiguous loop of `extent`: the whole loop when short, else the widest
    power-of-two divisor up to MAX_LANES (>= 4), else 1 (left scalar)."""
    if extent <= MAX_LANES:
        return extent
    for v in (16, 8, 4):
        if v <= MAX_LANES and extent % v == 0:
            return v
    return 1


def split_inner(sch: Schedule, loop, extent: int):
    """(outer, inner) with `inner` of lanes(extent) iterations; outer is None when not split."""
    v = lanes(extent)
    if v == extent:
        return None, loop
    if v == 1:
        return loop, None
    outer, inner = sch.split(loop, [None, v])
    return outer, inner


def vectorize(sch: Schedule, loop) -> None:
    if loop is not None and int(sch.get(loop).extent) > 1:
        sch.vectorize(loop)


def vectorize_inner(sch: Schedule, loop) -> None:
    """Vectorize `loop` (contiguous), split to lanes(extent) first when long."""
    _, inner = split_inner(sch, loop, int(sch.get(loop).extent))
    vectorize(sch, inner)


def module(func, name: str) -> tvm.IRModule:
    return tvm.IRModule({name: func.with_attr("global_symbol", name)})


def schedule_pointwise(sch: Schedule, block: str, name: str, n_par: int = 2) -> None:
    """A block over [..., C] written by pointwise code: parallel over its first `n_par` loops fused,
    the last (contiguous) loop vectorized."""
    b = sch.get_sblock(block, func_name=name)
    loops = sch.get_loops(b)
    vectorize_inner(sch, loops[-1])
    sch.parallel(sch.fuse(*loops[:n_par]) if n_par > 1 else loops[0])


def schedule_reduction_vec(sch: Schedule, acc: str, out: str, name: str, n_par: int) -> None:
    """`acc` = a reduction whose last spatial axis (extent C) is contiguous, `out` its pointwise
    consumer over the same axes. The channel loop of `out` is split into vectors, `acc` is computed per
    vector with the reduction loops moved outside the vector loop (vector accumulators), the first
    `n_par` loops of `out` run in parallel."""
    y = sch.get_sblock(out, func_name=name)
    loops = sch.get_loops(y)
    c_out, c_in = split_inner(sch, loops[-1], int(sch.get(loops[-1]).extent))
    at = c_out if c_out is not None else loops[-2]
    par = loops[:n_par]
    if c_out is not None and n_par == len(loops) - 1:
        par = [*par, c_out]          # e.g. dense: rows x channel blocks
    a = sch.get_sblock(acc, func_name=name)
    sch.compute_at(a, at, preserve_unit_loops=True)
    if c_in is not None:
        a_loops = sch.get_loops(a)                # [outer..., (c_out,) cv, reduction...]
        at_cv = len(loops) - (c_out is None)
        cv, red = a_loops[at_cv], a_loops[at_cv + 1:]
        sch.reorder(*red, cv)
        vectorize(sch, cv)
        vectorize(sch, c_in)
    # order matters in TVM 0.27: vectorize, then parallel, then decompose_reduction (the primitives
    # reject a subtree whose update block lost its init)
    sch.parallel(sch.fuse(*par) if len(par) > 1 else par[0])
    if c_in is not None:
        init = sch.decompose_reduction(a, red[0])
        vectorize(sch, sch.get_loops(init)[-1])


# -- conv2d ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Conv2dSpec(ConvGeometry):
    """X [n, h, w, c_in] * W + B [c_out] -> Y [n, ho, wo, c_out]; zero padding. W is blocked by the V
    output channels one vector accumulates (V = lanes(c_out)): [c_out / V, kh kw c_in, V]
    (conv2d_weight), so a channel block's weights are one contiguous stream."""

    @property
    def block(self) -> int:
        return lanes(self.c_out)

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        return (self.c_out // self.block, self.kh * self.kw * self.c_in, self.block)


def conv2d_weight(s: Conv2dSpec, w_oihw: np.ndarray) -> np.ndarray:
    """torch's conv weight [c_out, c_in, kh, kw] in the kernel's layout (Conv2dSpec.weight_shape)."""
    w = np.asarray(w_oihw, np.float32).transpose(2, 3, 1, 0).reshape(-1, s.c_out // s.block, s.block)
    return np.ascontiguousarray(w.transpose(1, 0, 2))


def conv2d_func(s: Conv2dSpec) -> tirx.PrimFunc:
    x = te.placeholder((s.n, s.h, s.w, s.c_in), "float32", name="X")
    wt = te.placeholder(s.weight_shape, "float32", name="W")
    v = s.block
    b = te.placeholder((s.c_out,), "float32", name="B")
    r, q, ci = te.reduce_axis((0, s.kh), "r"), te.reduce_axis((0, s.kw), "q"), te.reduce_axis((0, s.c_in), "ci")
    if s.pad:      # a padded copy: the reduction then reads without bounds tests
        p = s.pad
        xp = te.compute((s.n, s.h + 2 * p, s.w + 2 * p, s.c_in), lambda n, i, j, c: tirx.if_then_else(
            tirx.all(i >= p, i < s.h + p, j >= p, j < s.w + p), x[n, i - p, j - p, c], tirx.const(0.0, "float32")),
            name="Xp")
    else:
        xp = x
    acc = te.compute((s.n, s.ho, s.wo, s.c_out), lambda n, i, j, o: te.sum(
        xp[n, i * s.stride + r, j * s.stride + q, ci] * wt[o // v, (r * s.kw + q) * s.c_in + ci, o % v],
        axis=[r, q, ci]), name="acc")
    y = te.compute(acc.shape, lambda n, i, j, o: acc[n, i, j, o] + b[o], name="Y")
    return te.create_prim_func([x, wt, b, y])


LANE_CI = 4          # input channels a lane-indexed FMA tile takes from one vector load
CONV_PIXELS = (4, 2, 1)     # output pixels per register tile (a divisor of the row width)
WIDE_PIXELS = (8, 4, 2, 1)  # with 32 vector registers (AVX-512): 8 accumulators keep both FMA pipes busy


def wide_registers(board) -> bool:
    """Whether the board's CPU has 32 vector registers (x86 AVX-512)."""
    return board is not None and "avx512f" in board.cpu_features


def lane_fma(board) -> bool:
    """Whether the board's CPU multiplies by a vector lane (AArch64 NEON's fmla by element)."""
    return board is not None and board.arch == "aarch64"


def lane_inputs(sch: Schedule, block, red):
    """For CPUs that multiply by a vector lane: the reduction loop `red` of `block` (whose first input
    is read as a scalar per register-tile row, the tile rows unrolled just inside `red`) split by
    LANE_CI, and that input's LANE_CI values of each tile row loaded by one vector into a local tile
    at the outer part; LLVM then multiplies by its lanes (fmla by element) instead of loading and
    broadcasting each value. Returns the outer part (what replaces `red`)."""
    outer, inner = sch.split(red, [None, LANE_CI])
    sch.unroll(inner)
    tile = sch.cache_read(block, 0, "local", consumer_blocks=[block])
    sch.compute_at(tile, outer, preserve_unit_loops=True)
    loops = sch.get_loops(tile)
    sch.vectorize(loops[-1])
    sch.unroll(loops[-2])
    return outer


def schedule_conv2d(s: Conv2dSpec, name: str = "conv2d", wide: bool = False, lane: bool = False) -> tvm.IRModule:
    """Per channel block and output row (parallel, the blocks outermost so that a block's weights stay
    in cache over its rows): tiles of PIX pixels x V channels accumulate in registers with the
    reduction (kh, kw, c_in) outside them; each weight vector serves PIX pixels, each input value V
    channels. The padded input is built first (its rows in parallel). `wide`: the CPU has 32 vector
    registers (wide_registers(board)), so PIX goes up to 8 (at 16 ymm registers 8 x 16 lanes spill).
    `lane`: the CPU multiplies by a vector lane (lane_fma(board)): each pixel's inputs are loaded
    LANE_CI at a time (lane_inputs); on x86 the broadcast from memory is cheaper."""
    sch = Schedule(module(conv2d_func(s), name))
    v = s.block
    if v < 4:                                   # odd channel counts: the plain vector schedule
        if s.pad:
            sch.compute_inline(sch.get_sblock("Xp", func_name=name))
        schedule_reduction_vec(sch, "acc", "Y", name, n_par=2)
        return sch.mod
    pix = next(p for p in (WIDE_PIXELS if wide else CONV_PIXELS) if s.wo % p == 0)
    y = sch.get_sblock("Y", func_name=name)
    n, i, j, o = sch.get_loops(y)
    jo, ji = sch.split(j, [None, pix])
    oo, ov = sch.split(o, [None, v])
    sch.reorder(oo, n, i, jo, ji, ov)      # a channel block's weights stay in cache over its rows
    acc = sch.get_sblock("acc", func_name=name)
    sch.compute_at(acc, jo, preserve_unit_loops=True)
    a_ji, a_ov, r, q, ci = sch.get_loops(acc)[-5:]
    sch.reorder(r, q, ci, a_ji, a_ov)
    if lane and s.c_in % LANE_CI == 0:
        lane_inputs(sch, acc, ci)
    sch.vectorize(a_ov)                 # vectorize, parallel, then decompose (TVM 0.27's order)
    sch.vectorize(ov)
    sch.unroll(a_ji)
    sch.parallel(sch.fuse(oo, n, i))
    init = sch.decompose_reduction(acc, r)
    sch.vectorize(sch.get_loops(init)[-1])
    if s.pad:
        xl = sch.get_loops(sch.get_sblock("Xp", func_name=name))
        vectorize_inner(sch, xl[-1])
        sch.parallel(sch.fuse(xl[0], xl[1]))
    return sch.mod


# -- dense ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DenseSpec:
    """X [m, k] . W [n, k]^T + B [n] -> Y [m, n] (torch.nn.Linear's weight layout)."""
    m: int
    k: int
    n: int

    def __post_init__(self):
        check_ints("dense", self, ("m", "k", "n"))


def dense_func(s: DenseSpec) -> tirx.PrimFunc:
    x = te.placeholder((s.m, s.k), "float32", name="X")
    wt = te.placeholder((s.n, s.k), "float32", name="W")
    b = te.placeholder((s.n,), "float32", name="B")
    k = te.reduce_axis((0, s.k), "k")
    acc = te.compute((s.m, s.n), lambda i, j: te.sum(x[i, k] * wt[j, k], axis=k), name="acc")
    y = te.compute((s.m, s.n), lambda i, j: acc[i, j] + b[j], name="Y")
    return te.create_prim_func([x, wt, b, y])


def schedule_dense(s: DenseSpec, name: str = "dense") -> tvm.IRModule:
    sch = Schedule(module(dense_func(s), name))
    schedule_reduction_vec(sch, "acc", "Y", name, n_par=1)
    return sch.mod


# -- group norm -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupNormSpec:
    """torch.nn.GroupNorm(groups, c, eps, affine=True) on X [n, h, w, c]; then SiLU when `silu`; with
    `quantize` the output is the consuming quantized layer's input codes (uint8, vmath.act_code), its
    smooth [c], act [1], az [1] and code maximum qmax [1] (float32: one kernel serves A4 and A8) as
    inputs after beta, so the float map is never written. `parts`: the row blocks whose statistics are
    summed apart, in parallel (the board's threads): each thread then reads the rows that it writes
    and that the kernel before wrote on it, not the other core's cache (stats_parts: 1 where the rows
    do not divide). Not in the repr: latency tables key the op by its shape."""
    n: int
    h: int
    w: int
    c: int
    groups: int
    eps: float = 1e-5
    silu: bool = False
    quantize: bool = False
    parts: int = field(default=1, repr=False)

    def __post_init__(self):
        check_ints("group_norm", self, ("n", "h", "w", "c", "groups", "parts"))
        if self.c % self.groups:
            raise ValueError(f"group_norm groups={self.groups} does not divide c={self.c}")
        if not isinstance(self.eps, (int, float)) or isinstance(self.eps, bool) or not self.eps > 0:
            raise ValueError(f"group_norm eps must be a float > 0, got {self.eps!r}")
        for f in ("silu", "quantize"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"group_norm {f} must be a bool, got {getattr(self, f)!r}")

    @property
    def stats_parts(self) -> int:
        return self.parts if self.h % self.parts == 0 else 1


def square(v: tirx.PrimExpr) -> tirx.PrimExpr:
    return v * v


def group_norm_func(s: GroupNormSpec) -> tirx.PrimFunc:
    """Two passes (mean, then the centred sum of squares: torch's biased variance), float32 sums;
    each pass sums per channel over each row block's pixels first (contiguous, vectorizable), then
    over the blocks, then per group.
    The group's mean, 1/std and the affine are folded into one scale and shift per channel, so the
    output pass reads contiguous vectors (no per-lane gather of group values)."""
    x = te.placeholder((s.n, s.h, s.w, s.c), "float32", name="X")
    gamma = te.placeholder((s.c,), "float32", name="gamma")
    beta = te.placeholder((s.c,), "float32", name="beta")
    cg = s.c // s.groups
    inv = tirx.const(1.0 / (s.h * s.w * cg), "float32")

    def per_group(src, name):
        rc = te.reduce_axis((0, cg), "rc")
        return te.compute((s.n, s.groups), lambda n, g: te.sum(src[n, g * cg + rc], axis=rc), name=name)

    def per_channel(f, name):
        return te.compute((s.n, s.c), f, name=name)

    parts = s.stats_parts
    rows = s.h // parts

    def per_channel_sum(f, name):
        rh, rw = te.reduce_axis((0, rows), "rh"), te.reduce_axis((0, s.w), "rw")
        part = te.compute((s.n, parts, s.c), lambda n, p, c: te.sum(f(n, p * rows + rh, rw, c), axis=[rh, rw]),
                          name=f"{name}_part")
        rp = te.reduce_axis((0, parts), "rp")
        return per_channel(lambda n, c: te.sum(part[n, rp, c], axis=rp), name)

    csum = per_channel_sum(lambda n, i, j, c: x[n, i, j, c], "gn_csum")
    total = per_group(csum, "gn_sum")
    mean = per_channel(lambda n, c: total[n, c // cg] * inv, "gn_mean")
    csq = per_channel_sum(lambda n, i, j, c: square(x[n, i, j, c] - mean[n, c]), "gn_csq")
    sq = per_group(csq, "gn_sq")
    scale = per_channel(lambda n, c: tirx.rsqrt(sq[n, c // cg] * inv + tirx.const(s.eps, "float32")) * gamma[c],
                        "gn_scale")
    shift = per_channel(lambda n, c: beta[c] - mean[n, c] * scale[n, c], "gn_shift")

    def norm(n, i, j, c):
        v = x[n, i, j, c] * scale[n, c] + shift[n, c]
        return vmath.silu(v) if s.silu else v

    if not s.quantize:
        return te.create_prim_func([x, gamma, beta, te.compute((s.n, s.h, s.w, s.c), norm, name="Y")])
    smooth = te.placeholder((s.c,), "float32", name="smooth")
    act, qmax = (te.placeholder((1,), "float32", name=nm) for nm in ("act", "qmax"))
    az = te.placeholder((1,), "int32", name="az")
    y = te.compute((s.n, s.h, s.w, s.c), lambda n, i, j, c: vmath.act_code(     # no float map in between
        norm(n, i, j, c), smooth[c], act[0], az[0], qmax[0]), name="Y")
    return te.create_prim_func([x, gamma, beta, smooth, act, az, qmax, y])


def schedule_group_norm(s: GroupNormSpec, name: str = "group_norm") -> tvm.IRModule:
    sch = Schedule(module(group_norm_func(s), name))
    v = lanes(s.c)
    big = s.n * s.h * s.w * s.c >= PARALLEL_MIN
    for blk in ("gn_csum_part", "gn_csq_part"):   # channel vectors, a block's rows outside them
        b = sch.get_sblock(blk, func_name=name)
        n, p, c, rh, rw = sch.get_loops(b)
        if v > 1:
            co, cv = sch.split(c, [None, v])
            sch.reorder(n, p, co, rh, rw, cv)
            sch.vectorize(cv)
            if s.stats_parts > 1:                 # the row blocks share out over the threads
                sch.parallel(sch.fuse(n, p))
            elif big and s.c > v:                 # else the channel vectors
                sch.parallel(sch.fuse(n, p, co))
            init = sch.decompose_reduction(b, rh)
            sch.vectorize(sch.get_loops(init)[-1])
    schedule_pointwise(sch, "Y", name)
    return sch.mod


# -- elementwise, concat, upsample ----------------------------------------------------------------------

@dataclass(frozen=True)
class EltwiseSpec:
    """An NHWC shape [n, h, w, c] (tokens [N, L, C] as h=L, w=1)."""
    n: int
    h: int
    w: int
    c: int

    def __post_init__(self):
        check_ints("eltwise", self, ("n", "h", "w", "c"))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.n, self.h, self.w, self.c


def silu_func(s: EltwiseSpec) -> tirx.PrimFunc:
    x = te.placeholder(s.shape, "float32", name="X")
    y = te.compute(s.shape, lambda *i: vmath.silu(x(*i)), name="Y")
    return te.create_prim_func([x, y])


def add_func(s: EltwiseSpec) -> tirx.PrimFunc:
    a = te.placeholder(s.shape, "float32", name="A")
    b = te.placeholder(s.shape, "float32", name="B")
    y = te.compute(s.shape, lambda *i: a(*i) + b(*i), name="Y")
    return te.create_prim_func([a, b, y])


def schedule_silu(s: EltwiseSpec, name: str = "silu") -> tvm.IRModule:
    sch = Schedule(module(silu_func(s), name))
    schedule_pointwise(sch, "Y", name)
    return sch.mod


def schedule_add(s: EltwiseSpec, name: str = "add") -> tvm.IRModule:
    sch = Schedule(module(add_func(s), name))
    schedule_pointwise(sch, "Y", name)
    return sch.mod


@dataclass(frozen=True)
class ConcatSpec:
    """A [n, h, w, c1] ++ B [n, h, w, c2] along channels -> Y [n, h, w, c1 + c2]."""
    n: int
    h: int
    w: int
    c1: int
    c2: int

    def __post_init__(self):
        check_ints("concat", self, ("n", "h", "w", "c1", "c2"))


def concat_func(s: ConcatSpec) -> tirx.PrimFunc:
    a = te.placeholder((s.n, s.h, s.w, s.c1), "float32", name="A")
    b = te.placeholder((s.n, s.h, s.w, s.c2), "float32", name="B")
    y = te.compute((s.n, s.h, s.w, s.c1 + s.c2), lambda n, i, j, c: tirx.Select(
        c < s.c1, a[n, i, j, tirx.min(c, s.c1 - 1)], b[n, i, j, tirx.max(c - s.c1, 0)]), name="Y")
    return te.create_prim_func([a, b, y])


def schedule_concat(s: ConcatSpec, name: str = "concat") -> tvm.IRModule:
    # Select (both sides evaluated, their indices clamped into bounds) vectorizes; TVM scalarizes an
    # if_then_else whose condition varies along the vector
    sch = Schedule(module(concat_func(s), name))
    schedule_pointwise(sch, "Y", name)
    return sch.mod


def upsample_nearest2x_func(s: EltwiseSpec) -> tirx.PrimFunc:
    """X [n, h, w, c] -> Y [n, 2h, 2w, c] (F.interpolate(scale_factor=2.0, mode="nearest"))."""
    x = te.placeholder(s.shape, "float32", name="X")
    y = te.compute((s.n, 2 * s.h, 2 * s.w, s.c), lambda n, i, j, c: x[n, i // 2, j // 2, c], name="Y")
    return te.create_prim_func([x, y])


def schedule_upsample_nearest2x(s: EltwiseSpec, name: str = "upsample") -> tvm.IRModule:
    sch = Schedule(module(upsample_nearest2x_func(s), name))
    schedule_pointwise(sch, "Y", name)
    return sch.mod


def pad_bottom_right_func(s: EltwiseSpec) -> tirx.PrimFunc:
    """X [n, h, w, c] -> Y [n, h + 1, w + 1, c], a zero row and column appended (F.pad (0, 1, 0, 1), as
    diffusers' Downsample2D does before a stride-2 conv without padding)."""
    x = te.placeholder(s.shape, "float32", name="X")
    y = te.compute((s.n, s.h + 1, s.w + 1, s.c), lambda n, i, j, c: tirx.Select(
        tirx.all(i < s.h, j < s.w), x[n, tirx.min(i, s.h - 1), tirx.min(j, s.w - 1), c],
        tirx.const(0.0, "float32")), name="Y")
    return te.create_prim_func([x, y])


def schedule_pad_bottom_right(s: EltwiseSpec, name: str = "pad") -> tvm.IRModule:
    sch = Schedule(module(pad_bottom_right_func(s), name))
    schedule_pointwise(sch, "Y", name)
    return sch.mod


# -- timestep embedding ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TimestepSpec:
    """diffusers' Timesteps(dim, flip_sin_to_cos, freq_shift): T [n] float32 -> Y [n, dim]. The defaults
    are those UNet2DModel passes (flip_sin_to_cos=True, freq_shift=0)."""
    n: int
    dim: int
    flip_sin_to_cos: bool = True
    freq_shift: float = 0
    max_period: int = 10000

    def __post_init__(self):
        check_ints("timestep_embedding", self, ("n", "max_period"))
        check_ints("timestep_embedding", self, ("dim",), minimum=2)
        if not isinstance(self.flip_sin_to_cos, bool):
            raise ValueError(f"timestep_embedding flip_sin_to_cos must be a bool, got {self.flip_sin_to_cos!r}")
        if not isinstance(self.freq_shift, (int, float)) or isinstance(self.freq_shift, bool) \
                or self.freq_shift == self.dim // 2:
            raise ValueError(f"timestep_embedding freq_shift must be a number != dim // 2, got {self.freq_shift!r}")


def timestep_embedding_func(s: TimestepSpec) -> tirx.PrimFunc:
    """get_timestep_embedding with scale 1, in its float32 operation order:
    freq[k] = exp((-ln(max_period) * k) / (half - shift)); [sin(t f), cos(t f)] (cos first when flipped),
    a zero column appended for odd dims."""
    t = te.placeholder((s.n,), "float32", name="T")
    half = s.dim // 2
    f32 = "float32"

    def emb(n, j):
        k = tirx.if_then_else(j < half, j, j - half)
        expo = tirx.const(-math.log(s.max_period), f32) * k.astype(f32) / tirx.const(half - s.freq_shift, f32)
        arg = t[n] * tirx.exp(expo)
        first, second = (tirx.cos(arg), tirx.sin(arg)) if s.flip_sin_to_cos else (tirx.sin(arg), tirx.cos(arg))
        v = tirx.if_then_else(j < half, first, second)
        return tirx.if_then_else(j < 2 * half, v, tirx.const(0.0, f32))

    y = te.compute((s.n, s.dim), emb, name="Y")
    return te.create_prim_func([t, y])


def schedule_timestep_embedding(s: TimestepSpec, name: str = "timestep_embedding") -> tvm.IRModule:
    # [n, dim] is tiny (n = batch): a parallel launch would cost more than it saves; sin/cos of LLVM
    # have no vector form without a vector math library, so the loop stays scalar
    return module(timestep_embedding_func(s), name)
