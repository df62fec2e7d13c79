"""QAT ablation on the default model (MPQ-DM's parts, one at a time, two QAT seeds where it matters):
resumable, row by row, several rows at once.

Run: .venv/bin/python benchmarks/qat_ablation.py [--iterations 400] [--jobs 2 --threads 1]
     [--trd trd_weight=100,window=2,trd_block=-1] [--only W2A4-mpqdm-s0,...] [--report]
Each row: PTQ initialisation with its plan, `--iterations` QAT trajectories of `--batch` from its
QAT seed (fast path; the teacher's trajectories are shared by the rows of a seed
through out/qat_ablation/teacher), then the FD of 1,000 samples (evaluation seed 0). A finished row
leaves row.json in its folder and is not run again; an interrupted QAT resumes from its checkpoint,
an interrupted evaluation from its cached batches. `--jobs N` runs N rows at once, each in its own
process with `--threads` PyTorch threads. Writes benchmarks/results/qat_ablation.json and .md.
The row with the ILP's plan instead of the OMQ split waits for the allocation issue's new cost.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NOTES_FILE = ROOT / "benchmarks" / "qat_ablation_notes.json"   # hand-written: what was tried where a target is missed

# (config, wbits, abits, variant, seed); variants: mpqdm/testing/bench.py QAT_VARIANTS. OMQ uses the
# released code's fixed 10% split: under PTQ costs the k search keeps k = 0 at W2 (ptq.md).
ROWS = [("W2A4", 2, 4, "fp", 0)]
ROWS += [("W2A4", 2, 4, v, s) for v, seeds in (("baseline", (0, 1)), ("omq", (0, 1)), ("trd", (0,)),
                                                ("mpqdm", (0, 1))) for s in seeds]
ROWS += [("W4A4", 4, 4, v, s) for v in ("baseline", "mpqdm") for s in (0, 1)]


def key(row) -> str:
    config, _, _, variant, seed = row
    return f"{config}-{variant}" if variant == "fp" else f"{config}-{variant}-s{seed}"


def work_dir(args) -> Path:
    return ROOT / "out" / "qat_ablation" / f"it{args.iterations}_b{args.batch}_r{args.lora_rank}"


def parse_trd(text: str) -> dict:
    out = {}
    for part in filter(None, text.split(",")):
        k, _, v = part.partition("=")
        out[k] = float(v) if k == "trd_weight" else int(v)
    return out


def run_row(row, args) -> dict:
    import torch

    from mpqdm.core.resources import DEFAULT_MODEL
    from mpqdm.frontend.device import pick_device
    from mpqdm.frontend.evaluate import EvalConfig, evaluate
    from mpqdm.frontend.qat.train import run_dir
    from mpqdm.frontend.train_fp import describe
    from mpqdm.testing.bench import QAT_VARIANTS, qat_export

    if args.threads:
        torch.set_num_threads(args.threads)
    config, wbits, abits, variant, seed = row
    dev = pick_device(args.device)
    out = {"config": config, "variant": variant, "seed": seed, "wbits": wbits, "abits": abits, "iterations": 0,
           "batch": args.batch, "samples": args.samples, "device": describe(dev)}
    model, train_s = DEFAULT_MODEL, 0.0
    if variant != "fp":
        plan, trd_weight = QAT_VARIANTS[variant]
        trd = parse_trd(args.trd) if trd_weight else None
        model = qat_export(ROOT, config, wbits, abits, variant, args.iterations, args.batch, args.lora_rank,
                           args.ckpt_every, args.device, seed=seed, trd=trd,
                           teacher_cache=work_dir(args) / "teacher", progress=args.jobs == 1)
        s = json.loads((run_dir(model) / "summary.json").read_text())
        train_s = s["seconds"]
        cfg = s["config"]
        out.update(iterations=s["iterations"], plan=plan, trd_weight=cfg["trd_weight"], window=cfg["window"],
                   trd_block=cfg.get("trd_block", -1), avg_wbits=s["avg_wbits"],
                   final_out_loss=round(s["final"]["out"], 3), final_trd=round(s["final"]["trd"], 4),
                   qat_threads=s.get("threads"), compiled=s.get("compiled", False))
        shutil.copyfile(run_dir(model) / "loss_curve.png", RESULTS / f"qat_{key(row)}_loss.png")
    t0 = time.perf_counter()
    eval_dir = work_dir(args) / key(row) / "eval"
    m = evaluate(model, eval_dir, EvalConfig(samples=args.samples), device=args.device, progress=args.jobs == 1)
    shutil.copyfile(eval_dir / "samples_grid.png", RESULTS / f"qat_{key(row)}_grid.png")
    out.update(fd=m["fd"], fd_floor=m["fd_floor"], qat_seconds=train_s,
               eval_seconds=round(time.perf_counter() - t0, 1))
    return out


def committed(args) -> dict[str, dict]:
    """Rows of benchmarks/results/qat_ablation.json made with these settings: a session's out/ folder
    does not outlive it, the committed rows do."""
    path = RESULTS / "qat_ablation.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    if (doc.get("iterations"), doc.get("batch"), doc.get("samples")) != (args.iterations, args.batch, args.samples):
        return {}
    trd = {"trd_weight": 100.0, "window": 2, "trd_block": -1, **parse_trd(args.trd)}
    out = {}
    for r in doc.get("rows", []):
        if r.get("trd_weight") and any(r.get(k) != v for k, v in trd.items()):
            continue
        out[key((r["config"], 0, 0, r["variant"], r["seed"]))] = {k: v for k, v in r.items() if k != "note"}
    return out


def finished(args) -> dict[str, dict]:
    done = committed(args)
    for row in ROWS:
        f = work_dir(args) / key(row) / "row.json"
        if f.is_file():
            done[key(row)] = json.loads(f.read_text())
    return done


def mean_rows(rows: list[dict]) -> dict[tuple, dict]:
    """Per (config, variant): the mean FD over its seeds and their spread (max - min)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["config"], r["variant"]), []).append(r["fd"])
    return {k: {"fd": statistics.mean(v), "spread": max(v) - min(v), "seeds": len(v)} for k, v in groups.items()}


