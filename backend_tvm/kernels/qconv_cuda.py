"""CUDA schedule of the quantized conv: one thread block per output pixel, one thread per output
channel. Each group's accumulators live in shared memory (each thread its own input patch sum); the
epilogue gathers them into the original channel order. (A first, correct schedule: no tensor cores.)

`schedule_qconv_cuda(spec)` returns an IRModule with one PrimFunc; `cuda_source(spec, arch)` the CUDA
C that `compile_cubin` turns into a cubin for a board's arch (sm_87 Orin, sm_90 H100).
"""

from __future__ import annotations

from mpqdm.core.scheme import ConvSpec

from ..tvm_compat import Schedule, tvm
from .qconv import qconv_func

MAX_THREADS = 1024


def schedule_qconv_cuda(spec: ConvSpec, with_epilogue: bool = True, name: str = "qconv") -> tvm.IRModule:
    if spec.c_out > MAX_THREADS:
        raise ValueError(f"CUDA qconv: c_out {spec.c_out} exceeds {MAX_THREADS} threads per block")
    mod = tvm.IRModule({name: qconv_func(spec, with_epilogue, allow_swar=False).with_attr("global_symbol", name)})
    sch = Schedule(mod)
    y = sch.get_sblock("Y", func_name=name)
    n, i, j, c = sch.get_loops(y)
    pixel = sch.fuse(n, i, j)
    sch.bind(pixel, "blockIdx.x")
    sch.bind(c, "threadIdx.x")
    for g, (n_g, _) in enumerate(spec.groups):
        acc = sch.get_sblock(f"acc{g}", func_name=name)
        sch.set_scope(acc, 0, "shared")
        sch.compute_at(acc, pixel)
        names = [k for k, e in (("o", n_g), ("r", spec.kh), ("q", spec.kw), ("ci", spec.c_in)) if e > 1]
        loops = sch.get_loops(acc)[-len(names):]
        if "o" in names:       # every binding of threadIdx.x must have the block's extent, c_out
            _, inner = sch.split(loops[0], [1, spec.c_out])
            sch.bind(inner, "threadIdx.x")
    rs = sch.get_sblock("rowsum", func_name=name)
    sch.set_scope(rs, 0, "local")       # each thread sums the input patch itself: no shared race
    sch.compute_at(rs, c)
    return sch.mod


def cuda_source(spec: ConvSpec, arch: str, with_epilogue: bool = True, name: str = "qconv") -> str:
    ex = tvm.compile(schedule_qconv_cuda(spec, with_epilogue, name), target=tvm.target.Target(
        {"kind": "cuda", "arch": arch}))
    return ex.mod.imports[0].inspect_source("")


def compile_cubin(source: str, arch: str) -> bytes:
    from tvm.support import nvcc

    with tvm.target.Target({"kind": "cuda", "arch": arch}):   # nvcc reads the arch from the current target
        return nvcc.compile_cuda(source, target_format="cubin", arch=arch, compiler="nvcc")


def kernel_signature(source: str) -> tuple[str, list[str], int]:
    """(kernel name, its buffer parameters in TVM's order, launch bound) read from the generated
    source: TVM chooses the order (seen: sorted by name), so it is never assumed."""
    import re

    m = re.search(r'extern "C" __global__ void __launch_bounds__\((\d+)\) (\w+)\(([^)]*)\)', source)
    if m is None:
        raise ValueError("no __global__ kernel found in the CUDA source")
    params = [p.strip().split()[-1].removesuffix("_ptr") for p in m.group(3).split(",")]
    return m.group(2), params, int(m.group(1))
