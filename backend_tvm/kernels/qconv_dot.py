"""Quantized conv on CPUs with an integer dot product we use (x86 AVX2 or AVX-VNNI, Arm dot product) or,
for low widths, Arm NEON's uint8 lane sums (dot_intrin.py).

Same arguments and result as kernels/qconv.py; the work is arranged for a 4-deep dot product:
- Xp: the input with its padding (the zero code za) and c_in rounded up to 4 (zeros), so the 4
  codes of one dot product are contiguous (the input itself where there is neither).
- Wd_g: one tile of TW output channels of group g (8; 16 with AVX512-VNNI: dot_intrin.lanes) decoded
  from the packed words into int8 [kq][TW][4] (minus an offset where 8-bit codes must fit int8). It
  is built inside the loop over channel tiles, so only TW x K bytes exist at a time: the packed
  weights are never expanded as a whole. Where c_in holds whole quads, in two vectorised steps: each
  channel's quad shifted down in its word (Wq_g), then spread into bytes (unpack_intrin.py).
- acc_g [N, Ho, Wo, 8 * tiles]: for each channel tile (parallel; with its rows split into chunks
  where the tiles do not share out over the board's threads), every output pixel in tiles of PIX (8) pixels
  accumulated in registers by the dot intrinsic (dot_intrin.py).
- rowsum (the patch sums) from per-pixel channel sums, and the epilogue as in qconv.py: one pass
  over the output whatever the number of groups. Per pixel, the groups' accumulators are first
  copied side by side (Acc, whole vectors), so each output gathers one value at its plan position;
  a layer of one group has its channels in their own order (scheme.weight_constants), so its
  epilogue reads its accumulators directly and never reads perm.
Parallel launches (each ends in a barrier): Xp with the per-pixel channel sums, every group's tiles
together (each of the board's threads takes its share of each group, where the shares come out even;
otherwise a launch per group), and the epilogue.
"""

from __future__ import annotations

import math

from mpqdm.core.packing import LANES, group_words, words_per_row
from mpqdm.core.scheme import ConvSpec, QConvArgs

from ..tvm_compat import Schedule, te, tirx, tvm
from . import amx_intrin, dot_intrin
from .qconv import packed_bits, qconv_inputs, qconv_output, weight_code
from .unpack_intrin import unpack_intrin, unpacked

PIX = 8


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def whole_quads(s: ConvSpec) -> bool:
    """c_in holds whole quads: quad kq is codes 4 kq .. 4 kq + 3 (the two-step weight unpacking)."""
    return s.c_in % 4 == 0


def row_chunks(tiles: int, rows: int, threads: int) -> int:
    """Row chunks per channel tile, so that a group's tasks (tiles x chunks) share out evenly over the
    board's threads: the smallest divisor of `rows` that makes them a multiple of `threads`, or at
    least 4 per thread. Each chunk decodes the tile's weights again (8 x K codes, about as dear as
    the tile's dot products over 16-32 pixels), so tiles that already share out are not split."""
    def fits(d: int) -> bool:
        return rows % d == 0 and ((tiles * d) % threads == 0 or tiles * d >= 4 * threads)

    return next((d for d in range(1, rows + 1) if fits(d)), rows)


SERIAL_MACS, SERIAL_MACS_AMX, SERIAL_INPUT = 1 << 19, 1 << 21, 1 << 14


def serial(s: ConvSpec, intrins: list[str]) -> bool:
    """A layer this small runs on one thread (no parallel launch): below 16K input codes and 512K
    multiply-adds (the time embedding's dense layers, conv_in), 2M where every group is on AMX tiles,
    whose arithmetic is cheap beside a launch and what two cores pass between them (the attention
    projections, 64 rows x 128 -> 128: 7.4 us on one thread of this Xeon, 8.3-9.5 us on two). conv_out
    (1 output channel over a 32x32x32 input) has few multiply-adds and still gains 1.6x from a second
    thread. Measured on the host's AMX and VNNI paths; the Arm paths' arithmetic costs more a
    multiply-add, hence the lower bound off AMX."""
    limit = SERIAL_MACS_AMX if all(i == dot_intrin.AMX for i in intrins) else SERIAL_MACS
    return s.n * s.ho * s.wo * s.c_out * s.k < limit and s.n * s.h * s.w * s.c_in < SERIAL_INPUT


