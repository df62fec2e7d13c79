"""Our 8-lane (16 with AVX512-VNNI) x 4-deep integer dot-product intrinsics for tensorize:

    C[i] += sum_k int32(A[k]) * int32(B[i, k])      A: 4 activation codes (uint8), B: 8 lanes x 4 weights

C is a register tile (scope "local", from cache_write). The description is shared; each
implementation maps it to one CPU's instructions:
- "mpq_dot8x4_avx2": vpmaddubsw (u8 x s8, pairs summed to int16 with saturation) then vpmaddwd by
  ones (int32). Exact only when a pair sum cannot saturate: 2 (2^a - 1) max|w| <= 32767.
- "mpq_dot8x4_avx2_split": the same with odd and even k in separate vpmaddubsw calls (each pair
  holds one product, |product| <= 255 * 128 fits int16): exact for every 8-bit input, twice the work.
- "mpq_dot8x4_vnni": one vpdpbusd (AVX-VNNI, 256-bit: u8 x s8, 4 products summed into int32, no
  saturation): exact for every width, one instruction where AVX2 needs two to four.
- "mpq_dot16x4_vnni": the same on 512 bits (AVX512-VNNI), 16 channels a call, for groups of >= 16.
- "mpq_dot8x4_udot": two Arm udot (u8 x u8 -> u32, 4 lanes each); weights are unsigned codes.
- "mpq_dot8x16_udot": 4 quads a call from one 16-byte load of A, each quad's udot by element (no
  ld1r and address add per quad: about half the instructions around the udot).
- "mpq_dot8x8_avx2", "mpq_dot8x16_avx2": 2 or 4 quads per call, their int16 pair sums added
  before one vpmaddwd (low-bit weights and activations leave room in int16).
- "mpq_dot8x{4q}_neon" (q = 1, 2, 4, 8): Arm NEON without the dot product (Cortex-A72): q quads of
  u8 x u8 products summed in uint8 lanes (mul/mla .16b: 16 products an instruction, where an int8
  kernel's smull/sadalp gets 8 per two), then two pairwise widening adds (uaddlp) to int32 per call.
  Exact while q (2^a - 1)(2^w - 1) <= 255: low widths get more quads a call.
- "mpq_dot8x{4q}_neon16" (q = 1, 2, 4): the Cortex-A72's wide widths (8-bit layers, W4A8, ...), where a
  uint8 lane cannot hold a product: umull (u8 x u8 -> u16, 8 products) and a pairwise widening add
  into int32 (channel, k-pair) sums per quad, the k pairs added once a call (addp).
`dot_intrin(board_features, abits, wbits, c_in, n_out)` picks one, or None where the plain loop must be
used; `lanes(intrin)` is its channel tile.
"""

from __future__ import annotations

from tvm.script import tirx as T

from ..tvm_compat import s_tir, tirx
from . import amx_intrin

LANES, DEPTH = 8, 4


def _desc(wdtype: str, lanes: int = 8):
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), wdtype, offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, 4):
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


def _vnni(lanes: int):
    """One vpdpbusd: 256-bit (AVX-VNNI) for 8 lanes, 512-bit (AVX512-VNNI) for 16."""
    name = f"llvm.x86.avx512.vpdpbusd.{32 * lanes}"

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            a4 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(name), C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(a4, lanes), dtype=f"int8x{4 * lanes}"),
                B.vload([0, 0], dtype=f"int8x{4 * lanes}"), dtype=f"int32x{lanes}")
    return impl


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


def _deep_desc(q: int, wdtype: str = "int8"):
    """C[i] += sum over q quads of A[4 kq + k] * B[kq, i, k]: q consecutive k-quads in one call."""
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4 * q,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (q, 8, 4), wdtype, offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4 * q], B[0:q, 0:8, 0:4])
            T.writes(C[0:8])
            for kq, i, k in T.grid(q, 8, 4):
                with T.sblock("update"):
                    vi = T.axis.spatial(8, i)      # block vars in the conv's order: channel, then k
                    vq = T.axis.reduce(q, kq)
                    vk = T.axis.reduce(4, k)
                    C[vi] = C[vi] + T.cast(A[vq * 4 + vk], "int32") * T.cast(B[vq, vi, vk], "int32")
    return desc


def _pair_sums(A, B, q: int):
    """int16 pair sums of q quads added in int16 (vpaddw): exact while q 2 (2^a-1) max|w| <= 32767."""
    total = None
    for j in range(q):
        a4 = tirx.reinterpret("int32", A.vload([4 * j], "uint8x4"))
        p = tirx.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw",
                                       tirx.reinterpret("uint8x32", tirx.Broadcast(a4, 8)),
                                       B.vload([j, 0, 0], "int8x32"))
        total = p if total is None else total + p
    return total


