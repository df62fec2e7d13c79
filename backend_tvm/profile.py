"""`mpqdm profile`: time every call kind of a model's UNet call on a board, the way the C runtime
runs it, and merge the timings into boards/<board>/latency.json (core/latency.py).

- Quantized layers: per layer shape, every weight width in `wbits` x activation width in `abits`,
  on every kernel path the board's CPU offers for it (kernels/qconv_schedule.kernel_paths: AMX,
  VNNI, AVX2; udot, NEON), each at full width (c_out channels) and at one partial width (half,
  rounded to the packing's lanes) for the fixed cost; layers the policy keeps at 8 bits get W8A8
  only. Their input quantizer per activation width. Compile builds each layer on the path that was
  fastest at full width (LatencyTable.kernel_for).
- Every other kernel of the model's plan (GroupNorm + SiLU, attention, add, concat, upsample, FP
  convs, the time embedding): lowered from a uniform PTQ export of the model (calibration of one
  sample, which does not change a kernel's shape), with its call count per UNet call.
Kernels are compiled for the board's target in batches, each batch linked with the runtime's own
thread pool into a shared object (backend_tvm/modules.py), and timed with TVM's time_evaluator:
here (no tracker) or on the boards a tracker lists under a key (farm.py), several in parallel; in
`passes` passes over everything (an entry: the median of all its samples, so that a burst of noise
on a shared machine moves one pass, not the entry). Calls are timed back to back, warm: on the
host that predicts a UNet call best (benchmarks/results/profile_predict.md); `flush_kb` makes each
timed call run alone after that many KB were written (TVM's cache_flush_bytes), which here
over-predicts the compute-bound kernels (1 MB: qconv +27%, attention 2x) while it fits the
memory-bound elementwise ones.
The table is saved after every batch, so a run that stops leaves what it measured, and a rerun
measures only what is missing (same build id).
"""

from __future__ import annotations

import collections
import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mpqdm.boards.registry import latency_path, load_board
from mpqdm.core.bits import ABITS, CANDIDATE_WBITS, check_bits
from mpqdm.core.errors import UserError
from mpqdm.core.io import ensure_writable_dir
from mpqdm.core.latency import KEY, PLAN_OPS, LatencyTable, partial_width
from mpqdm.core.machine import commit
from mpqdm.core.scheme import ConvSpec, random_args
from mpqdm.frontend.model_io import load_unet, model_fingerprint
from mpqdm.frontend.quant.shapes import layer_specs
from mpqdm.frontend.quant.swap import LayerPolicy

from .farm import Farm
from .kernels.qconv_schedule import kernel_paths, schedule_qconv
from .kernels.quantize import schedule_quantize
from .plan import call_kind
from .tvm_compat import TVM_VERSION, tvm

DEFAULT_WBITS, DEFAULT_ABITS = CANDIDATE_WBITS, ABITS
NAMED_MODELS = ("ddpm-cifar10",)
BATCH = 12                  # kernels per compiled module
FLUSH_KB = 0                # KB written before each timed call (0: back-to-back calls, warm caches)


@dataclass
class Job:
    """One timing: the table key's fields, and how to build and feed its kernel."""
    op: str
    shape: str
    wbits: int
    abits: int
    channels: int
    build: object           # symbol -> IRModule holding one PrimFunc of that name
    args: object = None     # rng -> list of numpy arrays in the kernel's order (None: farm.random_inputs)
    kernel: str = ""        # a quantized layer's kernel path (ConvSpec.kernels)

    def key(self, threads: int) -> tuple:
        return (self.op, self.shape, self.wbits, self.abits, threads, self.channels, self.kernel)

    def entry(self, threads: int) -> dict:
        """The key fields of this job's latency-table entry."""
        return dict(zip(KEY, self.key(threads), strict=True))


def load_model(model) -> object:
    """A diffusers folder, or 'ddpm-cifar10': that public architecture with random weights."""
    if str(model) == "ddpm-cifar10":
        from mpqdm.frontend.fp_model import ddpm_cifar10_unet

        return ddpm_cifar10_unet()
    return load_unet(model)


def model_folder(model, work: Path) -> Path:
    """A folder holding the model (a named model is saved into `work`)."""
    if str(model) not in NAMED_MODELS:
        return Path(model)
    from mpqdm.frontend.fp_model import default_scheduler

    d = work / str(model)
    load_model(model).save_pretrained(d)
    default_scheduler().save_pretrained(d)
    return d