def _group_acc(s: ConvSpec, xp, wd, c4: int, n_g: int, g: int, tw: int):
    r, q = te.reduce_axis((0, s.kh), "r"), te.reduce_axis((0, s.kw), "q")
    cq, cc = te.reduce_axis((0, c4 // 4), "cq"), te.reduce_axis((0, 4), "cc")
    return te.compute((s.n, s.ho, s.wo, _ceil(n_g, tw) * tw), lambda n, i, j, o: te.sum(
        xp[n, i * s.stride + r, j * s.stride + q, cq * 4 + cc].astype("int32")
        * wd[tirx.floordiv(o, tw), (r * s.kw + q) * (c4 // 4) + cq, tirx.floormod(o, tw), cc].astype("int32"),
        axis=[r, q, cq, cc]), name=f"acc{g}")


def qconv_dot_compute(s: ConvSpec, intrins: list[str], with_epilogue: bool = True):
    """`intrins`: the intrinsic name of every group (dot_intrin.py)."""
    a = qconv_inputs(s)
    x, wp, perm, sw, zw, colsum, bias, act, az = a.x, a.wp, a.perm, a.sw, a.zw, a.colsum, a.bias, a.act, a.az
    c4 = _ceil(s.c_in, 4) * 4

    def xp_value(n, i, j, c):
        ii, jj = i - s.pad, j - s.pad
        inside = tirx.all(ii >= 0, ii < s.h, jj >= 0, jj < s.w)
        return tirx.if_then_else(c >= s.c_in, tirx.const(0, "uint8"),
                                 tirx.if_then_else(inside, x[n, ii, jj, c], az[0].astype("uint8")))

    # no padding and whole quads (most 1x1 convs): the input itself serves
    direct = s.pad == 0 and s.c_in == c4
    xp = x if direct else te.compute((s.n, s.h + 2 * s.pad, s.w + 2 * s.pad, c4), xp_value, name="Xp")

    def decoded(g, off, n_g, b, intrin, tw):
        wdtype = "uint8" if intrin in dot_intrin.UNSIGNED else "int8"
        offset = dot_intrin.weight_offset(intrin, b)
        cq = c4 // 4
        shape = (_ceil(n_g, tw), s.kh * s.kw * cq, tw, 4)
        if whole_quads(s):
            return quad_decoded(g, off, n_g, b, tw, shape, offset, wdtype)

        def value(t, kq, lane, cc):
            o = t * tw + lane
            rq, ci = tirx.floordiv(kq, cq), tirx.floormod(kq, cq) * 4 + cc
            code = weight_code(wp, off, o, rq * s.c_in + ci, s.k, b) - offset
            return tirx.if_then_else(tirx.all(o < n_g, ci < s.c_in), code, 0).astype(wdtype)

        return te.compute(shape, value, name=f"Wd{g}")

    def quad_decoded(g, off, n_g, b, tw, shape, offset, wdtype):
        # each channel's quad shifted to the low 4b bits of a word (Wq, one shift per channel and
        # quad), then its 4 codes spread into bytes (Wd, unpack_intrin). Channels past the packed
        # tiles (a 16-lane tile over an odd number of 8-lane ones) read the last packed one: their
        # sums are never used.
        last, wpr = _ceil(n_g, LANES) - 1, words_per_row(s.k, b)

        def channel(t, lane):       # clamped per packed tile, so 8 lanes read 8 contiguous words
            packed = tirx.min(t * (tw // LANES) + tirx.floordiv(lane, LANES), last)
            return packed * LANES + tirx.floormod(lane, LANES)

        wq = te.compute(shape[:3], lambda t, kq, lane: packed_bits(
            wp, off, channel(t, lane), kq * (4 * b), wpr, 4 * b).astype("uint32"), name=f"Wq{g}")
        return te.compute(shape, lambda t, kq, lane, cc: unpacked(wq[t, kq, lane], cc, b, offset, wdtype),
                          name=f"Wd{g}")

    accs, start, off = [], 0, 0
    for g, (n_g, b) in enumerate(s.groups):
        tw = dot_intrin.lanes(intrins[g], n_g)
        acc = _group_acc(s, xp, decoded(g, off, n_g, b, intrins[g], tw), c4, n_g, g, tw)
        accs.append((start, n_g, acc, dot_intrin.weight_offset(intrins[g], b)))
        start += n_g
        off += group_words(s.k, n_g, b)
    # the patch sum of every output pixel, from per-pixel channel sums: (kh kw + c_in / Ho Wo) adds each
    c = te.reduce_axis((0, c4), "c")
    xsum = te.compute(xp.shape[:3], lambda n, i, j: te.sum(xp[n, i, j, c].astype("int32"), axis=c), name="xsum")
    r, q = te.reduce_axis((0, s.kh), "r"), te.reduce_axis((0, s.kw), "q")
    rowsum = te.compute((s.n, s.ho, s.wo), lambda n, i, j: te.sum(
        xsum[n, i * s.stride + r, j * s.stride + q], axis=[r, q]), name="rowsum")

    # what depends on the channel alone, once a call: the zero-point terms (and below the gather position)
    fixed = te.compute((s.c_out,), lambda ch: s.k * zw[ch] * az[0] - az[0] * colsum[ch], name="Fixed")
    if len(accs) == 1:      # one group: plan order is the channels' own (scheme.weight_constants), no gather
        (_, _, acc, offset), = accs

        def direct(n, i, j, ch):
            return acc[n, i, j, ch] + (offset - zw[ch]) * rowsum[n, i, j] + fixed[ch]

        y = qconv_output(s, direct, sw, bias, act, with_epilogue)
        return list(QConvArgs(x, wp, perm, sw, zw, colsum, bias, act, az, y).ordered())

    # every group's accumulators side by side in one row per pixel ("Acc": group g at the padded
    # position pad_g, a multiple of 8), chosen per 8-channel block so the copies are whole vectors;
    # the epilogue then reads each channel with one gather at its padded plan position
    pads, width = [], 0
    for _, _, acc, _ in accs:
        pads.append(width)
        width += acc.shape[-1]

    def plan_row(n, i, j, c):
        blk8, out = tirx.floordiv(c, 8), None
        # built from the last group so that the first is the outermost Select's value: TE then orders
        # the groups' blocks first to last, which the merged launch of their tiles needs
        for (_, _, acc, offset), pad in reversed(list(zip(accs, pads, strict=True))):
            at = tirx.max(tirx.min(blk8 - pad // 8, acc.shape[-1] // 8 - 1), 0) * 8 + tirx.floormod(c, 8)
            v = acc[n, i, j, at] + (offset * rowsum[n, i, j] if offset else 0)
            out = v if out is None else tirx.if_then_else(blk8 < (pad + acc.shape[-1]) // 8, v, out)
        return out

    row = te.compute((s.n, s.ho, s.wo, width), plan_row, name="Acc")

    def padded(ch):       # plan -> padded position: plus the earlier groups' padding
        p = perm[ch]
        for st, n_g, acc, _ in accs[:-1]:
            p = p + tirx.Select(perm[ch] >= st + n_g, acc.shape[-1] - n_g, 0)
        return p

    at = te.compute((s.c_out,), padded, name="At")

    def corrected(n, i, j, ch):
        pos = tirx.max(tirx.min(at[ch], width - 1), 0)      # bounded for TVM; a valid perm needs no clamp
        return row[n, i, j, pos] - zw[ch] * rowsum[n, i, j] + fixed[ch]

    y = qconv_output(s, corrected, sw, bias, act, with_epilogue)
    return list(QConvArgs(x, wp, perm, sw, zw, colsum, bias, act, az, y).ordered())


def _tile_loop(sch, block, outer):
    """The outermost loop of `block` under `outer` that is not of extent 1 (the write-back's pixels)."""
    loops = list(sch.get_loops(block))
    below = loops[[sch.get(x).same_as(sch.get(outer)) for x in loops].index(True) + 1:]
    return next(x for x in below if int(sch.get(x).extent) > 1)


def schedule_qconv_dot(spec: ConvSpec, intrins: list[tuple[str, int]], with_epilogue: bool = True,
                       name: str = "qconv", threads: int = 1) -> tvm.IRModule:
    """`intrins`: (intrinsic, k-quads per call) of every group; `threads`: the board's."""
    names = [i for i, _ in intrins]
    small = serial(spec, names)
    threads = 1 if small else threads
    func = te.create_prim_func(qconv_dot_compute(spec, names, with_epilogue))
    sch = Schedule(tvm.IRModule({name: func.with_attr("global_symbol", name)}))

    def parallel(loop):         # no launch at all in a layer that runs on one thread
        if not small:
            sch.parallel(loop)

    blk = lambda b: sch.get_sblock(b, func_name=name)  # noqa: E731
    dense = spec.ho == 1                        # a dense layer's rows are n, a conv's its output rows
    amx = [i == dot_intrin.AMX for i, _ in intrins]
    # pixels a register tile (AMX: a tile's rows): a conv's along its output row, a dense layer's along
    # its rows (n)
    pixs = [amx_intrin.rows(spec.n, spec.ho, spec.wo) if a else
            next(p for p in (PIX, 4, 2, 1) if (spec.n if dense else spec.wo) % p == 0) for a in amx]
    row_tiles = [dense and p > 1 for p in pixs]
    tws = [dot_intrin.lanes(i, n_g) for (i, _), (n_g, _) in zip(intrins, spec.groups, strict=True)]
    chunks = [row_chunks(_ceil(n_g, tw), spec.n // p if rt else spec.n if dense else spec.ho, threads)
              for (n_g, _), tw, p, rt in zip(spec.groups, tws, pixs, row_tiles, strict=True)]
    # the groups' tasks as one parallel launch, `threads` slices each taking its share of every
    # group (no barrier between groups: they write disjoint accumulators), where they divide evenly
    def even(tiles: int, c: int) -> bool:      # tiles x c tasks cut into `threads` slices along tiles or chunks
        per = tiles * c // threads             # (slices inside a tile's chunks only for one tile: TVM cannot
        return tiles * c % threads == 0 and (per % c == 0 or (tiles == 1 and c % per == 0))  # tensorize others)

    merged = threads > 1 and len(spec.groups) > 1 and all(
        even(_ceil(n_g, tw), c) for (n_g, _), c, tw in zip(spec.groups, chunks, tws, strict=True))
    if not (spec.pad == 0 and spec.c_in % 4 == 0):
        n, i, j, c = sch.get_loops(blk("Xp"))
        padded = sch.fuse(n, i)
        parallel(padded)
        if spec.c_in % 4 == 0 and spec.c_in <= 64:
            sch.vectorize(c)
        sch.reverse_compute_at(blk("xsum"), padded)     # the patch sums' pixel sums in the same launch
    else:
        n, i = sch.get_loops(blk("xsum"))[:2]
        parallel(sch.fuse(n, i))
    slices, inner = [], []
    for g in range(len(spec.groups)):
        n, i, j, o, r, q, cq, cc = sch.get_loops(blk(f"acc{g}"))
        ot, ol = sch.split(o, [None, tws[g]])
        cq, cqi = sch.split(cq, [None, intrins[g][1]])
        if row_tiles[g]:        # tiles of `pix` rows
            jt, ji = sch.split(n, [None, pixs[g]])
            sch.reorder(ot, jt, i, j, r, q, cq, ji, cqi, ol, cc)
        else:
            jt, ji = sch.split(j, [None, pixs[g]])
            sch.reorder(ot, n, i, jt, r, q, cq, ji, cqi, ol, cc)
        task = ot
        if chunks[g] > 1:       # few channel tiles: rows split too, so every thread gets work
            rc, rest = sch.split(jt if row_tiles[g] else n if dense else i, [chunks[g], None])
            jt = rest if row_tiles[g] else jt
            if not dense:
                sch.reorder(ot, rc, n)
            task = sch.fuse(ot, rc)
        if merged:
            part, task = sch.split(task, [threads, None])
            slices.append(part)
        else:
            parallel(task)
        inner.append((task, jt, r, ji, cqi, ol))
    if merged:
        sch.parallel(sch.merge(*slices))
    for g, (task, jt, r, ji, cqi, ol) in enumerate(inner):
        acc = blk(f"acc{g}")
        sch.compute_at(blk(f"Wd{g}"), task)
        if whole_quads(spec):                 # the two-step decode (quad_decoded)
            kq, lane, _ = sch.get_loops(blk(f"Wd{g}"))[-3:]
            cycle = 32 // math.gcd(32, 4 * spec.groups[g][1])   # quads until the bit offset repeats
            if cycle > 1 and int(sch.get(kq).extent) % cycle == 0:
                kq = sch.split(kq, [None, cycle])[1]     # unrolled: constant word offsets and shifts
                sch.unroll(kq)
            sch.compute_at(blk(f"Wq{g}"), kq)
            sch.vectorize(sch.split(sch.get_loops(blk(f"Wq{g}"))[-1], [None, LANES])[1])   # a packed tile's words
            b, intrin = spec.groups[g][1], intrins[g][0]
            sch.tensorize(sch.split(lane, [None, 8])[1], unpack_intrin(
                b, dot_intrin.weight_offset(intrin, b), "uint8" if intrin in dot_intrin.UNSIGNED else "int8"))
        local = sch.cache_write(acc, 0, "local")
        sch.reverse_compute_at(local, jt)
        init = sch.decompose_reduction(acc, r)
        intrin, quads = intrins[g]
        if amx[g]:      # the accumulators stay in tiles from init to write-back
            names = amx_intrin.names(pixs[g], 4 * quads, tws[g], dense)
            sch.tensorize(sch.get_loops(init)[-2], names[0])
            sch.tensorize(ji, names[1])
            sch.tensorize(_tile_loop(sch, local, jt), names[2])
            continue
        sch.vectorize(sch.get_loops(init)[-1])
        sch.tensorize(cqi if quads > 1 else ol, intrin)
        sch.unroll(ji)
    y = blk("Y")
    n, i, j, c = sch.get_loops(y)
    parallel(sch.fuse(n, i))
    if len(spec.groups) > 1:
        sch.compute_at(blk("Acc"), j)
        sch.vectorize(sch.split(sch.get_loops(blk("Acc"))[-1], [None, 8])[1])
    sch.compute_at(blk("rowsum"), j)
    if spec.c_out % 8 == 0:     # 8 channels a vector (gathered from Acc where there are several groups)
        sch.vectorize(sch.split(c, [None, 8])[1])
    return sch.mod
