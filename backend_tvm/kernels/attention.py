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
from .fp import check_ints, lanes, module, vectorize, vectorize_inner


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
    rd = te.reduce_axis((0, d), "rd")
    score = te.compute((s.n, s.heads, s.l, s.l), lambda b, h, i, j: te.sum(
        q[b, i, h * d + rd] * k[b, j, h * d + rd], axis=rd), name="score")     # unscaled q.k
    rj = te.reduce_axis((0, s.l), "rj")
    rmax = te.compute((s.n, s.heads, s.l), lambda b, h, i: te.max(score[b, h, i, rj], axis=rj), name="rmax")
    ex = te.compute(score.shape, lambda b, h, i, j: vmath.exp(score[b, h, i, j] * scale - rmax[b, h, i] * scale),
                    name="ex")
    rj = te.reduce_axis((0, s.l), "rj")
    den = te.compute((s.n, s.heads, s.l), lambda b, h, i: te.sum(ex[b, h, i, rj], axis=rj), name="den")
    prob = te.compute(score.shape, lambda b, h, i, j: ex[b, h, i, j] / den[b, h, i], name="prob")
    rj = te.reduce_axis((0, s.l), "rj")
    out = te.compute((s.n, s.l, s.c), lambda b, i, c: te.sum(
        prob[b, c // d, i, rj] * v[b, rj, c], axis=rj), name="O")
    return te.create_prim_func([q, k, v, out])


def schedule_attention(s: AttentionSpec, name: str = "attention") -> tvm.IRModule:
    """One parallel task per (sample, query row): its scores, softmax and output row are computed
    there (heads x l floats of scratch per task, not the whole [heads, l, l] matrix)."""
    sch = Schedule(module(attention_func(s), name))
    blk = {b: sch.get_sblock(b, func_name=name) for b in ("score", "rmax", "ex", "den", "prob", "O")}
    b, i, c, rj = sch.get_loops(blk["O"])
    for p in ("prob", "den", "ex", "rmax", "score"):     # consumers first
        sch.compute_at(blk[p], i, preserve_unit_loops=True)
    for p in ("ex", "prob"):                              # rows over j: contiguous
        vectorize_inner(sch, sch.get_loops(blk[p])[-1])
    # the output row: per head, the reduction over j outside a vector of the head's channels
    v = lanes(s.d)
    _, cd = sch.split(c, [s.heads, s.d])
    if v == s.d:
        sch.reorder(rj, cd)
        vectorize(sch, cd)
    elif v > 1:
        _, cv = sch.split(cd, [None, v])
        sch.reorder(rj, cv)
        vectorize(sch, cv)
    sch.parallel(sch.fuse(b, i))
    init = sch.decompose_reduction(blk["O"], rj)
    if v > 1:                                # the init got its own copy of the vector loop
        vectorize(sch, sch.get_loops(init)[-1])
    return sch.mod
