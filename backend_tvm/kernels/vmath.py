"""float32 exp and sigmoid as plain arithmetic, so that a vectorised loop stays vectorised.

`tirx.exp` lowers to a libm call per element (LLVM has no vector exp without a vector math
library), which made GroupNorm + SiLU a quarter of a host step. Here exp is range-reduced by
powers of two, x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two constants so n ln2 is exact),
e^r = 1 + r + r^2 P(r) with P of degree 3 (coefficients fitted for least maximum relative error,
evaluated by Estrin's scheme), and 2^n added to the result's IEEE exponent bits. Relative error
1.8 ulp at most over the clamped range [-87.3, 88.3] (SiLU 2.1 ulp; both measured on the host over
a dense grid; tests/test_vmath.py holds them under 4 and 8); below it the result is about
2^-126 (not 0), above it e^88.3 (not inf): SiLU and softmax need neither extreme. e^-x (sigmoid,
SiLU) folds the negation into the constants.
"""

from __future__ import annotations

from ..tvm_compat import tirx

F32 = "float32"
LO, HI = -87.33654, 88.37626       # e^x stays a normal float32 in between
LOG2E = 1.44269504088896341
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4     # LN2_HI has 9 bits: n * LN2_HI is exact
POLY = (0.499992311, 0.166671142, 0.0418900959, 0.00831255317)  # e^r ~ 1 + r + r^2 P(r), |r| <= ln2/2


def c(v: float) -> tirx.PrimExpr:
    return tirx.const(v, F32)


def exp_signed(x: tirx.PrimExpr, sign: int) -> tirx.PrimExpr:
    """e^(sign * x), sign +1 or -1, for a float32 expression, with no call in it. The negation
    folds into the constants: sign x = n ln2 + sign u, e^(sign u) = 1 + sign u + u^2 P(sign u)."""
    lo, hi = (LO, HI) if sign > 0 else (-HI, -LO)
    x = tirx.max(tirx.min(x, c(hi)), c(lo))
    n = tirx.round(x * c(sign * LOG2E))
    if sign > 0:
        u = x - n * c(LN2_HI) - n * c(LN2_LO)
    else:
        u = x + n * c(LN2_HI) + n * c(LN2_LO)
    a0, a1, a2, a3 = (c(sign ** k * coef) for k, coef in enumerate(POLY))
    u2 = u * u
    p = (a0 + a1 * u) + u2 * (a2 + a3 * u)        # Estrin: one multiply-add fewer than Horner
    er = (c(1.0) + c(float(sign)) * u) + p * u2
    scale = tirx.shift_left(n.astype("int32"), tirx.const(23, "int32"))     # 2^n: added to the exponent
    return tirx.reinterpret(F32, tirx.reinterpret("int32", er) + scale)


def exp(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """e^x for a float32 expression, with no call in it."""
    return exp_signed(x, 1)


FLUSH = -60.0     # softmax weights below e^-60 of the row's largest: 0, never a denormal


def softmax_exp(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """e^x for x <= 0 (a softmax weight), exactly 0 below FLUSH: e^x near the clamp is a denormal,
    and x86 multiplies denormals through a microcode assist (attention with peaked rows ran 4x
    slower). What it drops is below 1e-26 of the row's sum."""
    return tirx.Select(x < c(FLUSH), c(0.0), exp(x))


def sigmoid(x: tirx.PrimExpr) -> tirx.PrimExpr:
    return c(1.0) / (c(1.0) + exp_signed(x, -1))


def silu(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """x * sigmoid(x), as x / (1 + e^-x): one division, and -0 rather than NaN far below zero."""
    return x / (c(1.0) + exp_signed(x, -1))


def act_code(v, smooth, act, az, qmax):
    """A quantized layer's input code of v (kernels/quantize.py): clamp(round(v / smooth / act) + az,
    0, qmax) as uint8, in the frontend integer reference's order of operations."""
    q = tirx.round(v / smooth / act) + az.astype(F32)
    return tirx.max(tirx.min(q, qmax), tirx.const(0.0, F32)).astype("uint8")
