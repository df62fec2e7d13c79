"""The kernel library of a plan: every kernel the plan calls, compiled into one module for a board
(a shared object on the host, an object file for cross targets)."""

from __future__ import annotations

from pathlib import Path

from .plan import Plan
from .tvm_compat import target, tvm


def plan_module(plan: Plan) -> tvm.IRModule:
    used = dict.fromkeys(c.kernel for c in plan.calls)
    return tvm.IRModule({sym: plan.kernels[sym][sym] for sym in used})


def compile_library(plan: Plan, board, out: Path) -> Path:
    """Compile for the board's target; `out` ending in .so is linked (host), .o is a bare object."""
    ex = tvm.compile(plan_module(plan), target=target(board.tvm_target_dict()))
    if out.suffix == ".so":
        ex.export_library(str(out))
    else:
        ex.mod.write_to_file(str(out))
    return out
