"""FD of 1,000 samples made by the C runtime against the PyTorch fake-quant FD of the same export, from
the same initial noise (the evaluation's own noise, written to a file for mpqdm-run --noise).

Run: .venv/bin/python benchmarks/runtime_fd.py [--export DIR] [--threads 2]
Default export: the QAT ablation's W2A4 MPQ-DM model. PyTorch's FD comes from `mpqdm eval`'s code
(cached under the export's eval folder when the ablation made it). The runtime is compiled and
built for the host into out/runtime_fd/<export>/. Writes benchmarks/results/runtime_fd.json and .md:
one row per export (a rerun replaces that export's row), each with the command that made it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from mpqdm.backend_tvm.build import build
from mpqdm.backend_tvm.compile import compile_export
from mpqdm.core.machine import command
from mpqdm.core.resources import DEFAULT_CLASSIFIER
from mpqdm.frontend.classifier import load_classifier
from mpqdm.frontend.evaluate import EvalConfig, eval_noise, evaluate, features, from_uint8, real_stats, to_uint8
from mpqdm.frontend.fd import fd_of_features
from mpqdm.testing.bench import default_w2a4_export, markdown_table, save_rows
from mpqdm.testing.runtime_check import fake_quant_samples, intref_samples, psnr

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

WORK = ROOT / "out" / "runtime_fd"


def pytorch_images(eval_dir: Path, cfg: EvalConfig) -> np.ndarray | None:
    """The evaluation's cached uint8 batches (frontend.evaluate.sample_images), in sample order."""
    nb = -(-cfg.samples // cfg.batch)
    for key in (eval_dir / ".partial").glob(f"*_seed{cfg.seed}_steps{cfg.steps}_b{cfg.batch}"):
        files = [key / f"batch{b:04d}_n{min(cfg.batch, cfg.samples - b * cfg.batch)}.npy" for b in range(nb)]
        if all(f.is_file() for f in files):
            return np.concatenate([np.load(f) for f in files])
    return None


def earlier_rows(path: Path) -> list[dict]:
    """The rows already in the results file (each keeps the command that made it)."""
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    return [{**r, "command": r.get("command", doc.get("command"))} for r in doc.get("rows", [])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--export", help="a quantized export (default: the W2A4 MPQ-DM export of mpqdm/testing/bench.py)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--psnr-samples", type=int, default=16, help="samples also run by fake-quant and intref "
                    "(the integer reference is slow: int64 matmuls)")
    ap.add_argument("--rerun", action="store_true", help="run the runtime again even if its samples exist")
    args = ap.parse_args()
    export = Path(args.export).resolve() if args.export else default_w2a4_export(ROOT)
    cfg = EvalConfig(samples=args.samples)
    torch_m = evaluate(export, export.parent / "eval", cfg)               # cached when already made
    work = WORK / f"{export.parent.name}-{hashlib.sha256(str(export).encode()).hexdigest()[:8]}"
    d = work / "host"
    samples = work / "samples" / "samples.f32"
    seconds = None
    if args.rerun or not samples.is_file():        # resumable: the runtime's samples are kept
        compile_export(export, "host", d)
        build(d, "host")
        work.mkdir(parents=True, exist_ok=True)
        eval_noise(cfg).tofile(work / "noise.f32")
        t0 = time.perf_counter()
        subprocess.run([str(d / "mpqdm-run"), str(d / "model.mpq"), "--noise", str(work / "noise.f32"), "--out",
                        str(work / "samples"), "--threads", str(args.threads)], check=True)
        seconds = round(time.perf_counter() - t0, 1)
    x = np.fromfile(samples, np.float32).reshape(args.samples, 32, 32, 1)
    imgs = to_uint8(x.transpose(0, 3, 1, 2))
    classifier, _ = load_classifier(DEFAULT_CLASSIFIER)
    real, floor = real_stats(classifier)
    fd = fd_of_features(features(classifier, from_uint8(imgs)), real)
    torch_imgs = pytorch_images(export.parent / "eval", cfg)
    row = {"export": str(export.relative_to(ROOT)), "samples": args.samples, "steps": cfg.steps,
           "fd_runtime": round(fd, 3), "fd_pytorch": torch_m["fd"], "fd_floor": round(floor, 3),
           "fd_difference": round(fd - torch_m["fd"], 3), "runtime_seconds": seconds,
           "threads": args.threads, "command": command()}
    if torch_imgs is not None:          # 8-bit images of both, same noise
        row["psnr_8bit_images_db"] = round(psnr(imgs.astype(np.float64), torch_imgs.astype(np.float64), 255.0), 2)
    k = args.psnr_samples               # float samples: runtime and the exact integer reference vs fake-quant
    noise = eval_noise(cfg)[:k]
    fq, ir = fake_quant_samples(export, noise, cfg.steps), intref_samples(export, noise, cfg.steps)
    row.update(psnr_samples=k, psnr_runtime_vs_fake_quant_db=round(psnr(x[:k], fq), 2),
               psnr_intref_vs_fake_quant_db=round(psnr(ir, fq), 2), psnr_runtime_vs_intref_db=round(psnr(x[:k], ir), 2))
    rows = [r for r in earlier_rows(RESULTS / "runtime_fd.json") if r["export"] != row["export"]] + [row]
    save_rows(RESULTS / "runtime_fd.json", rows)
    (RESULTS / "runtime_fd.md").write_text(
        "# FD of runtime-made samples (default model, same noise as the PyTorch evaluation)\n\n"
        "Each row's command is in its `command` column.\n\n"
        "PSNR over the model's [-1, 1] range between DDIM runs (20 steps) from the same noise: the C runtime, "
        "the frontend's exact integer reference (intref) and the PyTorch fake-quant model. The design asked for "
        "35 dB runtime vs fake-quant.\n\n" + markdown_table(rows, list(row)) + "\n")
    print(row)


if __name__ == "__main__":
    main()
