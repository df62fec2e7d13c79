"""The kernel library of a plan: every kernel the plan calls, compiled into one module for a board
(a shared object on the host, an object file for cross targets)."""

from __future__ import annotations

from pathlib import Path

from .plan import Plan
from .tvm_compat import target, tvm


def plan_module(plan: Plan) -> tvm.IRModule:
    used = dict.fromkeys(c.kernel for c in plan.calls)
    return tvm.IRModule({sym: plan.kernels[sym][sym] for sym in used})


def compile_library(plan: Plan, board, out_dir: Path) -> list[Path]:
    """Compile for the board's target into out_dir: kernels.o (linked into the board binary by
    mpqdm build) and, for the build machine's own arch, kernels.so (loaded at run time)."""
    ex = tvm.compile(plan_module(plan), target=target(board.tvm_target_dict()))
    obj = out_dir / "kernels.o"
    ex.mod.write_to_file(str(obj))
    if board.is_cross:
        return [obj]
    ex.export_library(str(out_dir / "kernels.so"))
    return [obj, out_dir / "kernels.so"]
