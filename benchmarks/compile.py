"""`mpqdm compile` results: artifact size and peak activation memory beside the fp32 weights, for the
default model (every board) and the DDPM CIFAR-10 configuration (host and Pi 5), and on the host
the numerics of the lowered plan against the integer reference (Python executor, every sampling step).

Run: .venv/bin/python benchmarks/compile.py
- default model: the W2A4 MPQ-DM export, 40 QAT iterations of batch 8 (mpqdm/testing/bench.py, the QAT
  ablation's row; made under out/bench/ when missing);
- DDPM CIFAR-10: random weights, PTQ W2A4 uniform with a small random calibration (the sizes do not
  depend on the weights' values; mpqdm/testing/bench.py).
Writes benchmarks/results/compile.json and compile.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpqdm.backend_tvm.compile import compile_export
from mpqdm.backend_tvm.lower import lower_export
from mpqdm.boards.registry import load_board
from mpqdm.testing.bench import cifar_w2a4_export, default_w2a4_export, markdown_table, save_rows
from mpqdm.testing.lowering_check import check_unet

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

WORK = ROOT / "out" / "compile"


def numerics(export: Path, lib_dir: Path) -> dict:
    import tvm

    plan, low = lower_export(export, load_board("host"))
    lib = tvm.runtime.load_module(str(lib_dir / "kernels.so"))
    res = [check_unet(plan, low, lib, export, step, seed=step) for step in range(plan.n_steps)]
    rel = [r["rel_err"] for r in res]
    return {"unet_rel_err": float(np.median(rel)), "unet_rel_err_max": max(rel),
            "steps_within_1e-3": sum(r < 1e-3 for r in rel), "steps": len(rel),
            "flipped_codes": int(np.median([r["flipped_codes"] for r in res])),
            "flipped_codes_max": max(r["flipped_codes"] for r in res), "codes": res[0]["codes"],
            "accumulators_exact": all(r["exact"] for r in res),
            "accumulators_compared": f"{sum(r['acc_compared'] for r in res)}/{sum(r['acc_total'] for r in res)}"}


def main() -> None:
    default, cifar = default_w2a4_export(ROOT), cifar_w2a4_export(ROOT)
    rows = []
    jobs = [("default", default, b) for b in ("host", "rpi4", "rpi5", "jetson-orin-nano")]
    jobs += [("ddpm-cifar10", cifar, b) for b in ("host", "rpi5")]
    for model, export, board in jobs:
        print(f"== {model} {board}", flush=True)
        out = WORK / f"{model}-{board}"
        info = compile_export(export, board, out)
        row = {"model": model, "board": board, "plan": "W2A4", "artifact_kb": info["artifact_kb"],
               "fp32_weights_kb": info["fp32_weights_kb"], "peak_activation_kb": info["peak_activation_kb"],
               "activations_without_reuse_kb": info["activations_without_reuse_kb"],
               "kernel_calls": info["kernel_calls"], "kernels": info["kernels"], "library_kb": info["library_kb"],
               "compile_seconds": info["compile_seconds"], "unet_rel_err": None, "flipped_codes": None}
        if board == "host":
            row.update(numerics(export, out))
        rows.append(row)
        print(row, flush=True)
    save_rows(RESULTS / "compile.json", rows, note="unet_rel_err: median over the 20 sampling steps of one UNet "
              "call (random input, seed = step) against the integer reference; flipped_codes: median count of "
              "activation codes that differ from the reference's (out of `codes`); accumulators recovered from "
              "each quantized layer's output and compared with the reference's on the same input codes")
    cols = ["model", "board", "plan", "artifact_kb", "fp32_weights_kb", "peak_activation_kb",
            "activations_without_reuse_kb", "kernel_calls", "kernels", "library_kb", "compile_seconds",
            "unet_rel_err", "unet_rel_err_max", "steps_within_1e-3", "flipped_codes", "flipped_codes_max", "codes",
            "accumulators_exact"]
    (RESULTS / "compile.md").write_text(
        "# mpqdm compile: sizes, memory and numerics\n\nCommand: `.venv/bin/python benchmarks/compile.py`\n\n"
        "Artifact: packed weights, steps and zero points, fp32 weights of the layers kept in floating point, "
        "per-step activation parameters, plan and sampler. Peak activation memory: the arena of the static "
        "memory plan (liveness reuse), beside the sum of all activations without reuse. Numerics (host): "
        "one UNet call per sampling step through the Python executor against the frontend's integer reference."
        "\n\n" + markdown_table(rows, cols) + "\n")


if __name__ == "__main__":
    main()
