"""TRD's settings on short runs, before the long ablation: weight, window and tapped decoder block.

Run: .venv/bin/python benchmarks/qat_trd_tuning.py [--iterations 40] [--threads 1] [--only paper,weight10]
(two processes with disjoint --only lists share the teacher cache; a last run without --only writes
every finished row)
Each setting: W2A4 uniform plan + TRD (the ablation's "trd" row), `--iterations` QAT trajectories of
batch 8 from seed 0 (fast path), then the FD of 1,000 samples; the baseline without TRD is
run the same way. Resumable (rows with row.json, and the committed rows of the same settings, are
kept). Writes benchmarks/results/qat_trd_tuning.json and .md; the best setting is what
benchmarks/qat_ablation.py's --trd should get.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mpqdm.frontend.device import pick_device
from mpqdm.frontend.evaluate import EvalConfig, evaluate
from mpqdm.frontend.qat.train import run_dir
from mpqdm.frontend.train_fp import describe
from mpqdm.testing.bench import markdown_table, qat_export, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# (name, settings); None: the baseline (output distillation only)
SETTINGS = [("baseline", None), ("paper", {"trd_weight": 100.0, "window": 2, "trd_block": -1}),
            ("weight10", {"trd_weight": 10.0, "window": 2, "trd_block": -1}),
            ("weight1000", {"trd_weight": 1000.0, "window": 2, "trd_block": -1}),
            ("window4", {"trd_weight": 100.0, "window": 4, "trd_block": -1}),
            ("block-2", {"trd_weight": 100.0, "window": 2, "trd_block": -2})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--only", default="", help="comma-separated settings to run (the others' finished rows are kept)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = ROOT / "out" / "qat_trd_tuning" / f"it{args.iterations}"
    only = set(filter(None, args.only.split(",")))
    path = RESULTS / "qat_trd_tuning.json"     # committed rows outlive a session's out/ folder
    doc = json.loads(path.read_text()) if path.is_file() else {}
    kept = {r["setting"]: r for r in doc.get("rows", [])} if (doc.get("iterations"), doc.get("samples")) == (
        args.iterations, args.samples) else {}
    rows = []
    for name, trd in SETTINGS:
        done = work / name / "row.json"
        if name in kept and not done.is_file():
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(kept[name], indent=1))
        if only and name not in only and not done.is_file():
            continue
        if not done.is_file():
            variant = "baseline" if trd is None else "trd"
            model = qat_export(ROOT, "W2A4", 2, 4, variant, args.iterations, trd=trd, ckpt_every=5,
                               teacher_cache=work / "teacher")
            s = json.loads((run_dir(model) / "summary.json").read_text())
            m = evaluate(model, work / name / "eval", EvalConfig(samples=args.samples))
            row = {"setting": name, **(trd or {"trd_weight": 0.0}), "iterations": args.iterations, "batch": 8,
                   "seed": 0, "fd": m["fd"], "final_out_loss": round(s["final"]["out"], 3),
                   "final_trd": round(s["final"]["trd"], 4), "qat_seconds": s["seconds"],
                   "device": describe(pick_device("auto"))}
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(row, indent=1))
        rows.append(json.loads(done.read_text()))
        save_rows(RESULTS / "qat_trd_tuning.json", rows, iterations=args.iterations, samples=args.samples)
        (RESULTS / "qat_trd_tuning.md").write_text(
            f"# TRD settings on short runs (W2A4 uniform + TRD, {args.iterations} iterations x batch 8, seed 0; "
            f"FD of {args.samples} samples)\n\nCommand: `.venv/bin/python benchmarks/qat_trd_tuning.py "
            f"--iterations {args.iterations}`\n\n"
            + markdown_table(rows, ["setting", "trd_weight", "window", "trd_block", "fd", "final_out_loss",
                                    "final_trd", "qat_seconds", "device"]))
        print(f"{name}: FD {rows[-1]['fd']:.2f}", flush=True)


if __name__ == "__main__":
    main()
