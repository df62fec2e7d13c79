"""The plan's floating-point calls against ONNX Runtime fp32, op by op at the same shapes, 1 thread.

Models: the default one, the DDPM CIFAR-10 configuration and the attention-heavy one (random weights for
the last two: timing does not depend on the values). Their FP calls are those of a uniform W2A4 PTQ
export lowered for the host (backend_tvm/profile.py's float_calls: everything but the quantized convs and
their input quantizers), one row per (op, shape), the models that use it listed.
- ours_ms: the kernel timed as `mpqdm profile` times it (compiled for the host board, linked with the
  runtime's thread pool at 1 thread, TVM's time_evaluator, back-to-back warm calls; median of --passes
  passes).
- ort_fp32_ms: the same op written in PyTorch (NCHW, as the model is) exported to ONNX (opset 17, the
  TorchScript exporter, as runtime_host.py exports the whole model) and run by ONNX Runtime (1 intra-op
  thread, all graph optimizations); per run the sum of its nodes' kernel times from ORT's own profiler
  (no Python call overhead in it), median over --repeats runs after warm-up.
A GroupNorm with its consumer's quantizer fused in (quantize=True) is timed against ORT's GroupNorm
(+ SiLU) alone: ours does the quantizer's work on top.
Target (the host-step issue): per op kind, the median of ours / ORT over its shapes at most 1.0.

Run (on a quiet machine): .venv/bin/python benchmarks/fp_ops.py [--models default,ddpm-cifar10,attention-heavy]
  [--repeats 100] [--passes 3]
Writes benchmarks/results/fp_ops.json and fp_ops.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NOTES_FILE = ROOT / "benchmarks" / "fp_ops_notes.json"      # hand-written: what was tried where a target is missed
MODELS = ("default", "ddpm-cifar10", "attention-heavy")


def parse_spec(text: str) -> tuple[str, dict]:
    """'GroupNormSpec(n=1, h=32, ...)' -> ('GroupNormSpec', {'n': 1, 'h': 32, ...})."""
    m = re.fullmatch(r"(\w+)\((.*)\)", text)
    if not m:
        raise ValueError(f"not a kernel spec: {text!r}")
    fields = dict(kv.split("=", 1) for kv in m.group(2).split(", ") if kv)
    return m.group(1), {k: ast.literal_eval(v) for k, v in fields.items()}


def torch_op(op: str, f: dict):
    """(module, example inputs) doing what kernel `op` with spec fields `f` does, in NCHW."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    def nchw(s):
        return rand(s["n"], s["c"], s["h"], s["w"])

    class Fn(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, *xs):
            return self.fn(*xs)

    if op == "group_norm":
        gn = nn.GroupNorm(f["groups"], f["c"], f["eps"])
        return (nn.Sequential(gn, nn.SiLU()) if f["silu"] else gn), (nchw(f),)
    if op == "conv2d":
        conv = nn.Conv2d(f["c_in"], f["c_out"], (f["kh"], f["kw"]), f["stride"], f["pad"])
        return conv, (rand(f["n"], f["c_in"], f["h"], f["w"]),)
    if op == "dense":
        return nn.Linear(f["k"], f["n"]), (rand(f["m"], f["k"]),)
    if op == "silu":
        return nn.SiLU(), (nchw(f),)
    if op == "add":
        return Fn(lambda a, b: a + b), (nchw(f), nchw(f))
    if op == "concat":
        a, b = rand(f["n"], f["c1"], f["h"], f["w"]), rand(f["n"], f["c2"], f["h"], f["w"])
        return Fn(lambda x, y: torch.cat([x, y], 1)), (a, b)
    if op == "upsample":
        return Fn(lambda x: nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")), (nchw(f),)
    if op == "pad":
        return Fn(lambda x: nn.functional.pad(x, (0, 1, 0, 1))), (nchw(f),)
    if op == "attention":
        n, length, c, heads = f["n"], f["l"], f["c"], f["heads"]
        d = c // heads

        def attn(q, k, v):       # what diffusers' attention processor exports between the projections
            q, k, v = (t.reshape(n, length, heads, d).transpose(1, 2) for t in (q, k, v))
            p = torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5, dim=-1)
            return (p @ v).transpose(1, 2).reshape(n, length, c)

        return Fn(attn), tuple(rand(n, length, c) for _ in range(3))
    if op == "timestep":
        from diffusers.models.embeddings import get_timestep_embedding

        return Fn(lambda t: get_timestep_embedding(t, f["dim"], f["flip_sin_to_cos"], f["freq_shift"],
                                                   max_period=f["max_period"])), (torch.tensor([500.0] * f["n"]),)
    raise ValueError(f"no ONNX counterpart for op {op!r}")


