"""`mpqdm compile EXPORT --board B -o DIR`: lower, compile the kernels, write the artifact and a report.

DIR/model.mpq        the artifact (runtime/include/mpq_artifact.h)
DIR/kernels.o        the kernels as an object file for the board, linked into its binary by `mpqdm build`
DIR/kernels.so       on the build machine's own arch also a shared object (loaded by mpqdm-run-dyn, tests)
DIR/compile.json     what was compiled: ops, kernels, memory plan, sizes, kernel paths (and report.md, the same
                     for people)
Everything is written into a staging folder that replaces DIR only when complete.

Kernel paths: each quantized group takes the path (AMX, VNNI, AVX2; udot, NEON) that `mpqdm profile`
timed fastest for its layer shape and widths on this board (the board's latency table, or --latency),
and the board's rule where the table has no such entry or was measured on another CPU. An emulated
board's table chooses by the instructions counted under qemu (`mpqdm profile --count-instructions`).
"""

from __future__ import annotations

import collections
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mpqdm.boards.registry import latency_path, load_board
from mpqdm.core.errors import UserError
from mpqdm.core.io import check_output_dir, ensure_writable_dir, replace_dir, staging_dir, write_json
from mpqdm.core.latency import LatencyTable
from mpqdm.core.report import markdown_table
from mpqdm.frontend.model_io import model_fingerprint
from mpqdm.frontend.quant.export import is_export, read_meta

from .artifact import write_artifact
from .kernels.qconv_schedule import dot_intrins, family
from .library import compile_library
from .lower import lower_export
from .plan import ACT, CONST, Plan

ARTIFACT, REPORT = "model.mpq", "compile.json"


def sampler_of(low) -> dict:
    s = low.schedule
    cfg = low.scheduler.config
    return {"timesteps": [int(t) for t in s.timesteps], "alphas_cumprod": [float(a) for a in s.alpha_t],
            "num_train_timesteps": int(cfg.num_train_timesteps), "clip_sample": s.clip is not None,
            "clip_range": float(s.clip or 0.0), "final_alpha_cumprod": 1.0}


def summary(plan: Plan, fp32_weight_bytes: int) -> dict:
    ops = collections.Counter(c.kernel.split("_", 1)[1].rsplit("_", 1)[0] for c in plan.calls)
    acts = [t for t in plan.tensors.values() if t.kind != CONST and t.alias_of is None]
    return {"kernel_calls": len(plan.calls), "kernels": len({c.kernel for c in plan.calls}), "calls_by_op": dict(ops),
            "peak_activation_kb": round(plan.arena_bytes / 1024, 1),
            "activations_without_reuse_kb": round(sum(t.nbytes for t in acts if t.kind == ACT) / 1024, 1),
            "const_kb": round(plan.const_bytes / 1024, 1), "fp32_weights_kb": round(fp32_weight_bytes / 1024, 1),
            "steps": plan.n_steps}


def kernel_choice(board, latency=None, kernels: str = "measured") -> tuple[object, str]:
    """(shape key, wbits, abits) -> the kernel path timed fastest on this board, or None (the rule's
    path for every layer), and where the choice comes from, in words."""
    if kernels not in ("measured", "rule"):
        raise UserError(f"--kernels must be measured or rule, got {kernels!r}")
    path = Path(latency) if latency else latency_path(board)
    if kernels == "rule":
        return None, "the board's rule (--kernels rule)"
    if not path.is_file():
        if latency:
            raise UserError(f"no latency table {str(path)!r}. Possible solutions: mpqdm profile --board {board.name}")
        return None, f"the board's rule (no latency table {path})"
    table = LatencyTable.load(path, board.name)
    counted = any(e["instructions"] for e in table.entries.values())
    threads = 1 if counted else board.threads          # instructions are counted on 1 thread
    if table.emulated and not counted:
        return None, f"the board's rule ({path} was timed under qemu, instructions not counted)"
    try:
        table.check_measured_on(board, path)
    except UserError as exc:
        if latency:
            raise
        return None, f"the board's rule ({path} was measured on another CPU: {exc.args[0].split('. ')[0]})"
    how = "instructions counted under qemu" if table.emulated else "timed"
    return (lambda shape, w, a: table.kernel_for(shape, w, a, threads)), f"measured ({how}, {path})"


def path_counts(low, board) -> dict[str, int]:
    """Quantized groups per kernel path in the compiled plan (after every fallback)."""
    out: collections.Counter = collections.Counter()
    for kind, spec in low.specs:
        if kind == "qconv":
            intrins = dot_intrins(spec, board) or [None] * len(spec.groups)
            out.update(family(i[0] if i else None) for i in intrins)
    return dict(sorted(out.items()))


