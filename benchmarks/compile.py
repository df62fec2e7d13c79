"""`mpqdm compile` results: artifact size and peak activation memory beside the fp32 weights, for the
default model (every board) and the DDPM CIFAR-10 configuration (host and Pi 5), and on the host
the numerics of the lowered plan against the integer reference (Python executor, every sampling step).

Run: .venv/bin/python benchmarks/compile.py
- default model: the W2A4 MPQ-DM export of the QAT ablation (made by benchmarks/qat_ablation.py
  --only W2A4-mpqdm when missing);
- DDPM CIFAR-10: random weights (out/ddpm-cifar10-random, as benchmarks/allocate_cifar.py makes it),
  PTQ W2A4 uniform with a small random calibration (the sizes do not depend on the weights' values).
Writes benchmarks/results/compile.json and compile.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np  # noqa: E402
from common import markdown_table, save_rows  # noqa: E402
from lowering_check import check_unet  # noqa: E402

from backend_tvm.compile import compile_export  # noqa: E402
from backend_tvm.lower import lower_export  # noqa: E402
from boards.profile import load_board  # noqa: E402
from frontend.quant.calibrate import CalibConfig  # noqa: E402
from frontend.quant.ptq import PTQConfig, quantize  # noqa: E402
from mpqdm.paths import REPO_ROOT, RESULTS  # noqa: E402

DEFAULT_EXPORT = REPO_ROOT / "out" / "qat_ablation" / "v2_it40_b8_r0" / "W2A4-mpqdm" / "export"
CIFAR_MODEL = REPO_ROOT / "out" / "ddpm-cifar10-random"
CIFAR_EXPORT = REPO_ROOT / "out" / "compile" / "ddpm-cifar10-W2A4"
WORK = REPO_ROOT / "out" / "compile"


def prepare() -> None:
    bench = Path(__file__).parent
    if not DEFAULT_EXPORT.is_dir():
        subprocess.run([sys.executable, str(bench / "qat_ablation.py"), "--only", "W2A4-mpqdm"], check=True)
    if not CIFAR_MODEL.is_dir():
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'benchmarks'); "
                        "import allocate_cifar as a; a.prepare()"], check=True, cwd=REPO_ROOT)
    if not (CIFAR_EXPORT / "quant_export.json").is_file():
        quantize(CIFAR_MODEL, CIFAR_EXPORT, PTQConfig(plan="uniform", wbits=2, abits=4,
                                                      calib=CalibConfig(samples=2, steps=4, batch=2)))


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
    prepare()
    rows = []
    jobs = [("default", DEFAULT_EXPORT, b) for b in ("host", "rpi4", "rpi5", "jetson-orin-nano")]
    jobs += [("ddpm-cifar10", CIFAR_EXPORT, b) for b in ("host", "rpi5")]
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
