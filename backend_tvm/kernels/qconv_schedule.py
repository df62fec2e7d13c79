"""CPU schedule of the quantized conv.

For a tile of PIXELS output pixels of one row (a dense layer: PIXELS rows), every group's
accumulators are computed with the output channels' lanes innermost and vectorised: one load of
LANES packed words serves LANES channels (the packing interleaves them), one shift and mask give
their codes for one k, and the unrolled pixel loop reuses those codes PIXELS times. Rows (or row
tiles) run in parallel. `schedule_qconv(spec, board)` returns an IRModule holding one PrimFunc.

A board whose CPU has an integer dot product we use (AVX2 or AVX-VNNI on x86-64, the Arm dot product) gets
the tensorised kernel of qconv_dot.py instead, as do the low widths on Arm NEON without it (Cortex-A72:
uint8 lane sums); this plain schedule serves the rest.
"""

from __future__ import annotations

from dataclasses import replace

from mpqdm.core.errors import UserError
from mpqdm.core.packing import LANES
from mpqdm.core.scheme import ConvSpec

from ..tvm_compat import Schedule, tvm
from . import amx_intrin
from .dot_intrin import dot_intrin
from .qconv import qconv_func, swar
from .qconv_dot import schedule_qconv_dot

PIXELS = 4
# Kernel paths: the instruction families a group can take, best first. A group on path P sees the
# board's features less those of the families above P (ConvSpec.kernels; "": all of them, the rule).
PATHS = (("amx", ("amx_int8",)), ("vnni", ("avx512vnni", "avx_vnni")), ("avx2", ("avx2",)),
         ("udot", ("dotprod",)), ("neon", ("neon",)))
PATH_NAMES = tuple(p for p, _ in PATHS)


def path_features(features, path: str) -> tuple[str, ...]:
    """The features a group on `path` may use."""
    if not path:
        return tuple(features)
    if path not in PATH_NAMES:
        raise UserError(f"unknown kernel path {path!r}. Possible solutions: one of {', '.join(PATH_NAMES)}, "
                        "or profile the board again")
    above = {f for p, fs in PATHS[:PATH_NAMES.index(path)] for f in fs}
    return tuple(f for f in features if f not in above)


def family(intrin: str | None) -> str:
    """The path an intrinsic belongs to (dot_intrin's names carry it; "plain": the schedule without one)."""
    return "plain" if intrin is None else next(p for p in PATH_NAMES if p in intrin)


def dot_intrins(spec: ConvSpec, board) -> list[tuple[str, int]] | None:
    """The dot-product intrinsic (and quads per call) of every group on this board, or None for the
    plain schedule."""
    features = board.cpu_features if board is not None else ()
    if spec.stride != 1 or amx_intrin.rows(spec.n, spec.ho, spec.wo) < 4:   # AMX tiles: pixels 1 apart, 4+ a tile
        features = tuple(f for f in features if f != "amx_int8")
    intrins = [dot_intrin(path_features(features, spec.kernel(g)), spec.abits, b, spec.c_in, n)
               for g, (n, b) in enumerate(spec.groups)]
    return None if None in intrins else intrins


def with_paths(spec: ConvSpec, board, choose) -> ConvSpec:
    """The layer with each group on the path `choose(shape key, wbits, abits)` names (None or "":
    the rule's); a choice that would leave a group without an intrinsic is dropped."""
    paths = tuple((choose(spec.shape_key(), b, spec.abits) or "") if choose else "" for _, b in spec.groups)
    if not any(paths):
        return spec
    chosen = replace(spec, kernels=paths)
    return chosen if dot_intrins(chosen, board) is not None or dot_intrins(spec, board) is None else spec


def kernel_paths(spec: ConvSpec, board) -> list[str]:
    """The distinct paths a one-width layer can take on this board, the rule's first: what
    `mpqdm profile` times side by side so that compile can take the faster."""
    found = []
    for path in ("", *PATH_NAMES):
        intrins = dot_intrins(replace(spec, kernels=(path,) * len(spec.groups)), board)
        fam = family(intrins[0][0] if intrins else None)
        if fam != "plain" and fam not in found:
            found.append(fam)
    return found


def schedule_qconv(spec: ConvSpec, board=None, with_epilogue: bool = True, name: str = "qconv") -> tvm.IRModule:
    intrins = dot_intrins(spec, board)
    if intrins is not None:
        return schedule_qconv_dot(spec, intrins, with_epilogue, name, board.threads)
    mod = tvm.IRModule({name: qconv_func(spec, with_epilogue).with_attr("global_symbol", name)})
    sch = Schedule(mod)
    y = sch.get_sblock("Y", func_name=name)
    n, i, j, _ = sch.get_loops(y)
    dense = spec.h == 1 and spec.w == 1
    tile = min(PIXELS, spec.n if dense else spec.wo)
    if dense:                      # [M, 1, 1, C]: tile the rows
        at, _ = sch.split(n, [None, tile])
        sch.parallel(at)
    else:
        at, _ = sch.split(j, [None, tile])
        sch.parallel(sch.fuse(n, i))
    for g, (n_g, b) in enumerate(spec.groups):
        pix = tile
        if swar(spec, b):      # the pair accumulator is computed; the per-pixel view is inlined
            sch.compute_inline(sch.get_sblock(f"acc{g}", func_name=name))
            acc = sch.get_sblock(f"accp{g}", func_name=name)
            pix = -(-tile // 2)
        else:
            acc = sch.get_sblock(f"acc{g}", func_name=name)
        sch.compute_at(acc, at)
        # the loops compute_at made under `at` (TVM drops those of extent 1)
        names = [k for k, e in (("pix", pix), ("o", n_g), ("r", spec.kh), ("q", spec.kw), ("ci", spec.c_in)) if e > 1]
        loops = dict(zip(names, sch.get_loops(acc)[-len(names):], strict=True))
        if n_g % LANES or "pix" not in loops:
            continue                # ragged groups and single pixels keep the plain loop order
        ot, ol = sch.split(loops["o"], [None, LANES])
        sch.reorder(ot, *[loops[k] for k in ("r", "q", "ci") if k in loops], loops["pix"], ol)
        sch.unroll(loops["pix"])
        sch.vectorize(ol)
    sch.compute_at(sch.get_sblock("rowsum", func_name=name), at)
    return sch.mod
