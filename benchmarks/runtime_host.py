"""Host speed of one sampling step: our C runtime (W2A4) beside PyTorch fp32, ONNX Runtime fp32 and ONNX
Runtime int8, on the default model, the DDPM CIFAR-10 configuration and an attention-heavy one (attention at
16x16 and 8x8, 8-channel heads, two layers per block; random weights), at 1 and 2 threads.

Engines (batch 1, one UNet call per sampling step):
- mpqdm-W2A4: `mpqdm-run MODEL.mpq --bench` (the self-contained binary with the kernels linked in) of a W2A4 PTQ
  export made here from the model (the default model: OMQ's 10% split; timing does not depend on the ranges),
  built by `mpqdm compile/build` for the host into out/runtime/<model>-host; seconds per step = the median UNet
  step time it prints over every step of the artifact's sampler x --count samples (>= 20 steps, as the
  peers' 20); peak_mb = the peak RSS it prints;
  size_mb = binary + model.mpq.
- torch-fp32: the diffusers UNet2DModel, torch.set_num_threads(threads), inference_mode; median of
  --repeats calls after warm-up; size_mb = the fp32 safetensors.
- ort-fp32: torch.onnx.export (TorchScript exporter, opset 17; inputs sample [1,C,H,W] and timestep [1],
  both float32), its output checked against torch (relative L2 error <= 1e-4); intra_op threads = threads,
  inter_op 1, all graph optimizations; median of --repeats calls.
- ort-int8: quantize_static of that model (after onnxruntime's quant_pre_process), QDQ format, per-channel
  QInt8 weights, QUInt8 activations, reduce_range (ORT's advice for x86 without VNNI); Conv, Gemm and the
  MatMuls of Linear layers (a weight initializer as second input) are quantized; the attention QK^T and AV
  MatMuls (two activations) stay fp32. Calibration: 8 inputs x ~ N(0,1) at timesteps spread over the training
  schedule (MinMax).
- mpqdm-W2A4-procs (the machine's control, at 2 threads and more): as many 1-thread mpqdm-run processes
  at once as threads; its time is their mean, and `machine_speedup` = threads x our 1-thread time / it,
  the speed-up that independent streams of our work got from the cores in that round (these shared
  machines' second core is often slower than the first): a ceiling for any threading of ours.
Rounds: per model, every (engine, threads) runs once in turn, --rounds times (3); a row is the median of its
rounds, and a ratio the median over rounds of the ratio within one round (a slow spell of this shared machine
then slows both sides of it). torch and ORT run each (engine, model, threads) in a fresh subprocess
(`--worker ENGINE MODEL THREADS`, one JSON line out) so that peak_mb is that engine's own process peak RSS
(ru_maxrss after the timed loop).
The ONNX files are made again in out/runtime/onnx/ on every run (frontend/onnx_int8.py).

Run (on a quiet machine): .venv/bin/python benchmarks/runtime_host.py
  --quick                          default model, 1 thread, fewer repeats (for debugging)
  --models default,ddpm-cifar10    --threads 1,2    --repeats 20    --rounds 3
Writes benchmarks/results/runtime_host.json and runtime_host.md (--quick: out/runtime/runtime_host_quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.frontend.onnx_int8 import TIMESTEP, export_fp32, feed, median_ms, quantize_int8
from mpqdm.testing.bench import markdown_table, ptq_w2a4_export, random_model, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NOTES_FILE = ROOT / "benchmarks" / "runtime_host_notes.json"   # hand-written: what was tried where a target is missed

OUT = ROOT / "out" / "runtime"
ONNX_DIR = OUT / "onnx"
SAMPLES = {"default": 6, "ddpm-cifar10": 5, "attention-heavy": 5}   # samples per mpqdm-run --bench: >= 20 steps


def fp_model(model: str) -> Path:
    """The fp32 diffusers folder of a model."""
    return DEFAULT_MODEL if model == "default" else random_model(ROOT, model)


def export_of(model: str) -> Path:
    """Our W2A4 PTQ export of a model, made here in out/runtime/<model>-W2A4 when missing (the default
    model with OMQ's mixed-bit split, the others uniform)."""
    return ptq_w2a4_export(fp_model(model), OUT / f"{model}-W2A4", "omq" if model == "default" else "uniform")
ENGINES = ["mpqdm-W2A4", "torch-fp32", "ort-fp32", "ort-int8"]
CONTROL = "mpqdm-W2A4-procs"     # the machine control: `threads` 1-thread processes at once (machine_control)
CALIB_SAMPLES = 8


def mb(nbytes: int) -> float:
    return round(nbytes / 2**20, 2)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)     # Linux: KB


