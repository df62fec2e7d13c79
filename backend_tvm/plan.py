"""The static execution plan of one UNet call: tensors, kernel calls in order, and the memory plan.

One module serves the lowering (which builds it), the artifact writer (which stores it) and the
Python executor (which runs it), so what Python tests is what the C runtime runs.

- Tensor kinds: CONST (data stored in the artifact: packed weights, steps, biases, per-step
  activation parameters), ACT (an activation: lives in the arena at `offset`, reused by liveness),
  INPUT (the noisy sample x_t, NHWC float32), TIMESTEP (t, float32 [1]), OUTPUT (the noise
  prediction, NHWC float32). INPUT, TIMESTEP and OUTPUT are arena regions too.
- A call names its kernel (an exported symbol of the kernel library) and its argument tensors. An
  argument with `step` True is a [1] view of element `step index` of a per-step CONST tensor [n_steps]:
  the activation step and zero code of the sampling step being run.
- Views: a tensor may alias another's memory (`alias_of`) with another shape (tokens [1, L, C] of an
  NHWC [1, H, W, C] map; a dense layer's [M, 1, 1, C] input). Aliases take their base's offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CONST, ACT, INPUT, TIMESTEP, OUTPUT = "const", "act", "input", "timestep", "output"
KINDS = (CONST, ACT, INPUT, TIMESTEP, OUTPUT)
DTYPES = {"float32": np.float32, "uint8": np.uint8, "int32": np.int32, "uint32": np.uint32}
ALIGN = 64          # arena regions and constant data start on 64-byte boundaries (vector loads)


@dataclass
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    kind: str
    data: np.ndarray | None = None      # CONST only
    alias_of: str | None = None         # a view of another tensor's memory
    offset: int = -1                    # arena byte offset (ACT/INPUT/TIMESTEP/OUTPUT), set by plan_memory
    bits: int = 0                       # the packed width of weight codes (0: not packed / mixed)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"tensor {self.name!r}: unknown kind {self.kind!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r}: unsupported dtype {self.dtype!r}")
        self.shape = tuple(int(d) for d in self.shape)
        if self.kind == CONST:
            if self.data is None:
                raise ValueError(f"constant {self.name!r} has no data")
            self.data = np.ascontiguousarray(self.data, dtype=DTYPES[self.dtype]).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(DTYPES[self.dtype]).itemsize


@dataclass(frozen=True)
class Arg:
    tensor: str
    step: bool = False      # a [1] view of element `step index` of a per-step tensor


@dataclass
class Call:
    kernel: str             # kernel symbol in the library
    args: tuple[Arg, ...]   # inputs first, the output last (the kernels' convention)
    op: str = ""            # what it lowers (a layer name or an op), for reports and errors


@dataclass
class Plan:
    tensors: dict[str, Tensor] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    kernels: dict[str, object] = field(default_factory=dict)    # symbol -> scheduled IRModule (not stored)
    kernel_specs: dict[str, str] = field(default_factory=dict)  # symbol -> a readable spec
    n_steps: int = 0
    arena_bytes: int = 0

    def add(self, t: Tensor) -> Tensor:
        if t.name in self.tensors:
            raise ValueError(f"tensor {t.name!r} defined twice")
        if t.alias_of is not None:
            if t.alias_of not in self.tensors:
                raise ValueError(f"view {t.name!r} of unknown tensor {t.alias_of!r}")
            base = self.tensors[t.alias_of]
            if t.nbytes != base.nbytes:
                raise ValueError(f"view {t.name!r} ({t.nbytes} B) does not match {base.name!r} ({base.nbytes} B)")
        self.tensors[t.name] = t
        return t

    def call(self, kernel: str, args, op: str = "") -> None:
        args = tuple(a if isinstance(a, Arg) else Arg(a) for a in args)
        for a in args:
            if a.tensor not in self.tensors:
                raise ValueError(f"call {kernel} ({op}): unknown tensor {a.tensor!r}")
        if kernel not in self.kernels:
            raise ValueError(f"call {op}: kernel {kernel!r} not in the plan")
        self.calls.append(Call(kernel, args, op))

    def root(self, name: str) -> str:
        while self.tensors[name].alias_of is not None:
            name = self.tensors[name].alias_of
        return name

    def by_kind(self, kind: str) -> list[Tensor]:
        return [t for t in self.tensors.values() if t.kind == kind]

    @property
    def const_bytes(self) -> int:
        return sum(t.nbytes for t in self.by_kind(CONST))


def call_kind(kernel: str) -> str:
    """The kind of a plan's kernel symbol (the lowering names them mpq_<kind>_<n>)."""
    return kernel[len("mpq_"):].rsplit("_", 1)[0] if kernel.startswith("mpq_") else kernel


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan_memory(plan: Plan) -> int:
    """Arena offsets by liveness (first to last call touching a region), first fit in address order;
    INPUT, TIMESTEP and OUTPUT live the whole call. Returns the arena size (peak activation bytes)."""
    roots = [t for t in plan.tensors.values() if t.kind != CONST and t.alias_of is None]
    n = len(plan.calls)
    first, last = {}, {}
    for i, c in enumerate(plan.calls):
        for a in c.args:
            r = plan.root(a.tensor)
            first.setdefault(r, i)
            last[r] = i
    placed: list[tuple[int, int, int, int]] = []        # (start, end, first, last)
    for t in sorted(roots, key=lambda t: (first.get(t.name, 0), -t.nbytes)):
        lo, hi = (0, n) if t.kind != ACT else (first.get(t.name, 0), last.get(t.name, 0))
        size = _align(t.nbytes)
        busy = sorted((s, e) for s, e, f, l_ in placed if not (l_ < lo or f > hi))
        off = 0
        for s, e in busy:
            if off + size <= s:
                break
            off = max(off, _align(e))
        t.offset = off
        placed.append((off, off + size, lo, hi))
    for t in plan.tensors.values():
        if t.alias_of is not None:
            t.offset = plan.tensors[plan.root(t.name)].offset
    plan.arena_bytes = _align(max((e for _, e, _, _ in placed), default=0))
    return plan.arena_bytes


def check_memory(plan: Plan) -> None:
    """No two regions live at the same call overlap in the arena (the planner's own check)."""
    live: dict[int, list[Tensor]] = {}
    for i, c in enumerate(plan.calls):
        for a in c.args:
            live.setdefault(i, []).append(plan.tensors[plan.root(a.tensor)])
    spans = {}
    for i, ts in live.items():
        for t in ts:
            s = spans.setdefault(t.name, [i, i, t])
            s[0], s[1] = min(s[0], i), max(s[1], i)
    items = [(t, (0, len(plan.calls)) if t.kind != ACT else (f, l_)) for f, l_, t in spans.values()
             if t.kind != CONST]
    for x, (xf, xl) in items:
        for y, (yf, yl) in items:
            if x.name < y.name and not (xl < yf or yl < xf):
                if not (x.offset + x.nbytes <= y.offset or y.offset + y.nbytes <= x.offset):
                    raise AssertionError(f"arena overlap: {x.name} and {y.name}")