def targets(rows: list[dict]) -> list[str]:
    m, out = mean_rows(rows), []
    fp = m.get(("W2A4", "fp"))
    for config, need in (("W2A4", "gap"), ("W4A4", "fp15")):
        b, q = m.get((config, "baseline")), m.get((config, "mpqdm"))
        if not (fp and b and q and b["seeds"] > 1 and q["seeds"] > 1):
            out.append(f"{config}: waiting for both seeds of the baseline and MPQ-DM rows")
            continue
        spread = max(b["spread"], q["spread"])
        beyond = b["fd"] - q["fd"] > spread
        if need == "gap":
            closed = (b["fd"] - q["fd"]) / (b["fd"] - fp["fd"])
            ok = closed >= 0.58 and beyond
            out.append(f"W2A4: MPQ-DM closes {100 * closed:.0f}% of the baseline's gap to FP (mean FD {q['fd']:.2f} "
                       f"against {b['fd']:.2f}, FP {fp['fd']:.2f}; seed spread {spread:.2f}); target: at least 58% "
                       f"and more than the spread: {'met' if ok else 'missed'}")
        else:
            rel = q["fd"] / fp["fd"] - 1
            ok = beyond and rel <= 0.15
            out.append(f"W4A4: MPQ-DM mean FD {q['fd']:.2f} against the baseline's {b['fd']:.2f} (seed spread "
                       f"{spread:.2f}), {100 * rel:+.0f}% from FP; target: below the baseline by more than the "
                       f"spread and within 15% of FP: {'met' if ok else 'missed'}")
    return out


