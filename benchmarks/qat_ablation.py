"""QAT ablation on the default model (MPQ-DM's parts, one at a time): resumable, row by row.

Run: .venv/bin/python benchmarks/qat_ablation.py [--iterations 40] [--batch 8] [--only W2A4-mpqdm,...]
Each row: PTQ initialisation with its plan, `--iterations` QAT trajectories (same seed for every
row), then the FD of 1,000 samples. A row already in qat_ablation.json with the same iterations,
batch and samples is skipped; an interrupted QAT resumes from its checkpoint and an interrupted
evaluation from its cached batches. Writes benchmarks/results/qat_ablation.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.frontend.device import pick_device
from mpqdm.frontend.evaluate import EvalConfig, evaluate
from mpqdm.frontend.qat.train import run_dir
from mpqdm.frontend.train_fp import describe
from mpqdm.testing.bench import QAT_VARIANTS, load_rows, markdown_table, qat_export, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# variants: mpqdm/testing/bench.py QAT_VARIANTS; OMQ uses the released code's fixed 10% split, because under
# PTQ costs the k search keeps k = 0 at W2 (1-bit channels only pay off once trained; see ptq.md)
ROWS = [("W2A4", 2, 4, v) for v in ("fp", "baseline", "omq", "trd", "mpqdm")]
ROWS += [(c, w, 4, v) for c, w in (("W3A4", 3), ("W4A4", 4)) for v in ("baseline", "mpqdm")]
GRIDS = {"fp", "baseline", "mpqdm"}
NOTES_FILE = ROOT / "benchmarks" / "qat_ablation_notes.json"   # hand-written: what was tried where a target is missed


def run_row(config, wbits, abits, variant, args) -> dict:
    key = f"{config}-{variant}"
    dev = pick_device(args.device)
    row = {"config": config, "variant": variant, "wbits": wbits, "abits": abits, "iterations": 0,
           "batch": args.batch, "samples": args.samples, "device": describe(dev)}
    model, train_s = DEFAULT_MODEL, 0.0
    if variant != "fp":
        plan, trd = QAT_VARIANTS[variant]
        model = qat_export(ROOT, config, wbits, abits, variant, args.iterations, args.batch, args.lora_rank,
                           args.ckpt_every, args.device)
        s = json.loads((run_dir(model) / "summary.json").read_text())
        train_s = s["seconds"]
        row.update(iterations=s["iterations"], plan=plan, trd_weight=trd, avg_wbits=s["avg_wbits"],
                   final_out_loss=round(s["final"]["out"], 3), final_trd=round(s["final"]["trd"], 4))
        shutil.copyfile(run_dir(model) / "loss_curve.png", RESULTS / f"qat_{key}_loss.png")
    t0 = time.perf_counter()
    eval_dir = ROOT / "out" / "qat_ablation" / f"it{args.iterations}_b{args.batch}_r{args.lora_rank}" / key / "eval"
    m = evaluate(model, eval_dir, EvalConfig(samples=args.samples), device=args.device)
    if variant in GRIDS:
        shutil.copyfile(eval_dir / "samples_grid.png", RESULTS / f"qat_{key}_grid.png")
    row.update(fd=m["fd"], fd_floor=m["fd_floor"], qat_seconds=train_s,
               eval_seconds=round(time.perf_counter() - t0, 1))
    return row


def targets(rows: list[dict]) -> list[str]:
    fd = {(r["config"], r["variant"]): r["fd"] for r in rows}
    out = []
    if ("W2A4", "baseline") in fd and ("W2A4", "mpqdm") in fd:
        d = 1 - fd[("W2A4", "mpqdm")] / fd[("W2A4", "baseline")]
        where = f"{100 * d:.0f}% below" if d >= 0 else f"{-100 * d:.0f}% above"
        out.append(f"W2A4: MPQ-DM FD is {where} the baseline's (target: at least 58% below): "
                   f"{'met' if d >= 0.58 else 'missed'}")
    if ("W2A4", "fp") in fd and ("W4A4", "mpqdm") in fd:
        d = fd[("W4A4", "mpqdm")] / fd[("W2A4", "fp")] - 1
        out.append(f"W4A4: MPQ-DM FD is {100 * d:+.0f}% from the FP model's (target: within 25%): "
                   f"{'met' if d <= 0.25 else 'missed'}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--lora-rank", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default="", help="comma-separated CONFIG-VARIANT keys")
    ap.add_argument("--report", action="store_true", help="only rewrite the JSON and Markdown (notes edited)")
    args = ap.parse_args()
    same = {"iterations": args.iterations, "batch": args.batch, "samples": args.samples}
    rows = [r for r in load_rows(RESULTS / "qat_ablation.json")
            if r["samples"] == args.samples and r["batch"] == args.batch
            and r["iterations"] in (0, args.iterations)]
    done = {(r["config"], r["variant"]) for r in rows}
    only = {k for k in args.only.split(",") if k}
    for config, w, a, variant in ROWS:
        if args.report or (config, variant) in done or (only and f"{config}-{variant}" not in only):
            continue
        print(f"== {config} {variant}", flush=True)
        rows.append(run_row(config, w, a, variant, args))
        write_report(rows, same, args.samples)
    if rows:
        write_report(rows, same, args.samples)


def write_report(rows: list[dict], same: dict, samples: int) -> None:
    """JSON and Markdown from the rows so far and the hand-written notes (rerun with --report after editing them)."""
    order = {(c, v): i for i, (c, _, _, v) in enumerate(ROWS)}
    notes = json.loads(NOTES_FILE.read_text()) if NOTES_FILE.is_file() else {}
    rows.sort(key=lambda r: order[(r["config"], r["variant"])])
    for r in rows:
        r["note"] = notes.get(f"{r['config']}-{r['variant']}", "")
    save_rows(RESULTS / "qat_ablation.json", rows, **same, ddim_steps=20, targets=targets(rows))
    cols = ["config", "variant", "avg_wbits", "fd", "iterations", "batch", "qat_seconds", "eval_seconds",
            "device", "note"]
    (RESULTS / "qat_ablation.md").write_text(
        f"# QAT ablation on the default model (FD, {samples} samples, 20 DDIM steps)\n\n"
        "Command: `.venv/bin/python benchmarks/qat_ablation.py`\n\n"
        + markdown_table(rows, cols) + "\n" + "\n".join(f"- {t}" for t in targets(rows)) + "\n")


if __name__ == "__main__":
    main()