def compile_export(export_dir, board_name: str, out_dir, steps: int | None = None, progress: bool = True,
                   latency=None, kernels: str = "measured") -> dict:
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    if not is_export(export_dir):
        raise UserError(f"{str(export_dir)!r} is not a quantized export (no quant_export.json). "
                        "Possible solutions: make one with mpqdm quantize or mpqdm qat")
    read_meta(export_dir)                               # format and version first: a clear error
    out_dir = check_output_dir(out_dir, "compile", reads=[export_dir], legacy=REPORT)
    board = load_board(board_name)
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    choice = kernel_choice(board, latency, kernels)
    ensure_writable_dir(out_dir.parent)
    bar = tqdm(total=3, desc=f"compile for {board.name}", unit="stage", disable=not progress)
    try:
        return _compile(export_dir, board, out_dir, steps, bar, choice)
    finally:
        bar.close()


def _compile(export_dir: Path, board, out_dir: Path, steps: int | None, bar, choice) -> dict:
    bar.set_postfix_str("lowering")
    t0 = time.perf_counter()
    plan, low = lower_export(export_dir, board, steps, choice[0])
    lower_s = time.perf_counter() - t0
    bar.update()
    bar.set_postfix_str(f"TVM: {len(plan.kernels)} kernels")
    staging = staging_dir(out_dir)
    try:
        t1 = time.perf_counter()
        libs = compile_library(plan, board, staging)
        compile_s = time.perf_counter() - t1
        bar.update()
        bar.set_postfix_str("artifact")
        art = write_artifact(staging / ARTIFACT, plan, board=board.name, arch=board.arch,
                             features=list(board.cpu_features), model_sha256=model_fingerprint(export_dir),
                             sampler=sampler_of(low))
        fp32 = fp32_weight_bytes(export_dir)
        info = {"export": str(export_dir), "board": board.name, "arch": board.arch,
                "features": list(board.cpu_features), **summary(plan, fp32),
                "artifact_kb": round(art["bytes"] / 1024, 1), "library": " ".join(p.name for p in libs),
                "library_kb": round(libs[0].stat().st_size / 1024, 1), "kernel_paths": path_counts(low, board),
                "kernel_choice": choice[1], "lower_seconds": round(lower_s, 1),
                "compile_seconds": round(compile_s, 1)}
        write_json(staging / REPORT, info)
        (staging / "report.md").write_text(report_md(info, plan))
        replace_dir(staging, out_dir, "compile")
        bar.update()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def report_md(info: dict, plan: Plan) -> str:
    rows = [{"op": k, "calls": v} for k, v in sorted(info["calls_by_op"].items())]
    big = sorted((t for t in plan.tensors.values() if t.kind != CONST and t.alias_of is None),
                 key=lambda t: -t.nbytes)[:5]
    mem = [{"tensor": t.name, "kind": t.kind, "shape": "x".join(map(str, t.shape)), "dtype": t.dtype,
            "kb": round(t.nbytes / 1024, 1), "arena_offset": t.offset} for t in big]
    return "\n".join([
        f"# Compiled for {info['board']} ({info['arch']}; features {', '.join(info['features']) or 'none'})", "",
        f"- {info['kernel_calls']} kernel calls, {info['kernels']} distinct kernels ({info['library']}, "
        f"{info['library_kb']} KB), {info['steps']} sampling steps",
        f"- artifact {info['artifact_kb']} KB (constants {info['const_kb']} KB); fp32 weights of the model "
        f"{info['fp32_weights_kb']} KB",
        f"- peak activation memory (arena) {info['peak_activation_kb']} KB; without reuse "
        f"{info['activations_without_reuse_kb']} KB",
        f"- quantized groups by kernel path: {', '.join(f'{k} {v}' for k, v in info['kernel_paths'].items()) or 'none'}"
        f"; chosen by {info['kernel_choice']}", "",
        markdown_table(rows, ["op", "calls"]), "", "Largest arena regions:", "",
        markdown_table(mem, list(mem[0])) if mem else "(none)", ""])


def fp32_weight_bytes(export_dir: Path) -> int:
    """The float32 size of the model's parameters (the export keeps the FP weights beside the codes)."""
    from safetensors import safe_open

    with safe_open(str(export_dir / "diffusion_pytorch_model.safetensors"), "np") as f:
        return 4 * sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
