"""Scaled dot-product attention of diffusers' `Attention` block (the part between the projections,
which are dense layers): q, k, v [n, l, c] with `heads` heads of d = c / heads channels each,
    O[b, i, h*d:(h+1)*d] = softmax_j(q_h[i] . k_h[j] / sqrt(d)) @ v_h
with the stable softmax (the row max subtracted before exp). Output [n, l, c].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..tvm_compat import Schedule, te, tirx, tvm
from . import vmath
from .fp import LANE_CI, check_ints, lane_inputs, lanes, module, split_inner, vectorize, vectorize_inner


@dataclass(frozen=True)
class AttentionSpec:
    n: int
    l: int  # noqa: E741  (the sequence length, as in the papers)
    c: int
    heads: int

    def __post_init__(self):
        check_ints("attention", self, ("n", "l", "c", "heads"))
        if self.c % self.heads:
            raise ValueError(f"attention heads={self.heads} does not divide c={self.c}")

    @property
    def d(self) -> int:
        return self.c // self.heads


def attention_func(s: AttentionSpec) -> tirx.PrimFunc:
    q = te.placeholder((s.n, s.l, s.c), "float32", name="Q")
    k = te.placeholder((s.n, s.l, s.c), "float32", name="K")
    v = te.placeholder((s.n, s.l, s.c), "float32", name="V")
    d, f32 = s.d, "float32"
    scale = tirx.const(1.0 / math.sqrt(d), f32)
    kt = te.compute((s.n, s.heads, d, s.l), lambda b, h, r, j: k[b, j, h * d + r], name="KT")   # keys along j
    rd = te.reduce_axis((0, d), "rd")
    score = te.compute((s.n, s.heads, s.l, s.l), lambda b, h, i, j: te.sum(
        q[b, i, h * d + rd] * kt[b, h, rd, j], axis=rd), name="score")     # unscaled q.k
    jv = row_lanes(s.l)

    def row_reduce(x, combine, label):
        """Over j, as jv partial results a row (independent chains, one vector), then across them."""
        ro = te.reduce_axis((0, s.l // jv), f"{label}_ro")
        part = te.compute((s.n, s.heads, s.l, jv), lambda b, h, i, e: combine(
            x[b, h, i, ro * jv + e], axis=ro), name=f"{label}_part")
        re = te.reduce_axis((0, jv), f"{label}_re")
        return te.compute((s.n, s.heads, s.l), lambda b, h, i: combine(part[b, h, i, re], axis=re), name=label)

    rmax = row_reduce(score, te.max, "rmax")
    ex = te.compute(score.shape, lambda b, h, i, j: vmath.softmax_exp(
        score[b, h, i, j] * scale - rmax[b, h, i] * scale), name="ex")
    den = row_reduce(ex, te.sum, "den")
    rj = te.reduce_axis((0, s.l), "rj")
    acc = te.compute((s.n, s.l, s.c), lambda b, i, c: te.sum(ex[b, c // d, i, rj] * v[b, rj, c], axis=rj),
                     name="acc")
    out = te.compute((s.n, s.l, s.c), lambda b, i, c: acc[b, i, c] / den[b, c // d, i], name="O")
    return te.create_prim_func([q, k, v, out])


def row_lanes(l: int) -> int:  # noqa: E741
    """Partial results per row of a row reduction: a vector's worth where it divides l, else 1."""
    return lanes(l) if 1 < lanes(l) < l else 1


QUERY_ROWS = (4, 2, 1)      # query rows per task (a divisor of l): their output rows share each v load
WIDE_ROWS = (8, 4, 2, 1)    # with 32 vector registers (AVX-512): twice the accumulators


def schedule_attention(s: AttentionSpec, name: str = "attention", lane: bool = False,
                       wide: bool = False) -> tvm.IRModule:
    """One parallel task per (sample, tile of query rows): their scores, softmax and output rows are
    computed there (rows x heads x l floats of scratch per task, not the whole [heads, l, l] matrix).
    K is transposed once (keys contiguous along j), so a row's scores accumulate a vector of keys in
    a register over q's channels; the row max and sum run as vectors of partial results (row_lanes);
    the output accumulates exp-weighted values,
    one register per query row of the tile, and is divided by the row sum once at the end. `lane`
    (fp.lane_fma): q's and the exp-weights' values of a row are loaded 4 at a time (fp.lane_inputs);
    `wide` (fp.wide_registers): up to 8 query rows a task."""
    names = ("KT", "score", "rmax_part", "rmax", "ex", "den_part", "den", "acc", "O")
    sch = Schedule(module(attention_func(s), name))
    blk = {b: sch.get_sblock(b, func_name=name) for b in names}
    kb, kh = sch.get_loops(blk["KT"])[:2]              # the transposed keys first, (sample, head) parallel
    sch.parallel(sch.fuse(kb, kh))
    b, i, c = sch.get_loops(blk["O"])
    rows = next(r for r in (WIDE_ROWS if wide else QUERY_ROWS) if s.l % r == 0)
    io, ii = sch.split(i, [None, rows])
    for p in ("acc", "den", "den_part", "ex", "rmax", "rmax_part", "score"):     # consumers first
        sch.compute_at(blk[p], io, preserve_unit_loops=True)
    sch.parallel(sch.fuse(b, io))                      # before any reduction is split into init + update
    vectorize_inner(sch, c)                            # O = acc / den, along the channels
    srow, sj, srd = sch.get_loops(blk["score"])[-3:]
    sjo, sji = split_inner(sch, sj, s.l)
    if sjo is not None and sji is not None:
        sch.reorder(sjo, srd, srow, sji)
    elif sji is not None:
        sch.reorder(srd, srow, sji)
    vectorize(sch, sji)
    sch.unroll(srow)
    if lane and s.d % LANE_CI == 0:
        srd = lane_inputs(sch, blk["score"], srd)
    vectorize_inner(sch, sch.get_loops(blk["ex"])[-1])   # rows over j: contiguous
    if row_lanes(s.l) > 1:
        for p in ("rmax_part", "den_part"):             # partial results along j, the reduction outside
            e, ro = sch.get_loops(blk[p])[-2:]
            sch.reorder(ro, e)
            vectorize(sch, e)
            vectorize(sch, sch.get_loops(sch.decompose_reduction(blk[p], ro))[-1])
    # the output rows: per head (and channel vector), the reduction over j outside the tile's rows
    ai, ac, rj = sch.get_loops(blk["acc"])[-3:]
    v = lanes(s.d)
    h, cd = sch.split(ac, [s.heads, s.d])
    if v == s.d:
        sch.reorder(h, rj, ai, cd)
        vectorize(sch, cd)
    elif v > 1:
        co, cv = sch.split(cd, [None, v])
        sch.reorder(h, co, rj, ai, cv)
        vectorize(sch, cv)
    else:
        sch.reorder(h, cd, rj, ai)
    sch.unroll(ai)
    if lane and s.l % LANE_CI == 0:
        rj = lane_inputs(sch, blk["acc"], rj)
    vectorize_inner(sch, sch.get_loops(sch.decompose_reduction(blk["score"], srd))[-1])
    init = sch.decompose_reduction(blk["acc"], rj)
    if v > 1:                                # the init got its own copy of the vector loop
        vectorize(sch, sch.get_loops(init)[-1])
    return sch.mod