def ort_ms(op: str, fields: dict, repeats: int, warmup: int, work: Path) -> float:
    """Median over runs of the summed node kernel times (ORT's profiler) of the op's ONNX graph."""
    import onnxruntime as ort
    import torch

    module, xs = torch_op(op, fields)
    path = work / f"{op}.onnx"
    names = [f"x{i}" for i in range(len(xs))]
    with torch.no_grad():
        torch.onnx.export(module.eval(), xs, str(path), input_names=names, opset_version=17, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / f"{op}-prof")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {n: x.numpy() for n, x in zip(names, xs, strict=True)}
    for _ in range(warmup + repeats):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[warmup:]
    nodes = [(e["ts"], e["dur"]) for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    sums = [sum(d for ts, d in nodes if lo <= ts <= hi) for lo, hi in runs]
    if len(sums) != repeats or not any(sums):
        raise RuntimeError(f"ORT's profile of {op} gave {len(sums)} runs of {repeats}")
    return statistics.median(sums) / 1e3


def our_ms(jobs: list, passes: int) -> dict[tuple[str, str], float]:
    """(op, shape) -> median ms of each FP job, timed the way `mpqdm profile` times the table."""
    from mpqdm.backend_tvm.farm import Farm
    from mpqdm.backend_tvm.profile import BATCH
    from mpqdm.boards.registry import load_board

    got: dict[tuple[str, str], float] = {}

    def done(entries: list[dict], first: bool) -> None:
        for e in entries:
            got[(e["op"], e["shape"])] = e["median_ms"]

    Farm.local(load_board("host")).run([jobs[i:i + BATCH] for i in range(0, len(jobs), BATCH)], "fp_ops", 1, 10, 20,
                                       done, passes)
    return got


def fp_jobs(model: str) -> tuple[list, list[dict]]:
    from mpqdm.backend_tvm.profile import float_calls
    from mpqdm.boards.registry import load_board
    from mpqdm.core.resources import DEFAULT_MODEL
    from mpqdm.testing.bench import random_model

    folder = DEFAULT_MODEL if model == "default" else random_model(ROOT, model)
    jobs, calls, _ = float_calls(Path(folder), load_board("host"))
    return jobs, calls


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for op in sorted({r["op"] for r in rows}):
        ratios = [r["ratio"] for r in rows if r["op"] == op]
        med = statistics.median(ratios)
        out.append({"op": op, "shapes": len(ratios), "median_ratio": round(med, 3), "worst_ratio": max(ratios),
                    "target": "met" if med <= 1.0 else "missed"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "fp_ops"), help="results stem (.json and .md)")
    a = ap.parse_args()
    models = a.models.split(",")
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    load = os.getloadavg()[0]
    jobs, used = {}, {}
    for m in models:
        js, calls = fp_jobs(m)
        for j, c in zip(js, calls, strict=True):
            jobs.setdefault((j.op, j.shape), j)
            used.setdefault((j.op, j.shape), []).append(f"{m} x{c['count']}")
    print(f"== timing {len(jobs)} FP kernels (ours)", flush=True)
    ours = our_ms(list(jobs.values()), a.passes)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fp_ops-") as tmp:
        for (op, shape) in jobs:
            _, fields = parse_spec(shape)
            theirs = ort_ms(op, fields, a.repeats, a.warmup, Path(tmp))
            mine = ours[(op, shape)]
            rows.append({"op": op, "shape": shape, "models": used[(op, shape)], "ours_ms": round(mine, 5),
                         "ort_fp32_ms": round(theirs, 5), "ratio": round(mine / theirs, 3)})
            print(f"{op:20s} {shape:70s} ours {mine:8.4f} ms  ort {theirs:8.4f} ms  {mine / theirs:6.2f}x", flush=True)
    rows.sort(key=lambda r: (r["op"], r["shape"]))
    summ = summary(rows)
    note = json.loads(NOTES_FILE.read_text())["note"] if NOTES_FILE.is_file() else ""
    import onnxruntime

    from mpqdm.core.machine import command
    from mpqdm.testing.bench import markdown_table, save_rows

    stem = Path(a.out)
    save_rows(stem.with_suffix(".json"), rows, summary=summ, threads=1, load_average_at_start=round(load, 2),
              onnxruntime=onnxruntime.__version__, note=note)
    show = [{**r, "models": ", ".join(r["models"])} for r in rows]
    stem.with_suffix(".md").write_text(
        "# FP calls of the plan against ONNX Runtime fp32 (1 thread)\n\n"
        f"Command: `{command()}`; load average at start {load:.2f}; onnxruntime {onnxruntime.__version__}\n\n"
        "ours: the kernel as `mpqdm profile` times it; ORT: the same op exported from PyTorch, the sum of its "
        "nodes' kernel times per run (ORT's profiler), median. ratio = ours / ORT.\n\n"
        "## Per op kind (target: median ratio <= 1.0)\n\n"
        + markdown_table(summ, ["op", "shapes", "median_ratio", "worst_ratio", "target"])
        + "\n## Per shape\n\n"
        + markdown_table(show, ["op", "shape", "models", "ours_ms", "ort_fp32_ms", "ratio"])
        + (f"\n{note}\n" if note else ""))
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    sys.exit(main())
