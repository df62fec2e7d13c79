"""Judging a built mpqdm-run (the deploy pipeline's checks, usable alone): its UNet calls against the
PyTorch fake-quant model (and, for an emulated board, against the host build under qemu with the
board's CPU), its samples and their FD against the FP model's from the same noise, its step time and
memory, and ONNX Runtime int8 of the FP model measured the same way. Each takes an output folder `d`
and returns a JSON-able summary."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mpqdm.backend_tvm.run import bench_binary, run_binary
from mpqdm.boards.registry import load_board
from mpqdm.core.errors import UserError
from mpqdm.core.resources import DEFAULT_CLASSIFIER
from mpqdm.frontend.classifier import features, load_classifier
from mpqdm.frontend.evaluate import EvalConfig, eval_noise, evaluate, from_uint8, real_stats, save_grid, to_uint8
from mpqdm.frontend.fd import fd_of_features
from mpqdm.frontend.onnx_int8 import export_fp32, input_shape, quantize_int8, time_in_process
from mpqdm.frontend.torch_run import psnr, rel_error, torch_eps_fn, torch_samples

CHECK_SAMPLES = 4          # inputs per checked step
MEDIAN_BOUND = 5e-2        # binary vs fake-quant: median relative error of one UNet call on one input
AGREE_BOUND = 1e-5         # board build under qemu vs the host build


def threads_for(board, cfg) -> int:
    return max(1, min(cfg.threads or board.threads, os.cpu_count() or 1))


def binary_of(board, d: Path) -> list[str]:
    """How to run d/mpqdm-run here: natively, or under the board's emulator."""
    return board.qemu_command(d / "mpqdm-run") if board.is_cross else [str(d / "mpqdm-run")]