def write_report(args) -> None:
    from mpqdm.testing.bench import markdown_table, save_rows

    order = {key(r): i for i, r in enumerate(ROWS)}
    rows = sorted(finished(args).values(), key=lambda r: order[key((r["config"], 0, 0, r["variant"], r["seed"]))])
    notes = json.loads(NOTES_FILE.read_text()) if NOTES_FILE.is_file() else {}
    for r in rows:
        r["note"] = notes.get(f"{r['config']}-{r['variant']}", "")
    t = targets(rows)
    save_rows(RESULTS / "qat_ablation.json", rows, iterations=args.iterations, batch=args.batch,
              samples=args.samples, ddim_steps=20, trd=args.trd, targets=t,
              missing=[key(r) for r in ROWS if key(r) not in {key((x["config"], 0, 0, x["variant"], x["seed"]))
                                                             for x in rows}])
    means = [{"config": c, "variant": v, "seeds": s["seeds"], "mean_fd": round(s["fd"], 2),
              "spread": round(s["spread"], 2)} for (c, v), s in mean_rows(rows).items()]
    cols = ["config", "variant", "seed", "avg_wbits", "fd", "iterations", "batch", "qat_seconds", "eval_seconds",
            "device", "note"]
    (RESULTS / "qat_ablation.md").write_text(
        f"# QAT ablation on the default model (FD, {args.samples} samples, 20 DDIM steps)\n\n"
        f"Command: `.venv/bin/python benchmarks/qat_ablation.py --iterations {args.iterations} --trd {args.trd}`"
        f"; {args.iterations} iterations x batch {args.batch} per row. The 40-iteration table it replaces: "
        "qat_ablation_it40.md.\n\n" + markdown_table(rows, cols) + "\n## Mean over QAT seeds\n\n"
        + markdown_table(means, ["config", "variant", "seeds", "mean_fd", "spread"]) + "\n"
        + "\n".join(f"- {x}" for x in t) + "\n"
        + "- Not run: MPQ-DM with the ILP's plan at the same packed memory (waits for the allocation "
          "issue's new cost).\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--lora-rank", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=10)
    ap.add_argument("--trd", default="trd_weight=100,window=2,trd_block=-1",
                    help="TRD settings of the trd and mpqdm rows (benchmarks/qat_trd_tuning.py)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="rows at once, each in its own process")
    ap.add_argument("--threads", type=int, default=0, help="PyTorch threads per row (0: PyTorch's default)")
    ap.add_argument("--only", default="", help="comma-separated row keys (CONFIG-VARIANT-sSEED)")
    ap.add_argument("--report", action="store_true", help="only rewrite the JSON and Markdown (notes edited)")
    args = ap.parse_args()
    only = {k for k in args.only.split(",") if k}
    unknown = sorted(only - {key(r) for r in ROWS})
    if unknown:
        ap.error(f"--only: no row {', '.join(unknown)}; rows: {', '.join(key(r) for r in ROWS)}")
    todo = [r for r in ROWS if key(r) not in finished(args) and (not only or key(r) in only)]
    if args.report or not todo:
        write_report(args)
        return
    if args.jobs == 1:
        for row in todo:
            print(f"== {key(row)}", flush=True)
            res = run_row(row, args)
            (work_dir(args) / key(row)).mkdir(parents=True, exist_ok=True)
            (work_dir(args) / key(row) / "row.json").write_text(json.dumps(res, indent=1))
            write_report(args)
        return
    base, skip = [], False          # the command line less --jobs and --only (and their values)
    for a in sys.argv[1:]:
        if skip or a.startswith(("--jobs", "--only")):
            skip = not skip and "=" not in a
            continue
        base.append(a)
    running: list[tuple[subprocess.Popen, str]] = []
    while todo or running:
        while todo and len(running) < args.jobs:
            row = todo.pop(0)
            log = work_dir(args) / f"{key(row)}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, __file__, *base, "--jobs", "1", "--only", key(row)]
            running.append((subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT), key(row)))
            print(f"started {key(row)} (log {log})", flush=True)
        time.sleep(10)
        for p, k in list(running):
            if p.poll() is not None:
                running.remove((p, k))
                print(f"{k}: {'done' if p.returncode == 0 else f'failed ({p.returncode})'}", flush=True)
    write_report(args)


if __name__ == "__main__":
    main()