def _avx2_deep(q: int):
    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4 * q,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (q, 8, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4 * q], B[0:q, 0:8, 0:4])
            T.writes(C[0:8])
            pairs = T.meta_var(_pair_sums(A, B, q))
            C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.int16x16(1), dtype="int32x8")
    return impl


def _quad(A, q: int, j: int):
    """Quad j of A's q quads in all four 32-bit lanes (uint8x16): one load of the q quads, then a lane
    broadcast (dup / the by-element forms), where a load per quad costs an address add and ld1r each."""
    if q == 1:
        return tirx.reinterpret("uint8x16", tirx.Broadcast(tirx.reinterpret("int32", A.vload([0], "uint8x4")), 4))
    quads = tirx.reinterpret(f"int32x{q}", A.vload([0], f"uint8x{4 * q}"))
    inputs = [quads] * max(1, 4 // q)           # a shuffle yields at most as many lanes as it reads
    return tirx.reinterpret("uint8x16", tirx.Shuffle(inputs, [tirx.const(j, "int32")] * 4))


def _udot_quads(C, A, B, q: int):
    """C[0:8] after q quads of udot, 4 channels a call."""
    acc = [C.vload([h * 4], dtype="int32x4") for h in range(2)]
    for j in range(q):
        a16 = _quad(A, q, j)
        for h in range(2):
            acc[h] = tirx.reinterpret("int32x4", tirx.call_llvm_pure_intrin(
                "uint32x4", "llvm.aarch64.neon.udot.v4i32.v16i8", tirx.reinterpret("uint32x4", acc[h]),
                B.vload([j, h * 4, 0], "uint8x16"), a16))
    return acc


@T.prim_func(s_tir=True)
def _udot4(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (16,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (4, 8, 4), "uint8", offset_factor=1)
    C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope="local")
    with T.sblock("root"):
        T.reads(C[0:8], A[0:16], B[0:4, 0:8, 0:4])
        T.writes(C[0:8])
        acc = T.meta_var(_udot_quads(C, A, B, 4))
        C[T.ramp(T.int32(0), 1, 4)] = acc[0]
        C[T.ramp(T.int32(4), 1, 4)] = acc[1]


def _neon_u8(A, B, q: int, half: int):
    """Channels 4 half .. 4 half + 3: q quads of u8 products summed in uint8 lanes (channel, k), then
    pairwise-widened twice (uaddlp) to one int32 per channel."""
    total = None
    for j in range(q):
        p = _quad(A, q, j) * B.vload([j, 4 * half, 0], "uint8x16")
        total = p if total is None else total + p
    h = tirx.call_llvm_pure_intrin("uint16x8", "llvm.aarch64.neon.uaddlp.v8i16.v16i8", total)
    w = tirx.call_llvm_pure_intrin("uint32x4", "llvm.aarch64.neon.uaddlp.v4i32.v8i16", h)
    return tirx.reinterpret("int32x4", w)


def _neon(q: int, halves=None):
    """q quads a call, each 4-channel half's int32x4 sums from `halves(A, B, q, half)` (uint8 lane sums
    by default)."""
    halves = halves or _neon_u8

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4 * q,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (q, 8, 4), "uint8", offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4 * q], B[0:q, 0:8, 0:4])
            T.writes(C[0:8])
            lo = T.meta_var(halves(A, B, q, 0))
            hi = T.meta_var(halves(A, B, q, 1))
            C[T.ramp(T.int32(0), 1, 4)] += lo
            C[T.ramp(T.int32(4), 1, 4)] += hi
    return impl


def _neon16_quads(A, B, q: int, half: int):
    """Channels 4 half .. 4 half + 3 after q quads of u16 products: [ch 4h, 4h+1] and [4h+2, 4h+3] pair
    sums (uint32x4 each, pairwise-widened per quad), their k pairs added by addp."""
    sums = [None, None]
    for j in range(q):
        a8 = tirx.reinterpret("uint8x8", tirx.Broadcast(tirx.reinterpret("int32", A.vload([4 * j], "uint8x4")), 2))
        for side in range(2):
            p = tirx.call_llvm_pure_intrin("uint16x8", "llvm.aarch64.neon.umull.v8i16", a8,
                                           B.vload([j, 4 * half + 2 * side, 0], "uint8x8"))
            w = tirx.call_llvm_pure_intrin("uint32x4", "llvm.aarch64.neon.uaddlp.v4i32.v8i16", p)
            sums[side] = w if sums[side] is None else sums[side] + w
    return tirx.reinterpret("int32x4", tirx.call_llvm_pure_intrin("uint32x4", "llvm.aarch64.neon.addp.v4i32",
                                                                   sums[0], sums[1]))


