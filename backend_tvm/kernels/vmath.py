"""float32 exp and sigmoid as plain arithmetic, so that a vectorised loop stays vectorised.

`tirx.exp` lowers to a libm call per element (LLVM has no vector exp without a vector math
library), which made GroupNorm + SiLU a quarter of a host step. Here exp is range-reduced by
powers of two, x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two constants so n ln2 is exact),
e^r by a degree-6 polynomial (minimax coefficients, the Cephes expf set), and 2^n built from its
IEEE exponent bits. Relative error about 2 ulp over the clamped range [-87.3, 88.3]; below it the
result is 2^-126 (not 0), above it e^88.3 (not inf): SiLU and softmax need neither extreme.
"""

from __future__ import annotations

from ..tvm_compat import tirx

F32 = "float32"
LO, HI = -87.33654, 88.37626       # e^x stays a normal float32 in between
LOG2E = 1.44269504088896341
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4     # LN2_HI has 9 bits: n * LN2_HI is exact
POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


def c(v: float) -> tirx.PrimExpr:
    return tirx.const(v, F32)


def exp(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """e^x for a float32 expression, with no call in it."""
    x = tirx.max(tirx.min(x, c(HI)), c(LO))
    n = tirx.floor(x * c(LOG2E) + c(0.5))
    r = x - n * c(LN2_HI) - n * c(LN2_LO)
    p = c(POLY[0])
    for k in POLY[1:]:
        p = p * r + c(k)
    er = p * (r * r) + r + c(1.0)
    bits = tirx.shift_left(n.astype("int32") + tirx.const(127, "int32"), tirx.const(23, "int32"))
    return er * tirx.reinterpret(F32, bits)


def sigmoid(x: tirx.PrimExpr) -> tirx.PrimExpr:
    return c(1.0) / (c(1.0) + exp(-x))


def silu(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """x * sigmoid(x), as x / (1 + e^-x): one division, and -0 rather than NaN far below zero."""
    return x / (c(1.0) + exp(-x))


def act_code(v, smooth, act, az, qmax):
    """A quantized layer's input code of v (kernels/quantize.py): clamp(round(v / smooth / act) + az,
    0, qmax) as uint8, in the frontend integer reference's order of operations."""
    q = tirx.round(v / smooth / act) + az.astype(F32)
    return tirx.max(tirx.min(q, qmax), tirx.const(0.0, F32)).astype("uint8")
