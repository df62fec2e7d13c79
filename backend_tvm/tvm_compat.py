"""The one place TVM is imported: absorbs the 0.24-0.27 renames (tirx, s_tir, support.cc, dict targets)."""

from __future__ import annotations

import tvm
from tvm import s_tir, te, tirx
from tvm.support import cc

from mpqdm.core.board import amx_state_granted

TVM_VERSION = tvm.__version__
Schedule = s_tir.Schedule


SUPPORTED_KINDS = ("llvm", "cuda", "c")


# kernels built for an x86 host with amx_int8 fault without the process's AMX tile state: asked for
# once, before any kernel runs in this process
AMX_ALLOWED = amx_state_granted()


def target(d: dict) -> tvm.target.Target:
    """A TVM target from a board profile's dict; unknown kinds name the supported ones."""
    if not isinstance(d, dict):
        raise TypeError(f"TVM 0.27 targets are dicts, got {d!r}")
    if d.get("kind") not in SUPPORTED_KINDS:
        raise ValueError(f"unsupported target kind {d.get('kind')!r}; supported: {', '.join(SUPPORTED_KINDS)}")
    return tvm.target.Target(d)


def build(func, tgt: dict, name: str):
    """Compile one PrimFunc under `name`; returns TVM's Executable."""
    mod = tvm.IRModule({name: func.with_attr("global_symbol", name)})
    return tvm.compile(mod, target=target(tgt))


def tensor(a, dev=None):
    return tvm.runtime.tensor(a, dev or tvm.cpu())


__all__ = ["TVM_VERSION", "Schedule", "build", "cc", "s_tir", "target", "te", "tensor", "tirx", "tvm"]