def conv_jobs(specs: dict[str, ConvSpec], wbits, abits, policy: LayerPolicy, board) -> list[Job]:
    """The quantized layers' kernels and their input quantizers."""
    jobs, seen = [], set()

    def add(job: Job) -> None:
        k = job.key(0)
        if k not in seen:
            seen.add(k)
            jobs.append(job)

    for name, s in specs.items():
        kind = policy.kind(name)
        if kind == "float":
            continue
        pairs = [(8, 8)] if kind == "w8a8" else [(w, a) for w in wbits for a in abits]
        for w, a in pairs:
            for path in kernel_paths(s.with_width(s.c_out, w, a), board) or [""]:
                for ch in (s.c_out, partial_width(s.c_out)):
                    sw = s.with_width(ch, w, a, path)
                    add(Job("qconv", s.shape_key(), w, a, ch, lambda sym, sw=sw: schedule_qconv(sw, board, name=sym),
                            lambda rng, sw=sw: random_args(sw, rng).ordered(), path))
        for a in sorted({a for _, a in pairs}):
            q = ((s.n, s.h, s.w, s.c_in), a)
            add(Job("quantize", s.shape_key(), 0, a, 0, lambda sym, q=q: schedule_quantize(*q, sym)))
    return jobs


def float_calls(folder: Path, board) -> tuple[list[Job], list[dict], list[str]]:
    """The plan-independent kernels of the model's UNet call, lowered for the board, their counts, and
    the quantized layers with no quantize call (their quantizer runs inside the GroupNorm before them)."""
    from mpqdm.frontend.quant.calibrate import CalibConfig
    from mpqdm.frontend.quant.ptq import PTQConfig, quantize

    from .lower import lower_export

    with tempfile.TemporaryDirectory(prefix="mpqdm-profile-") as tmp:
        export = Path(tmp) / "export"
        if (folder / "quant_plan.json").is_file():
            export = folder
        else:
            quantize(folder, export, PTQConfig(plan="uniform", wbits=2, abits=4,
                                               calib=CalibConfig(samples=1, steps=1, batch=1, keep_every=1)),
                     device="cpu", progress=False)
        plan, _ = lower_export(export, board)
    counts: dict[str, int] = {}
    for c in plan.calls:
        counts[c.kernel] = counts.get(c.kernel, 0) + 1
    jobs, calls = [], []
    for sym, n in counts.items():
        op = call_kind(sym)
        if op in PLAN_OPS:
            continue
        shape = plan.kernel_specs[sym]
        func = plan.kernels[sym][sym]
        jobs.append(Job(op, shape, 0, 0, 0, lambda s, f=func: tvm.IRModule({s: f.with_attr("global_symbol", s)})))
        calls.append({"op": op, "shape": shape, "count": n})
    ops = {(call_kind(c.kernel), c.op) for c in plan.calls}
    fused = sorted(name for kind, name in ops if kind == "qconv" and ("quantize", name) not in ops)
    return jobs, calls, fused


def model_id(folder: Path) -> str:
    """The model's sha256[:16], as statistics and plans name it (an export names its FP model)."""
    plan = folder / "quant_plan.json"
    if plan.is_file():
        from mpqdm.core.bitplan import BitPlan

        return BitPlan.load(plan).model_sha256[:16]
    return model_fingerprint(folder)[:16]


def check_counting(board, tracker) -> None:
    """--count-instructions runs each kernel under the board's qemu here."""
    if tracker:
        raise UserError("--count-instructions counts under qemu on this machine, --tracker times on the board: "
                        "give one of them")
    if not board.is_cross or not board.qemu or shutil.which(board.qemu) is None or shutil.which(board.cc) is None:
        raise UserError(f"--count-instructions needs a board that runs here under qemu-user, with its compiler "
                        f"({board.name}: qemu {board.qemu!r}, cc {board.cc!r}). Possible solutions: bash "
                        "scripts/install.sh, or time the board itself (--tracker)")


def count_kernels(jobs: list[Job], board, build_id: str, done) -> dict:
    """Each job's kernel built for the board, linked into the C kernel harness and run under qemu with
    the counting plugin (emulate.py): executed instructions of one call, 1 thread."""
    from .emulate import compile_object, count_instructions, insn_plugin, link

    rng = np.random.default_rng(0)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    source = {"key": f"{board.qemu} -cpu {board.qemu_cpu}", "cpu": board.cpu, "features": list(board.cpu_features),
              "emulated": True}
    with tempfile.TemporaryDirectory(prefix="mpqdm-count-") as tmp:
        work = Path(tmp)
        plugin = insn_plugin(work)
        for job in jobs:
            exe = link([compile_object(job.build("kernel"), board, work / "k.o")], board, "kernel", work / "harness")
            args = list(job.args(rng))
            n = count_instructions(exe, board, args, {len(args) - 1}, work, plugin)
            done([{**job.entry(1), "median_ms": 0.0, "spread": 0.0, "repeats": 1, "instructions": n,
                   "build_id": build_id, "measured": when, **source}], True)
    return {source["key"]: {"cpu": board.cpu, "emulated": True}}


