"""Quantized conv2d (NHWC) on packed weights; a dense layer is the 1x1 case on [M, 1, 1, C].

Arguments (core/scheme.py, in its order): X uint8 [N, H, W, Cin] activation codes (padding reads
the zero code za); Wp uint32, the layer's packed weights (core/packing.py: groups in plan order,
one bit-width each); perm int32 [Cout]: the plan position of every output channel; per output
channel (original order) the weight step sw, zero point zw, code sum colsum = sum_k qw and bias;
act float32 [1] (the input step sa) and az int32 [1] (its zero code). Per group g (its bits fixed at compile time):
    acc_g[p, j] = sum_k X[p, k] * qw_g[j, k]                          (int32)
    corr[p, c]  = acc - za * colsum[c] - zw[c] * rowsum[p] + K * zw[c] * za
    Y[p, c]     = corr * (sa * sw[c]) + bias[c]                     (float32)
The groups' accumulators are computed per output pixel and gathered into the original channel
order in the epilogue: several groups cost no extra pass over the output.
"""

from __future__ import annotations

from mpqdm.core.packing import LANES, group_words, words_per_row
from mpqdm.core.scheme import ConvSpec, QConvArgs

from ..tvm_compat import te, tirx

PARAM_NAMES = {"x": "X", "wp": "Wp", "y": "Y"}     # the PrimFunc's parameter names where they differ


def qconv_inputs(s: ConvSpec) -> QConvArgs:
    """The kernel's placeholders by name (the scheme's calling convention; y is None: it is computed)."""
    types = s.arg_types()
    return QConvArgs(**{f: None if f == "y" else te.placeholder(*getattr(types, f), name=PARAM_NAMES.get(f, f))
                        for f in QConvArgs.__dataclass_fields__})


def qconv_output(s: ConvSpec, corrected, sw, bias, act, with_epilogue: bool):
    """Y: the corrected int32 accumulators, or (with the epilogue) their float rescale plus bias."""
    if not with_epilogue:
        return te.compute((s.n, s.ho, s.wo, s.c_out), corrected, name="Y")
    return te.compute((s.n, s.ho, s.wo, s.c_out), lambda n, i, j, c: corrected(n, i, j, c).astype("float32")
                      * (act[0] * sw[c]) + bias[c], name="Y")


def packed_bits(wp, off: int, o: tirx.PrimExpr, bit: tirx.PrimExpr, wpr: int, width: int) -> tirx.PrimExpr:
    """Channel o's packed row (group at word `off`, `wpr` words a row; layout [tile][word][lane]) shifted
    down by `bit`: its `width` bits from there are the low bits (uint32, or uint64 where they may
    straddle two words; the bits above are not cleared). `bit` is a multiple of `width`."""
    word = off + (tirx.floordiv(o, LANES) * wpr + tirx.shift_right(bit, 5)) * LANES + tirx.floormod(o, LANES)
    sh = tirx.bitwise_and(bit, 31)
    if 32 % width == 0:          # the field never straddles two words
        return tirx.shift_right(wp[word], sh.astype("uint32"))
    pair = tirx.bitwise_or(tirx.shift_left(wp[word + LANES].astype("uint64"), tirx.const(32, "uint64")),
                           wp[word].astype("uint64"))
    return tirx.shift_right(pair, sh.astype("uint64"))


def weight_code(wp, off: int, o: tirx.PrimExpr, k: tirx.PrimExpr, k_total: int, bits: int) -> tirx.PrimExpr:
    """Code k of channel o of the group at word `off` (packing layout: [tile][word][lane]), as int32."""
    v = packed_bits(wp, off, o, k * bits, words_per_row(k_total, bits), bits)
    return tirx.bitwise_and(v, tirx.const((1 << bits) - 1, "uint32" if 32 % bits == 0 else "uint64")).astype("int32")


def swar(spec: ConvSpec, bits: int) -> bool:
    """Whether a group of `bits`-bit weights accumulates two pixels per 32-bit lane: a conv (not a
    dense layer) whose largest sum, K (2^b - 1)(2^a - 1), fits in 16 bits."""
    dense = spec.h == 1 and spec.w == 1
    return not dense and spec.wo > 1 and spec.k * ((1 << bits) - 1) * ((1 << spec.abits) - 1) < 65536


