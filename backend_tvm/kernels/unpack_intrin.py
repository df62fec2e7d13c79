"""Weight unpacking for the tensorised conv (qconv_dot.py), as a tensor intrinsic:

    C[i, c] = code c of quad word A[i]      A: 8 channels' quads (4 b-bit codes in the low 4b bits)

C is 8 channels x 4 codes, one byte each (uint8, or int8 less an offset), the layout the dot
intrinsics read. TVM's vectoriser turns the per-code form into a gather of A; this intrinsic spreads
the four b-bit fields of each 32-bit lane into its four bytes with two shift-or-mask steps, the same
few instructions for every width (1..8 bits), 32 codes at a time.
`unpacked(word, c, b, offset, wdtype)` is the expression both the conv and the intrinsic describe;
`unpack_intrin(b, offset, wdtype)` registers (once) and names the intrinsic.
"""

from __future__ import annotations

from tvm.script import tirx as T

from ..tvm_compat import s_tir, tirx

LANES = 8
_registered: dict[tuple, str] = {}


def unpacked(word, c, b: int, offset: int, wdtype: str):
    """Code c of a quad word (its fields at bits c b .. c b + b - 1), as `wdtype` less `offset`."""
    v = tirx.bitwise_and(tirx.shift_right(word, (c * b).astype("uint32")), tirx.const((1 << b) - 1, "uint32"))
    return (v.astype("int32") - offset).astype(wdtype) if offset else v.astype(wdtype)


def _steps(b: int) -> list[tuple[int, int, int]]:
    """(shift, mask of the fields kept in place, mask of the fields moved up) of the two spreading steps:
    fields 2, 3 up to bit 16, then fields 1, 3 up by a byte less b bits."""
    field, pair = (1 << b) - 1, (1 << 2 * b) - 1
    return [(16 - 2 * b, pair, pair << 16), (8 - b, field | field << 16, field << 8 | field << 24)]


def _desc(b: int, offset: int, wdtype: str):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (LANES,), "uint32", offset_factor=1)
        C = T.match_buffer(c, (LANES, 4), wdtype, offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:LANES])
            T.writes(C[0:LANES, 0:4])
            for i, k in T.grid(LANES, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SS", [i, k])
                    C[vi, vk] = unpacked(A[vi], vk, b, offset, wdtype)
    return desc


def _impl(b: int, offset: int, wdtype: str):
    n = 4 * LANES

    def vec(v: int):
        return tirx.Broadcast(tirx.const(v, "uint32"), LANES)

    def spread(x):
        """Field c of each 32-bit lane into its byte c."""
        x = tirx.bitwise_and(x, vec((1 << 4 * b) - 1 if b < 8 else 0xFFFFFFFF))
        for shift, kept, moved in _steps(b):
            if not shift:
                continue
            up = tirx.shift_left(x, vec(shift))
            if shift >= 2 * b:       # the moved copy clears the kept fields' bits: one mask serves both
                x = tirx.bitwise_and(tirx.bitwise_or(x, up), vec(kept | moved))
            else:
                x = tirx.bitwise_or(tirx.bitwise_and(x, vec(kept)), tirx.bitwise_and(up, vec(moved)))
        return tirx.reinterpret(f"uint8x{n}", x)

    def stored(codes):
        if offset:
            codes = codes - tirx.Broadcast(tirx.const(offset, "uint8"), n)
        return tirx.reinterpret(f"{wdtype}x{n}", codes)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (LANES,), "uint32", offset_factor=1)
        C = T.match_buffer(c, (LANES, 4), wdtype, offset_factor=1)
        with T.sblock("root"):
            T.reads(A[0:LANES])
            T.writes(C[0:LANES, 0:4])
            C.vstore([0, 0], stored(spread(A.vload([0], f"uint32x{LANES}"))))
    return impl


def unpack_intrin(b: int, offset: int, wdtype: str) -> str:
    key = (b, offset, wdtype)
    if key not in _registered:
        name = f"mpq_unpack{LANES}x4_b{b}_{wdtype}" + (f"_o{offset}" if offset else "")
        s_tir.TensorIntrin.register(name, _desc(*key), _impl(*key))
        _registered[key] = name
    return _registered[key]