AVX2, AVX2_SPLIT, UDOT = "mpq_dot8x4_avx2", "mpq_dot8x4_avx2_split", "mpq_dot8x4_udot"
VNNI, VNNI512 = "mpq_dot8x4_vnni", "mpq_dot16x4_vnni"
DEEP = {q: f"mpq_dot8x{4 * q}_avx2" for q in (2, 4)}
s_tir.TensorIntrin.register(AVX2, _desc("int8"), _avx2)
s_tir.TensorIntrin.register(AVX2_SPLIT, _desc("int8"), _avx2_split)
s_tir.TensorIntrin.register(UDOT, _desc("uint8"), _udot)
s_tir.TensorIntrin.register(VNNI, _desc("int8"), _vnni(8))
s_tir.TensorIntrin.register(VNNI512, _desc("int8", 16), _vnni(16))

for _q, _name in DEEP.items():
    s_tir.TensorIntrin.register(_name, _deep_desc(_q), _avx2_deep(_q))
NEON = {q: f"mpq_dot8x{4 * q}_neon" for q in (1, 2, 4, 8)}
for _q, _name in NEON.items():
    s_tir.TensorIntrin.register(_name, _desc("uint8") if _q == 1 else _deep_desc(_q, "uint8"), _neon(_q))
NEON16 = {q: f"mpq_dot8x{4 * q}_neon16" for q in (1, 2, 4)}
for _q, _name in NEON16.items():
    s_tir.TensorIntrin.register(_name, _desc("uint8") if _q == 1 else _deep_desc(_q, "uint8"), _neon(_q, _neon16_quads))
UDOT4 = "mpq_dot8x16_udot"
s_tir.TensorIntrin.register(UDOT4, _deep_desc(4, "uint8"), _udot4)
UNSIGNED = {UDOT, UDOT4, *NEON.values(), *NEON16.values()}     # weights as unsigned codes (u8 x u8 products)


AMX = "mpq_amx"     # Intel AMX tiles: a family of intrinsics per tile shape (amx_intrin.py)


def lanes(intrin: str, n_out: int = LANES) -> int:
    """Output channels per call: a channel tile of the tensorised conv (AMX: of a group of n_out)."""
    if intrin == AMX:
        return amx_intrin.lanes(n_out)
    return 16 if intrin == VNNI512 else LANES


def weight_offset(intrin: str | None, wbits: int) -> int:
    """What the decoded weights subtract so they fit the intrinsic's int8 (8-bit codes on x86)."""
    return 128 if intrin is not None and intrin not in UNSIGNED and wbits == 8 else 0


def dot_intrin(features, abits: int, wbits: int, c_in: int = 4, n_out: int = 8) -> tuple[str, int] | None:
    """(intrinsic, quads per call) for this CPU and widths, or None. On AVX2 the pair sums of up to
    4 quads add in int16 (one vpmaddwd per 16 k instead of per 4) where they cannot overflow and
    c_in holds whole calls: the low-bit configurations do less work per MAC."""
    f = set(features or ())
    if "amx_int8" in f and n_out >= 8 and c_in % 16 == 0:    # k in tiles of 64, 32 or 16 bytes
        return AMX, next(q for q in (16, 8, 4) if c_in % (4 * q) == 0)
    if "dotprod" in f:       # 4 quads a call where c_in holds them: one 16-byte load of A, by-element udot
        return (UDOT4, 4) if c_in % 16 == 0 else (UDOT, 1)
    if "avx512vnni" in f and n_out >= 16:      # a group of at least 16 channels: 16-lane tiles
        return VNNI512, 1
    if "avx_vnni" in f:
        return VNNI, 1
    if "neon" in f and "avx2" not in f:     # uint8 lane sums: as many quads a call as stay exact
        most = 255 // (((1 << abits) - 1) * ((1 << wbits) - 1))
        if most == 0:                        # a product needs 16 bits
            q = next((q for q in (4, 2) if c_in % (4 * q) == 0), 1)
            return NEON16[q], q
        q = next((q for q in (8, 4, 2) if q <= most and c_in % (4 * q) == 0), 1)
        return NEON[q], q
    if "avx2" in f:
        pair = 2 * ((1 << abits) - 1) * (128 if wbits == 8 else (1 << wbits) - 1)
        if pair > 32767:
            return AVX2_SPLIT, 1
        for q in (4, 2):
            if q * pair <= 32767 and c_in % (4 * q) == 0:
                return DEEP[q], q
        return AVX2, 1
    return None
