"""CPU schedules of the quantized conv (first version: per-pixel accumulators, parallel rows).

`schedule_qconv(spec, board)` returns an IRModule holding one PrimFunc named "qconv", ready for
`tvm.compile` with the board's target.
"""

from __future__ import annotations

from ..tvm_compat import Schedule, tvm
from .qconv import ConvSpec, qconv_func


def schedule_qconv(spec: ConvSpec, board=None, with_epilogue: bool = True, name: str = "qconv") -> tvm.IRModule:
    mod = tvm.IRModule({name: qconv_func(spec, with_epilogue).with_attr("global_symbol", name)})
    sch = Schedule(mod)
    y = sch.get_sblock("Y", func_name=name)
    n, i, j, _ = sch.get_loops(y)
    for g in range(len(spec.groups)):
        sch.compute_at(sch.get_sblock(f"acc{g}", func_name=name), j)
    sch.compute_at(sch.get_sblock("rowsum", func_name=name), j)
    sch.parallel(sch.fuse(n, i))
    return sch.mod
