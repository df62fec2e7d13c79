"""Our 8-lane x 4-deep integer dot-product intrinsics for tensorize:

    C[i] += sum_k int32(A[k]) * int32(B[i, k])      A: 4 activation codes (uint8), B: 8 lanes x 4 weights

C is a register tile (scope "local", from cache_write). The description is shared; each implementation maps it to one CPU's instructions:
- "mpq_dot8x4_avx2": vpmaddubsw (u8 x s8, pairs summed to int16 with saturation) then vpmaddwd by
  ones (int32). Exact only when a pair sum cannot saturate: 2 (2^a - 1) max|w| <= 32767.
- "mpq_dot8x4_avx2_split": the same with odd and even k in separate vpmaddubsw calls (each pair
  holds one product, |product| <= 255 * 128 fits int16): exact for every 8-bit input, twice the work.
- "mpq_dot8x4_udot": two Arm udot (u8 x u8 -> u32, 4 lanes each); weights are unsigned codes.
`dot_intrin(board_features, abits, wbits)` picks one, or None where the plain loop must be used.
"""

from __future__ import annotations

from tvm.script import tirx as T

from ..tvm_compat import s_tir

LANES, DEPTH = 8, 4


def _desc(wdtype: str):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (8, 4), wdtype, offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:8, 0:4])
            T.writes(C[0:8])
            for i, k in T.grid(8, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")
    return desc


@T.prim_func(s_tir=True)
def _avx2(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (8, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        a4 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        pairs = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                                        T.reinterpret(T.broadcast(a4, 8), dtype="uint8x32"),
                                        B.vload([0, 0], dtype="int8x32"), dtype="int16x16")
        C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.int16x16(1), dtype="int32x8")


@T.prim_func(s_tir=True)
def _avx2_split(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (8, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        a4 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
        even = T.reinterpret(T.broadcast(T.bitwise_and(a4, 0x00FF00FF), 8), dtype="uint8x32")
        odd = T.reinterpret(T.broadcast(T.bitwise_and(a4, T.int32(-16711936)), 8), dtype="uint8x32")  # 0xFF00FF00
        w = B.vload([0, 0], dtype="int8x32")
        pe = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"), even, w,
                                     dtype="int16x16")
        po = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"), odd, w,
                                     dtype="int16x16")
        C[T.ramp(T.int32(0), 1, 8)] += (
            T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pe, T.int16x16(1),
                                    dtype="int32x8")
            + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), po, T.int16x16(1),
                                      dtype="int32x8"))


@T.prim_func(s_tir=True)
def _udot(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (8, 4), "uint8", offset_factor=1)
    C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        a16 = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 4),
                            dtype="uint8x16")
        for h in range(2):
            C[T.ramp(h * 4, 1, 4)] = T.reinterpret(T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.udot.v4i32.v16i8"),
                T.reinterpret(C.vload([h * 4], dtype="int32x4"), dtype="uint32x4"),
                a16, B.vload([h * 4, 0], dtype="uint8x16"), dtype="uint32x4"), dtype="int32x4")


AVX2, AVX2_SPLIT, UDOT = "mpq_dot8x4_avx2", "mpq_dot8x4_avx2_split", "mpq_dot8x4_udot"
s_tir.TensorIntrin.register(AVX2, _desc("int8"), _avx2)
s_tir.TensorIntrin.register(AVX2_SPLIT, _desc("int8"), _avx2_split)
s_tir.TensorIntrin.register(UDOT, _desc("uint8"), _udot)


def weight_offset(intrin: str | None, wbits: int) -> int:
    """What the decoded weights subtract so they fit the intrinsic's int8 (8-bit codes on x86)."""
    return 128 if intrin in (AVX2, AVX2_SPLIT) and wbits == 8 else 0


def dot_intrin(features, abits: int, wbits: int) -> str | None:
    f = set(features or ())
    if "dotprod" in f:
        return UDOT
    if "avx2" in f:
        wmax = 128 if wbits == 8 else (1 << wbits) - 1
        return AVX2 if 2 * ((1 << abits) - 1) * wmax <= 32767 else AVX2_SPLIT
    return None