def fastest_paths(table: LatencyTable, jobs: list[Job], threads: int) -> dict[str, int]:
    """How many (layer shape, wbits, abits) of `jobs` ran fastest on each kernel path."""
    keys = {(j.shape, j.wbits, j.abits) for j in jobs if j.op == "qconv"}
    found = collections.Counter(table.kernel_for(*k, threads) for k in keys)
    return {k or "rule": n for k, n in found.most_common() if k is not None}


def profile(model_dir, board_name: str = "host", wbits=DEFAULT_WBITS, abits=DEFAULT_ABITS, repeats: int = 10,
            min_repeat_ms: int = 20, table_path: Path | None = None, progress: bool = True,
            threads: int | None = None, tracker: str | None = None, key: str | None = None,
            wait_s: float = 60.0, fresh: bool = False, batch: int = BATCH, passes: int = 3,
            flush_kb: int = FLUSH_KB, count: bool = False) -> dict:
    """`mpqdm profile`: measure what the table lacks for this model (everything with `fresh`); `count`:
    instead of timing, count each quantized kernel's instructions under qemu (an emulated board)."""
    board = load_board(board_name)
    check_bits(wbits, "--wbits")
    check_bits(abits, "--abits", ABITS)
    threads = 1 if count else threads or board.threads
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if count:
        check_counting(board, tracker)
        passes = 1
    elif tracker is None and board.is_cross:
        raise UserError(f"board {board.name!r} is timed on the board itself, through TVM's RPC tracker. Possible "
                        f"solutions: start python -m tvm.exec.rpc_tracker here and python -m tvm.exec.rpc_server "
                        f"--tracker HOST:9190 --key {board.name} on the board, then add --tracker HOST:9190")
    path = Path(table_path or latency_path(board))
    ensure_writable_dir(path.parent)
    table, old = LatencyTable.load_for_update(path, board.name)     # a bad table is refused before any work
    farm = Farm(board, tracker, key or board.name, wait_s) if tracker else Farm.local(board)
    if not count:
        farm.check_reachable()
    if flush_kb < 0:
        raise UserError(f"--flush-kb must be >= 0, got {flush_kb}")
    if passes < 1:
        raise UserError(f"--passes must be >= 1, got {passes}")
    method = f"counted under {board.qemu} -cpu {board.qemu_cpu}" if count else f"flush {flush_kb}"
    how = f"{commit()}|{TVM_VERSION}|{board.tvm_target_dict()}|{method}"     # the timing method too
    build_id = hashlib.sha256(how.encode()).hexdigest()[:12]
    with tempfile.TemporaryDirectory(prefix="mpqdm-profile-") as tmp:
        folder = model_folder(model_dir, Path(tmp))
        specs = layer_specs(load_model(folder).eval())
        fp_jobs, calls, fused = float_calls(folder, board)
        jobs = conv_jobs(specs, wbits, abits, LayerPolicy(), board) + fp_jobs
        mid = model_id(folder)
    if count:       # what chooses a kernel path: the quantized layers at full width
        full = {s.shape_key(): s.c_out for s in specs.values()}
        jobs = [j for j in jobs if j.op == "qconv" and j.channels == full[j.shape]]
    table.models[mid] = {"name": Path(str(model_dir)).name, "calls": calls, "fused_quantizers": fused}
    todo = [j for j in jobs if fresh or table.entries.get(j.key(threads), {}).get("build_id") != build_id]
    if old is not None:             # every check passed: an older table moves aside now, not before
        farm.warnings.append(LatencyTable.keep_older(path, old))
    table.save(path)
    bar = tqdm(total=len(todo) * passes, desc=f"profile {board.name}", unit="timing", disable=not progress)
    batches = [todo[i:i + batch] for i in range(0, len(todo), batch)]
    measured = 0

    def done(entries: list[dict], first: bool) -> None:
        nonlocal measured
        table.merge(entries)
        table.save(path)                        # after every batch: a stop keeps what was measured
        measured += len(entries) if first else 0
        bar.update(len(entries))

    try:
        if count:
            sources = count_kernels(todo, board, build_id, done)
        else:
            sources = farm.run(batches, build_id, threads, repeats, min_repeat_ms, done, passes, flush_kb * 1024)
    finally:
        bar.close()
    return {"table": str(path), "entries": measured, "skipped": len(jobs) - len(todo), "jobs": len(jobs),
            "total_entries": len(table.entries), "threads": threads, "build_id": build_id, "boards": sources,
            "shapes": len({j.shape for j in jobs if j.op == "qconv"}), "model": mid,
            "fastest": fastest_paths(table, jobs, threads),
            "warnings": farm.warnings, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