def inputs(model: str, seed: int = 0, t: float = TIMESTEP) -> dict[str, np.ndarray]:
    return feed(fp_model(model), seed, t)


def spawn(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run cmd in a fresh process whose peak RSS (ru_maxrss) is its own. Linux carries the peak RSS of the
    process that calls exec into the new program's ru_maxrss, so a child exec'd straight from this (large)
    process would report our peak; a shell that forks the command (no exec: another command follows) hands
    it a small one."""
    return subprocess.run(forked(cmd), capture_output=True, text=True, cwd=ROOT)


def forked(cmd: list[str]) -> list[str]:
    """cmd run by a shell that forks it (see spawn)."""
    return ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]


def median_seconds(call, repeats: int, warmup: int) -> float:
    return median_ms(call, repeats, warmup) / 1e3


# ---------------------------------------------------------------- preparation (parent process)

def newest_mtime(paths: list[Path]) -> float:
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*"))
             if f.is_file() and "__pycache__" not in f.parts]
    return max(f.stat().st_mtime for f in files)


def mpqdm_binary(model: str) -> Path:
    """out/runtime/<model>-host/mpqdm-run, recompiled when older than the backend, the runtime or the export."""
    from mpqdm.backend_tvm.build import build
    from mpqdm.backend_tvm.compile import compile_export

    export = export_of(model)
    d = OUT / f"{model}-host"
    binary = d / "mpqdm-run"
    sources = [ROOT / "backend_tvm", ROOT / "runtime" / "src", ROOT / "runtime" / "include", export]
    if binary.is_file() and binary.stat().st_mtime > newest_mtime(sources):
        return binary
    print(f"== compiling {model} for the host into {d}", flush=True)
    compile_export(export, "host", d)
    build(d, "host")
    return binary


def onnx_fp32(model: str) -> tuple[Path, float]:
    """The exported fp32 model (frontend/onnx_int8.py) and its relative error against torch."""
    path = ONNX_DIR / f"{model}-fp32.onnx"
    ONNX_DIR.mkdir(parents=True, exist_ok=True)
    print(f"== exporting {model} to {path}", flush=True)
    return path, export_fp32(fp_model(model), path)


def onnx_int8(model: str, fp32: Path) -> tuple[Path, str]:
    """ONNX Runtime's static QDQ int8 model of `fp32` (frontend/onnx_int8.py), and a note of what it quantizes."""
    path = ONNX_DIR / f"{model}-int8.onnx"
    print(f"== quantizing {fp32} to {path}", flush=True)
    return path, quantize_int8(fp_model(model), fp32, path, CALIB_SAMPLES)


# ---------------------------------------------------------------- engines

def mpqdm_cmd(binary: Path, threads: int, count: int, out: str) -> list[str]:
    return [str(binary), str(binary.parent / "model.mpq"), "--seed", "0", "--count", str(count),
            "--threads", str(threads), "--out", out, "--bench"]


def parse_bench(cmd: list[str], r) -> dict:
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    lines = r.stdout.strip().splitlines()
    step = re.match(r"per step: ([0-9.]+) ms \(mean of (\d+) steps x (\d+) samples\)", lines[0])
    median = re.match(r"median step: ([0-9.]+) ms", lines[1])
    peak = re.search(r"peak RSS ([0-9.]+) MB", lines[-1])
    assert step and median and peak, f"unexpected mpqdm-run --bench output:\n{r.stdout[:500]}"
    binary, art = Path(cmd[0]), Path(cmd[1])
    n = int(step.group(2)) * int(step.group(3))
    return {"seconds_per_step": float(median.group(1)) / 1e3, "peak_mb": float(peak.group(1)),
            "size_mb": mb(binary.stat().st_size + art.stat().st_size),
            "note": f"median of {n} steps ({step.group(2)} steps x {step.group(3)} samples; mean {step.group(1)} ms)"}


def engine_mpqdm(model: str, threads: int, count: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = mpqdm_cmd(mpqdm_binary(model), threads, count, tmp)
        return parse_bench(cmd, spawn(cmd))


def machine_control(model: str, procs: int, count: int) -> dict:
    """`procs` 1-thread mpqdm-run processes at once: what this machine gives `procs` independent
    streams of our work at this moment (no shared memory, no barriers). Its seconds per step is the
    processes' mean; (procs x the 1-thread time) / it is the speed-up any `procs`-thread code could
    reach in that round."""
    with tempfile.TemporaryDirectory() as tmp:
        binary = mpqdm_binary(model)
        cmds = [mpqdm_cmd(binary, 1, count, f"{tmp}/{k}") for k in range(procs)]
        running = [subprocess.Popen(forked(c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                   for c in cmds]
        results = []
        for c, pr in zip(cmds, running, strict=True):
            out, err = pr.communicate()
            results.append(parse_bench(c, subprocess.CompletedProcess(c, pr.returncode, out, err)))
    return {"seconds_per_step": float(np.mean([r["seconds_per_step"] for r in results])),
            "peak_mb": max(r["peak_mb"] for r in results), "size_mb": results[0]["size_mb"],
            "note": f"{procs} processes of mpqdm-run --threads 1 at once, mean of their medians"}


def engine_torch(model: str, threads: int, repeats: int, warmup: int) -> dict:
    import torch

    from mpqdm.frontend.model_io import load_unet

    torch.set_num_threads(threads)
    unet = load_unet(fp_model(model))
    feed = {k: torch.from_numpy(v) for k, v in inputs(model).items()}
    with torch.inference_mode():
        s = median_seconds(lambda: unet(feed["sample"], feed["timestep"]), repeats, warmup)
    weights = fp_model(model) / "diffusion_pytorch_model.safetensors"
    return {"seconds_per_step": s, "peak_mb": peak_rss_mb(), "size_mb": mb(weights.stat().st_size),
            "note": f"torch {torch.__version__}, median of {repeats}"}


def engine_ort(model: str, threads: int, repeats: int, warmup: int, precision: str) -> dict:
    import onnxruntime as ort

    path = ONNX_DIR / f"{model}-{precision}.onnx"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = inputs(model)
    s = median_seconds(lambda: sess.run(None, feed), repeats, warmup)
    return {"seconds_per_step": s, "peak_mb": peak_rss_mb(), "size_mb": mb(path.stat().st_size),
            "note": f"onnxruntime {ort.__version__}, median of {repeats}"}


def worker(engine: str, model: str, threads: int, repeats: int, warmup: int) -> dict:
    if engine == "torch-fp32":
        return engine_torch(model, threads, repeats, warmup)
    if engine in ("ort-fp32", "ort-int8"):
        return engine_ort(model, threads, repeats, warmup, engine.split("-")[1])
    raise ValueError(f"unknown worker engine {engine!r}")


def run_worker(engine: str, model: str, threads: int, repeats: int, warmup: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, model, str(threads), "--repeats", str(repeats),
           "--warmup", str(warmup)]
    r = spawn(cmd)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report

def ratios(rows: list[dict]) -> list[dict]:
    """Per (model, threads): ours / each peer, and ours at 1 thread / ours at this many (the default
    model's target at 2 threads: >= 1.6). Each is the median over rounds of the ratio within a round,
    so that a slow spell of the machine, which both engines of a round share, cancels."""
    by = {(r["engine"], r["model"], r["threads"]): r["rounds_s"] for r in rows}

    def ratio(a: list[float] | None, b: list[float] | None) -> float | None:
        return None if a is None or b is None else round(float(np.median(np.divide(a, b))), 3)

    out = []
    for (engine, model, threads), ours in by.items():
        if engine != "mpqdm-W2A4":
            continue
        control = by.get((CONTROL, model, threads))
        row = {"model": model, "threads": threads}
        for peer in ENGINES[1:]:
            row[f"vs_{peer.replace('-', '_')}"] = ratio(ours, by.get((peer, model, threads)))
        vs = row.get("vs_ort_int8")
        row["target_vs_ort_int8"] = None if vs is None else ("met" if vs <= 1.0 else "missed")
        ours_1 = by.get((engine, model, 1))
        row["speedup_vs_1_thread"] = None if threads == 1 else ratio(ours_1, ours)
        # the control: what the machine let a peer gain from the same threads in the same rounds
        row["ort_int8_speedup_vs_1_thread"] = None if threads == 1 else ratio(
            by.get(("ort-int8", model, 1)), by.get(("ort-int8", model, threads)))
        capacity = None if threads == 1 else ratio(ours_1, control)
        row["machine_speedup"] = None if capacity is None else round(threads * capacity, 3)
        out.append(row)
    return out


def engine_round(engine: str, model: str, t: int, a) -> dict:
    if engine == CONTROL:
        return machine_control(model, t, 1 if a.quick else SAMPLES[model])
    if engine == "mpqdm-W2A4":
        return engine_mpqdm(model, t, 1 if a.quick else SAMPLES[model])
    return run_worker(engine, model, t, a.repeats, a.warmup)


def model_rows(model: str, threads: list[int], a) -> list[dict]:
    """Every engine at every thread count, `a.rounds` times in turn; a row's time is the median of its rounds."""
    fp32, err = onnx_fp32(model)
    _, int8_note = onnx_int8(model, fp32)
    notes = {"ort-fp32": f"rel. err vs torch {err:.1e}", "ort-int8": int8_note}
    runs: dict[tuple[str, int], list[dict]] = {}
    for k in range(a.rounds):
        for t in threads:
            for engine in ENGINES + ([CONTROL] if t > 1 else []):
                res = engine_round(engine, model, t, a)
                runs.setdefault((engine, t), []).append(res)
                print(f"round {k + 1}/{a.rounds} {engine:11s} {model:13s} {t} thr: "
                      f"{1e3 * res['seconds_per_step']:9.2f} ms/step, peak {res['peak_mb']} MB", flush=True)
    rows = []
    for (engine, t), rs in runs.items():
        secs = [r["seconds_per_step"] for r in rs]
        note = f"{rs[0]['note']}; median of {len(rs)} rounds"
        rows.append({"engine": engine, "model": model, "threads": t, "seconds_per_step": float(np.median(secs)),
                     "rounds_s": secs, "peak_mb": max(r["peak_mb"] for r in rs), "size_mb": rs[0]["size_mb"],
                     "note": f"{note}; {notes[engine]}" if engine in notes else note})
    return rows


def write_markdown(path: Path, rows: list[dict], rat: list[dict], command: str, load: float, note: str) -> None:
    show = [{**r, "ms_per_step": f"{1e3 * r['seconds_per_step']:.2f}"} for r in rows]
    cols = ["engine", "model", "threads", "ms_per_step", "peak_mb", "size_mb", "note"]
    rcols = ["model", "threads", "vs_ort_int8", "vs_torch_fp32", "vs_ort_fp32", "target_vs_ort_int8",
             "speedup_vs_1_thread", "ort_int8_speedup_vs_1_thread", "machine_speedup"]
    rshow = [{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rat]
    path.write_text(
        "# Host runtime: seconds per sampling step\n\n"
        f"Command: `{command}`; load average at start {load:.2f}\n\n"
        "One UNet call per sampling step, batch 1. mpqdm-W2A4: the median step time `mpqdm-run --bench` prints "
        "(every step of the artifact's sampler); torch and ONNX Runtime: median of the timed calls after warm-up, "
        "each engine and thread count in its own process (peak_mb: that process's peak RSS). size_mb: binary + "
        "model.mpq for mpqdm, the fp32 safetensors for torch, the .onnx file for ORT. mpqdm-W2A4-procs: "
        "the machine's control, as many 1-thread mpqdm-run processes at once as threads (machine_speedup: "
        "threads x our 1-thread time / their mean time, what independent streams got from the cores in "
        "the same rounds).\n\n"
        + markdown_table(show, cols)
        + "\n## Ratios (mpqdm-W2A4 seconds / peer seconds; target: <= 1.0 against ort-int8)\n\n"
        + markdown_table(rshow, rcols)
        + (f"\n{note}\n" if note else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="default model, 1 thread, fewer repeats")
    ap.add_argument("--models", default="default,ddpm-cifar10,attention-heavy")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="every engine and thread count in turn, this many times")
    ap.add_argument("--worker", nargs=3, metavar=("ENGINE", "MODEL", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        engine, model, threads = a.worker
        print(json.dumps(worker(engine, model, int(threads), a.repeats, a.warmup)))
        return
    models, threads = a.models.split(","), [int(t) for t in a.threads.split(",")]
    if a.quick:
        models, threads, a.repeats, a.warmup, a.rounds = ["default"], [1], 5, 1, 1
    for m in models:
        if m not in SAMPLES:
            ap.error(f"unknown model {m!r}; choose from {', '.join(SAMPLES)}")

    load, rows = os.getloadavg()[0], []
    for model in models:
        rows += model_rows(model, threads, a)

    rat = ratios(rows)
    for r in rat:
        print(r)
    stem = (OUT / "runtime_host_quick") if a.quick else (RESULTS / "runtime_host")
    note = json.loads(NOTES_FILE.read_text())["note"] if NOTES_FILE.is_file() else ""
    save_rows(stem.with_suffix(".json"), rows, ratios=rat, load_average_at_start=round(load, 2), note=note)
    from mpqdm.core.machine import command

    write_markdown(stem.with_suffix(".md"), rows, rat, command(), load, note)
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
