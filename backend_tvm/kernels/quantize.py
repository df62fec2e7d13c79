"""Input quantization of a quantized layer: codes = clamp(round((x / s_c) / sa) + za, 0, 2^a - 1).

The SmoothQuant factor s_c (per input channel) cannot be folded through SiLU or GroupNorm, so it is
applied here, on the NHWC float32 input (the last axis is the channel). The two float32 divisions
and the round-half-to-even match the frontend's integer reference bit for bit.
"""

from __future__ import annotations

import math

from ..tvm_compat import Schedule, te, tirx, tvm
from . import vmath
from .fp import PARALLEL_MIN, vectorize_inner


def quantize_func(shape: tuple[int, ...], abits: int):
    if abits not in (4, 8):
        raise ValueError(f"activation bits must be 4 or 8, got {abits}")
    if not shape or any(int(d) < 1 for d in shape):
        raise ValueError(f"input shape must have positive sizes, got {shape}")
    x = te.placeholder(tuple(shape), "float32", name="X")
    smooth = te.placeholder((shape[-1],), "float32", name="smooth")
    act = te.placeholder((1,), "float32", name="act")
    az = te.placeholder((1,), "int32", name="az")
    qmax = float(2 ** abits - 1)

    q = te.compute(tuple(shape), lambda *i: vmath.act_code(x[i], smooth[i[-1]], act[0], az[0],
                                                             tirx.const(qmax, "float32")), name="Q")
    return te.create_prim_func([x, smooth, act, az, q])


def schedule_quantize(shape: tuple[int, ...], abits: int, name: str = "quantize") -> tvm.IRModule:
    mod = tvm.IRModule({name: quantize_func(shape, abits).with_attr("global_symbol", name)})
    sch = Schedule(mod)
    loops = sch.get_loops(sch.get_sblock("Q", func_name=name))
    if len(loops) > 1 and math.prod(shape) >= PARALLEL_MIN:
        sch.parallel(sch.fuse(*loops[:-1]))
    vectorize_inner(sch, loops[-1])
    return sch.mod
