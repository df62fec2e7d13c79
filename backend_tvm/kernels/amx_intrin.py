"""Intel AMX tensor intrinsics for the quantized conv (x86 with amx_int8: Sapphire Rapids and later).

One register tile of accumulators is M pixels x 16 output channels (int32; 8 for a group of 8); a
task's channel tile of TW = 16 nt channels keeps nt of them (tiles 0 .. nt-1) live over the whole
reduction:
- init: ldtilecfg (this kernel's tile shapes) and tilezero of the nt accumulators.
- update: C[M, TW] += A[M, KB] . B[KB/4, TW, 4], A the M pixels' KB input codes (uint8, rows
  strided by the pixel pitch: tile 4), B the decoded weights (int8 [quad][channel][4]: each 16-channel
  slice is one B tile with rows TW*4 bytes apart, tiles 5 and 6 in turn); one tdpbusd per 16 channels
  (u8 x s8 sums of 4 into int32, as vpdpbusd: exact at every width).
- store: tilestored of the nt accumulators into the conv's int32 accumulator rows, then tilerelease
  (an idle thread carries no tile state; the next init configures them again: no measurable cost).
The tile numbers are immediates; nothing else in the kernel uses tiles, so they stay live between
the three calls. Linux grants a process AMX state only on request: tvm_compat asks at import for
in-process runs, the C runtime's thread pool (runtime/src/mpq_backend.c) before main or on dlopen.
"""

from __future__ import annotations

from tvm.script import tirx as T

from ..tvm_compat import s_tir, tirx

ROWS = 16           # pixels a tile at most
A_TILE, B_TILES = 4, (5, 6)


