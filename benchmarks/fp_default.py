"""Writes benchmarks/results/fp_default.json (+ sample grid): FD of the committed default FP model.

Run: .venv/bin/python benchmarks/fp_default.py [--samples 1000] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from mpqdm.core.io import write_json
from mpqdm.core.machine import provenance
from mpqdm.core.resources import DEFAULT_CLASSIFIER, DEFAULT_MODEL
from mpqdm.frontend.classifier import load_classifier
from mpqdm.frontend.evaluate import EvalConfig, evaluate
from mpqdm.frontend.flops import unet_flops
from mpqdm.frontend.model_io import load_unet

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    work = ROOT / "out" / "eval" / "fp_default"
    m = evaluate(DEFAULT_MODEL, work, EvalConfig(samples=args.samples), device=args.device)
    unet = load_unet(DEFAULT_MODEL)
    train = json.loads((DEFAULT_MODEL / "train_info.json").read_text())
    _, cinfo = load_classifier(DEFAULT_CLASSIFIER)
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "samples_grid.png", RESULTS / "fp_default_grid.png")
    row = {**provenance(), "fd": m["fd"], "fd_floor": m["fd_floor"], "samples": m["samples"],
           "ddim_steps": m["ddim_steps"], "gflops_per_call": round(unet_flops(unet) / 1e9, 3),
           "params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 3),
           "train_seconds": train["train_seconds"], "train_device": train["train_device"],
           "train_iters": train["iters"], "train_batch": train["config"]["batch"],
           "train_phases": train.get("phases"),
           "classifier_accuracy": cinfo["heldout_accuracy"],
           "sampling_seconds": m["sampling_seconds"], "sample_grid": "fp_default_grid.png"}
    write_json(RESULTS / "fp_default.json", row)
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