def binary_check(export: Path, builds: dict[str, Path], board, cfg, d: Path) -> dict:
    steps = sorted({0, cfg.steps // 2, cfg.steps - 1})
    _, c, h, w = input_shape(export)
    x = np.random.default_rng(0).standard_normal((CHECK_SAMPLES, h, w, c)).astype(np.float32)
    cmd, art = binary_of(board, builds[board.name]), builds[board.name] / "model.mpq"
    t = str(threads_for(board, cfg))
    eps_at = torch_eps_fn(export, cfg.steps)
    rows, agree = [], []
    for s in tqdm(steps, desc="check", unit="step"):
        ours = run_binary(cmd, art, x, d / f"step{s}", "--unet-step", str(s), "--threads", t)
        ref = eps_at(x, s)
        rows.append({"step": s, "rel_error_vs_pytorch": rel_error(ours, ref),
                     "per_input": [rel_error(ours[i], ref[i]) for i in range(len(x))]})
        if board.is_cross:
            host = run_binary([str(builds["host"] / "mpqdm-run")], builds["host"] / "model.mpq", x,
                              d / f"host{s}", "--unet-step", str(s))
            agree.append({"step": s, "rel_error_vs_host": rel_error(ours, host), "identical": bool(
                np.array_equal(ours, host))})
    x2 = x[:2]
    samples = run_binary(cmd, art, x2, d / "sampling", "--threads", t)
    # each input is judged alone: a float-rounding difference that flips one activation code cascades
    # through a small model's one sample (0.1-0.2 relative error, the others stay at 1e-7), which a
    # per-step error would charge to the whole step; a broken binary fails every input
    per_input = [e for r in rows for e in r["per_input"]]
    out = {"steps": steps, "inputs": CHECK_SAMPLES, "calls": rows, "bound": MEDIAN_BOUND,
           "median_rel_error": float(np.median(per_input)),
           "inputs_above_bound": sum(e > MEDIAN_BOUND for e in per_input), "checked_inputs": len(per_input),
           "sampling_psnr_db_vs_pytorch": round(psnr(samples, torch_samples(export, x2, cfg.steps)), 2),
           "emulated": board.is_cross, "runner": " ".join(cmd[:-1]) or "native"}
    if board.is_cross:
        host = run_binary([str(builds["host"] / "mpqdm-run")], builds["host"] / "model.mpq", x2, d / "host-sampling")
        agree.append({"step": "sampling", "rel_error_vs_host": rel_error(samples, host),
                      "identical": bool(np.array_equal(samples, host))})
        out.update(host_agreement=agree, agree_bound=AGREE_BOUND,
                   identical_to_host=all(a["identical"] for a in agree))
        worst = max(a["rel_error_vs_host"] for a in agree)
        if worst > AGREE_BOUND:
            raise UserError(f"the {board.name} binary under qemu differs from the host build (relative error "
                            f"{worst:.3g} > {AGREE_BOUND:g}): a code generation problem for this board. Possible "
                            "solutions: report it with this folder's stages/check")
    if out["median_rel_error"] > MEDIAN_BOUND:
        raise UserError(f"the built binary's UNet calls differ from the PyTorch model by a median relative error "
                        f"of {out['median_rel_error']:.3g} over {len(per_input)} (step, input) pairs (bound "
                        f"{MEDIAN_BOUND:g}; {out['inputs_above_bound']} above it). Possible solutions: report it "
                        "with this folder's stages/check")
    return out


def scores_fd(model: Path) -> bool:
    """The FD's classifier takes 1-channel 32x32 images: other models are deployed and checked, not scored."""
    return input_shape(model)[1:] == (1, 32, 32)


def fd_config(cfg) -> EvalConfig:
    return EvalConfig(samples=cfg.fd_samples, steps=cfg.steps)


def runtime_samples(host_dir: Path, board, cfg, d: Path, chunk: int = 50) -> dict:
    """cfg.fd_samples samples by the binary that runs here, from the FP evaluation's noise, in chunks
    (kept: a resumed run makes only the missing ones); their FD and an 8x8 grid."""
    ecfg = fd_config(cfg)
    noise = eval_noise(ecfg)
    d.mkdir(parents=True, exist_ok=True)
    parts, t0 = [], time.perf_counter()
    threads = str(threads_for(load_board("host") if board.is_cross else board, cfg))
    bar = tqdm(total=len(noise), desc="runtime samples", unit="img")
    for i in range(0, len(noise), chunk):
        f = d / f"chunk{i:06d}.f32"
        if not f.is_file():
            got = run_binary([str(host_dir / "mpqdm-run")], host_dir / "model.mpq", noise[i:i + chunk],
                             d / "work", "--threads", threads)
            got.tofile(f.with_suffix(".tmp"))
            f.with_suffix(".tmp").replace(f)
        parts.append(np.fromfile(f, np.float32).reshape(noise[i:i + chunk].shape))
        bar.update(len(parts[-1]))
    bar.close()
    imgs = to_uint8(np.concatenate(parts).transpose(0, 3, 1, 2))
    save_grid(imgs, d / "samples_grid.png")
    classifier, _ = load_classifier(DEFAULT_CLASSIFIER)
    real, floor = real_stats(classifier)
    fd = fd_of_features(features(classifier, from_uint8(imgs)), real)
    return {"fd": round(fd, 3), "fd_floor": round(floor, 3), "samples": len(imgs), "steps": cfg.steps,
            "grid": str(d / "samples_grid.png"), "seconds": round(time.perf_counter() - t0, 1),
            "made_by": "host build" if board.is_cross else "board binary"}


def fp_samples(model: Path, cfg, d: Path) -> dict:
    m = evaluate(model, d, fd_config(cfg), device=cfg.device)
    return {"fd": m["fd"], "fd_floor": m["fd_floor"], "samples": m["samples"], "grid": str(d / "samples_grid.png")}


def bench_stage(host_dir: Path, board, cfg, d: Path) -> dict:
    if board.is_cross:
        return {"measured": False, "why": f"{board.name} is emulated here (qemu): time it on the board with "
                "mpqdm-run model.mpq --bench"}
    t = threads_for(board, cfg)
    r = bench_binary([str(host_dir / "mpqdm-run")], host_dir / "model.mpq", d, threads=t)
    r1 = bench_binary([str(host_dir / "mpqdm-run")], host_dir / "model.mpq", d, threads=1) if t > 1 else r
    return {"measured": True, **r, "ms_per_step_1_thread": r1["ms_per_step"], "peak_rss_mb_1_thread": r1["peak_rss_mb"]}


def peer_stage(model: Path, board, cfg, d: Path) -> dict:
    """ONNX Runtime int8 of the FP model (frontend/onnx_int8.py): its size, and on the host its time per
    UNet call and peak memory, measured as ours are."""
    d.mkdir(parents=True, exist_ok=True)
    fp32, int8 = d / "fp32.onnx", d / "int8.onnx"
    export_fp32(model, fp32)
    note = quantize_int8(model, fp32, int8)
    out = {"int8_kb": round(int8.stat().st_size / 1024, 1), "fp32_onnx_kb": round(fp32.stat().st_size / 1024, 1),
           "note": note, "measured": not board.is_cross}
    if not board.is_cross:
        import onnxruntime

        t = threads_for(board, cfg)
        runs = {n: time_in_process(int8, model, n) for n in sorted({1, t})}
        out.update(ms_per_call=runs[t]["ms"], ms_per_call_1_thread=runs[1]["ms"], threads=t,
                   peak_rss_mb=runs[t]["peak_rss_mb"], ort_version=onnxruntime.__version__)
    return out