def lanes(n_out: int) -> int:
    """A group's channel tile: 16 to 64 channels (1 to 4 accumulator tiles), the least padding, then
    the most tiles."""
    return min((64, 48, 32, 16, 8), key=lambda tw: (-(-n_out // tw) * tw, -tw))


def _tiles(tw: int) -> tuple[int, int]:
    """(accumulator tiles, channels a tile) of a TW-channel tile: 16 channels a tile, or one of 8."""
    return (1, 8) if tw == 8 else (tw // 16, 16)


def rows(n: int, ho: int, wo: int) -> int:
    """Pixels a tile: the largest divisor of an output row (a dense layer: of its rows) up to 16."""
    count = n if ho == 1 and wo == 1 else wo
    return next(m for m in range(ROWS, 0, -1) if count % m == 0)


def _call(name: str, *args):
    return T.call_llvm_intrin("void", name, *args)


def _u8(v: int):
    return T.uint8(v)


_REGISTERED: set[str] = set()


def names(m: int, kb: int, tw: int, dense: bool) -> tuple[str, str, str]:
    """(init, update, store) intrinsic names for M pixels, KB bytes of k and TW channels, registered
    on first use. `dense`: the M rows are a dense layer's first axis ([M, 1, 1, C] regions), not
    pixels of one row."""
    key = f"mpq_amx_m{m}_k{kb}_n{tw}{'_dense' if dense else ''}"
    out = (f"{key}_init", f"{key}_update", f"{key}_store")
    if out[0] not in _REGISTERED:
        s_tir.TensorIntrin.register(out[0], _init(m, kb, tw, dense, True), _init(m, kb, tw, dense, False))
        s_tir.TensorIntrin.register(out[1], _update(m, kb, tw, dense, True), _update(m, kb, tw, dense, False))
        s_tir.TensorIntrin.register(out[2], _store(m, tw, dense, True), _store(m, tw, dense, False))
        _REGISTERED.add(out[0])
    return out


def _config_words(m: int, kb: int, tw: int) -> list[int]:
    """The 64-byte tile configuration as 16 little-endian words: palette 1; tile t's bytes per row
    (u16) at byte 16 + 2t, its rows at byte 48 + t."""
    cfg = bytearray(64)
    cfg[0] = 1
    nt, w = _tiles(tw)
    shapes = {**{t: (m, 4 * w) for t in range(nt)}, A_TILE: (m, kb), **{b: (kb // 4, 4 * w) for b in B_TILES}}
    for t, (rows, colsb) in shapes.items():
        cfg[16 + 2 * t:18 + 2 * t] = colsb.to_bytes(2, "little")
        cfg[48 + t] = rows
    return [int.from_bytes(cfg[4 * w:4 * w + 4], "little") for w in range(16)]


def _pick(i, values: list[int]):
    """values[i] for a loop variable i (constant once the loop is unrolled)."""
    out = tirx.const(values[-1], "uint32")
    for k in range(len(values) - 2, -1, -1):
        out = tirx.Select(i == k, tirx.const(values[k], "uint32"), out)
    return out


def _init(m: int, kb: int, tw: int, dense: bool, desc: bool):
    """The accumulators' zeroing: description (desc), or ldtilecfg (this kernel's tile shapes) and tilezero."""
    words = _config_words(m, kb, tw)
    shape_c = _rows(m, tw, dense)

    @T.prim_func(s_tir=True)
    def func(c: T.handle) -> None:
        C = T.match_buffer(c, shape_c, "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads()
            T.writes(C[_full(shape_c)])
            if desc:
                for i, j in T.grid(m, tw):
                    with T.sblock("init"):
                        vi, vj = T.axis.remap("SS", [i, j])
                        C[_at(vi, vj, dense)] = 0
            else:
                cfg = T.alloc_buffer((16,), "uint32", scope="local")
                for w in T.unroll(16):
                    cfg[w] = _pick(w, words)
                T.evaluate(_call("llvm.x86.ldtilecfg", T.address_of(cfg[0])))
                for t in T.unroll(_tiles(tw)[0]):
                    T.evaluate(_call("llvm.x86.tilezero", T.Cast("uint8", t)))
    return func


def _rows(m: int, k: int, dense: bool) -> tuple:
    return (m, 1, 1, k) if dense else (m, k)


def _update(m: int, kb: int, tw: int, dense: bool, desc: bool):
    """The update's description (desc) or its AMX implementation."""
    shape_a = _rows(m, kb, dense)
    zeros = (0,) * (len(shape_a) - 1)

    @T.prim_func(s_tir=True)
    def func(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, s1, s2 = T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, shape_a, "uint8", strides=[sa, s1, s2, 1] if dense else [sa, 1], offset_factor=1)
        B = T.match_buffer(b, (kb // 4, tw, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, _rows(m, tw, dense), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[_full(_rows(m, tw, dense))], A[_full(shape_a)], B[0:kb // 4, 0:tw, 0:4])
            T.writes(C[_full(_rows(m, tw, dense))])
            if desc:
                for i, kq, j, k in T.grid(m, kb // 4, tw, 4):
                    with T.sblock("update"):
                        vi = T.axis.spatial(m, i)     # block vars in the conv's order: pixel, channel, k
                        vj = T.axis.spatial(tw, j)
                        vq = T.axis.reduce(kb // 4, kq)
                        vk = T.axis.reduce(4, k)
                        C[_at(vi, vj, dense)] = C[_at(vi, vj, dense)] + T.cast(
                            A[_at(vi, vq * 4 + vk, dense)], "int32") * T.cast(B[vq, vj, vk], "int32")
            else:
                T.evaluate(_call("llvm.x86.tileloadd64", _u8(A_TILE), T.address_of(A[(0, *zeros)]),
                                 T.Cast("int64", sa)))
                for t in T.unroll(_tiles(tw)[0]):
                    T.evaluate(_call("llvm.x86.tileloadd64", T.Cast("uint8", B_TILES[0] + t % 2),
                                     T.address_of(B[0, t * _tiles(tw)[1], 0]), T.int64(tw * 4)))
                    T.evaluate(_call("llvm.x86.tdpbusd", T.Cast("uint8", t), _u8(A_TILE),
                                     T.Cast("uint8", B_TILES[0] + t % 2)))
    return func


def _store(m: int, tw: int, dense: bool, desc: bool):
    """The accumulators' write-back: description (desc), or tilestored and tilerelease."""
    shape_d = _rows(m, tw, dense)
    zeros = (0,) * (len(shape_d) - 1)

    @T.prim_func(s_tir=True)
    def func(c: T.handle, d: T.handle) -> None:
        C = T.match_buffer(c, shape_d, "int32", offset_factor=1, scope="local")
        sd, s1, s2 = T.int32(), T.int32(), T.int32()
        D = T.match_buffer(d, shape_d, "int32", strides=[sd, s1, s2, 1] if dense else [sd, 1], offset_factor=1)
        with T.sblock("root"):
            T.reads(C[_full(shape_d)])
            T.writes(D[_full(shape_d)])
            if desc:
                for i, j in T.grid(m, tw):
                    with T.sblock("store"):
                        vi, vj = T.axis.remap("SS", [i, j])
                        D[_at(vi, vj, dense)] = C[_at(vi, vj, dense)]
            else:
                for t in T.unroll(_tiles(tw)[0]):
                    T.evaluate(_call("llvm.x86.tilestored64", T.Cast("uint8", t),
                                     T.address_of(D[(0, *zeros[:-1], t * _tiles(tw)[1])]), T.Cast("int64", sd * 4)))
                T.evaluate(_call("llvm.x86.tilerelease"))
    return func


def _full(shape):
    return tuple(slice(0, n) for n in shape)


def _at(i, k, dense: bool):
    return (i, 0, 0, k) if dense else (i, k)