def qconv_compute(spec: ConvSpec, with_epilogue: bool = True, allow_swar: bool = True):
    """TE graph; returns (inputs..., output) for te.create_prim_func. `allow_swar=False` keeps one
    pixel per lane (the CUDA schedule has no use for the pairs)."""
    s = spec
    a = qconv_inputs(s)
    x, wp, perm, sw, zw, colsum, bias, act, az = a.x, a.wp, a.perm, a.sw, a.zw, a.colsum, a.bias, a.act, a.az

    def xpad(n, i, j, c):
        ii, jj = i - s.pad, j - s.pad
        inside = tirx.all(ii >= 0, ii < s.h, jj >= 0, jj < s.w)
        return tirx.if_then_else(inside, x[n, ii, jj, c].astype("int32"), az[0])

    def patch_axes():
        return (te.reduce_axis((0, s.kh), "r"), te.reduce_axis((0, s.kw), "q"), te.reduce_axis((0, s.c_in), "ci"))

    def group_acc(g: int, off: int, n_g: int, b: int):
        r, q, ci = patch_axes()
        return te.compute((s.n, s.ho, s.wo, n_g), lambda n, i, j, o: te.sum(
            xpad(n, i * s.stride + r, j * s.stride + q, ci)
            * weight_code(wp, off, o, (r * s.kw + q) * s.c_in + ci, s.k, b), axis=[r, q, ci]), name=f"acc{g}")

    def group_acc_pairs(g: int, off: int, n_g: int, b: int):
        """Two neighbouring output pixels per 32-bit lane (SWAR): x0 + x1 * 2^16 times the code
        accumulates both 16-bit sums at once; `swar(spec, b)` guarantees neither field overflows."""
        r, q, ci = patch_axes()

        def pair(n, i, jp):
            j0, j1 = jp * 2, jp * 2 + 1
            lo = xpad(n, i * s.stride + r, j0 * s.stride + q, ci)
            hi = tirx.if_then_else(j1 < s.wo, xpad(n, i * s.stride + r, j1 * s.stride + q, ci), 0)
            return (lo + hi * 65536).astype("uint32")

        accp = te.compute((s.n, s.ho, (s.wo + 1) // 2, n_g), lambda n, i, jp, o: te.sum(
            pair(n, i, jp) * weight_code(wp, off, o, (r * s.kw + q) * s.c_in + ci, s.k, b).astype("uint32"),
            axis=[r, q, ci]), name=f"accp{g}")
        return te.compute((s.n, s.ho, s.wo, n_g), lambda n, i, j, o: tirx.bitwise_and(tirx.shift_right(
            accp[n, i, tirx.floordiv(j, 2), o], (tirx.floormod(j, 2) * 16).astype("uint32")),
            tirx.const(0xFFFF, "uint32")).astype("int32"), name=f"acc{g}")

    accs, start, off = [], 0, 0
    for g, (n_g, b) in enumerate(s.groups):
        make = group_acc_pairs if allow_swar and swar(s, b) else group_acc
        accs.append((start, n_g, make(g, off, n_g, b)))
        start += n_g
        off += group_words(s.k, n_g, b)
    r, q, ci = patch_axes()
    rowsum = te.compute((s.n, s.ho, s.wo), lambda n, i, j: te.sum(
        xpad(n, i * s.stride + r, j * s.stride + q, ci), axis=[r, q, ci]), name="rowsum")

    def gathered(n, i, j, c):
        p = perm[c]
        out = tirx.const(0, "int32")
        for st, n_g, acc in reversed(accs):
            out = tirx.if_then_else(tirx.all(p >= st, p < st + n_g), acc[n, i, j, p - st], out)
        return out

    def corrected(n, i, j, c):
        za = az[0]
        return gathered(n, i, j, c) - za * colsum[c] - zw[c] * rowsum[n, i, j] + s.k * zw[c] * za

    y = qconv_output(s, corrected, sw, bias, act, with_epilogue)
    return list(QConvArgs(x, wp, perm, sw, zw, colsum, bias, act, az, y).ordered()), [t for _, _, t in accs] + [rowsum]


def qconv_func(spec: ConvSpec, with_epilogue: bool = True, allow_swar: bool = True):
    args, _ = qconv_compute(spec, with_epilogue, allow_swar)
    return te.create_prim_func(args)
