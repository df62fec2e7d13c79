"""Runs a plan through TVM's runtime on the host (tests and reports): the same calls, tensors and
arena offsets the C runtime uses, with zero-copy views of one arena."""

from __future__ import annotations

import numpy as np
import tvm_ffi

from mpqdm.backend_tvm.plan import ALIGN, CONST, DTYPES, INPUT, OUTPUT, TIMESTEP, Plan


def aligned_bytes(n: int) -> np.ndarray:
    raw = np.zeros(n + ALIGN, np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start: start + n]


class Executor:
    def __init__(self, plan: Plan, lib):
        self.plan = plan
        self.arena = aligned_bytes(max(plan.arena_bytes, ALIGN))
        self.arrays: dict[str, np.ndarray] = {}
        for name, t in plan.tensors.items():
            if t.kind == CONST and t.alias_of is None:      # kernels assume 64-byte aligned tensors
                self.arrays[name] = aligned_bytes(t.nbytes).view(t.data.dtype).reshape(t.shape)
                self.arrays[name][...] = t.data
            else:
                base = plan.tensors[plan.root(name)]
                if base.kind == CONST:
                    self.arrays[name] = self.arrays[base.name].reshape(t.shape)
                    continue
                raw = self.arena[base.offset: base.offset + t.nbytes]
                self.arrays[name] = raw.view(DTYPES[t.dtype]).reshape(t.shape)
        self.funcs = {k: lib[k] for k in {c.kernel for c in plan.calls}}
        self._ffi = {n: tvm_ffi.from_dlpack(a) for n, a in self.arrays.items()}
        self._steps = {}
        self.trace = None           # set to a list to record (call, copies of its args after it ran)

    def _arg(self, a, step: int):
        if not a.step:
            return self._ffi[a.tensor]
        key = (a.tensor, step)
        if key not in self._steps:
            self._steps[key] = tvm_ffi.from_dlpack(self.arrays[a.tensor][step: step + 1])
        return self._steps[key]

    def tensor(self, kind: str) -> np.ndarray:
        (t,) = [t for t in self.plan.tensors.values() if t.kind == kind]
        return self.arrays[t.name]

    def run(self, x_nhwc: np.ndarray, t: float, step: int) -> np.ndarray:
        """One UNet call at sampling step `step` (0: the noisiest); returns the NHWC noise prediction."""
        if not 0 <= step < self.plan.n_steps:
            raise ValueError(f"step {step} is outside 0..{self.plan.n_steps - 1}")
        self.tensor(INPUT)[...] = x_nhwc
        self.tensor(TIMESTEP)[...] = t
        for c in self.plan.calls:
            self.funcs[c.kernel](*[self._arg(a, step) for a in c.args])
            if self.trace is not None:
                self.trace.append((c, [self.arrays[a.tensor][step: step + 1].copy() if a.step
                                       else self.arrays[a.tensor].copy() for a in c.args]))
        return self.tensor(OUTPUT).copy()
