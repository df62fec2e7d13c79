"""Seconds per QAT iteration, plain loop against the fast path, in one run on the same machine.

Run: .venv/bin/python benchmarks/qat_speed.py [--iterations 3] [--batch 8] [--threads 2] [--share 6]
The default model, W2A4, MPQ-DM's heaviest row (OMQ split + TRD, window 2): every path starts from
the same PTQ initialisation and they take turns, iteration by iteration, on the same noise. The
fast path (the default, eager PyTorch) is timed whole (teacher trajectory computed in the
iteration) and split into its teacher and student parts; `after_s_per_iteration` counts the
teacher once per `--share` runs, the number of ablation rows with one seed that share its cache
(benchmarks/qat_ablation.py), and `after_unshared_s_per_iteration` counts it whole. The
torch.compile variant (FastLoop's compile_, refused by qat: qat_compile_check.md) is timed with
--compiled; its one-off compile is its first iteration.
Writes benchmarks/results/qat_speed.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch

from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.frontend.qat.config import QATConfig
from mpqdm.frontend.qat.dist import World
from mpqdm.frontend.qat.fast import FastLoop
from mpqdm.frontend.qat.source import load_start
from mpqdm.frontend.qat.teacher import run_teacher
from mpqdm.frontend.qat.train import _trajectory, noise_for, prepare
from mpqdm.frontend.quant.ptq import PTQConfig
from mpqdm.frontend.sampling import ddim_schedule
from mpqdm.testing.bench import markdown_table, save_rows

RESULTS = Path(__file__).resolve().parent / "results"
NOTES_FILE = Path(__file__).resolve().parent / "qat_speed_notes.json"   # hand-written: what was tried


class Loop:
    """One QAT loop (plain or fast) on its own copy of the start, with its optimiser."""

    def __init__(self, start, cfg: QATConfig, fast: bool, compile_: bool):
        self.teacher, self.q = copy.deepcopy(start.teacher), copy.deepcopy(start.student)
        self.opt, self.taps = prepare(self.teacher, self.q, cfg, fast)
        self.lrs = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1.0)
        self.cfg, self.fast = cfg, fast
        self.loop = FastLoop(self.q, self.q, self.taps[1], cfg, compile_, self.teacher) if fast else None

    def iteration(self, x, sched) -> dict:
        t0 = time.perf_counter()
        if not self.fast:
            out, _ = _trajectory(self.teacher, self.q, self.q, self.taps, x, sched, self.cfg, self.opt, self.lrs)
            return {"total": time.perf_counter() - t0, "out": out}
        steps = run_teacher(self.loop.teacher, x, sched, self.taps[0])
        t1 = time.perf_counter()
        out, _ = self.loop.trajectory(steps, sched, self.opt, self.lrs)
        t2 = time.perf_counter()
        return {"total": t2 - t0, "teacher": t1 - t0, "student": t2 - t1, "out": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations per path")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compiled", action="store_true", help="time the --compile variant too (a cold compile "
                    "takes minutes)")
    ap.add_argument("--share", type=int, default=6, help="runs sharing one teacher cache (W2A4 baseline, "
                    "omq, trd, mpqdm, W4A4 baseline, mpqdm at seed 0)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    start = load_start(DEFAULT_MODEL, PTQConfig(plan="omq", wbits=2, abits=4, omq_fractions=(0.1,)),
                       progress=False)
    init_s = time.perf_counter() - t0
    cfg = QATConfig(batch=args.batch, trd_weight=100.0)
    sched = ddim_schedule(start.scheduler.alphas_cumprod, len(start.timesteps),
                          start.scheduler.config.num_train_timesteps)
    shape = (args.batch, start.student.config.in_channels, start.student.config.sample_size,
             start.student.config.sample_size)
    paths = {"plain": Loop(start, cfg, False, False), "fast": Loop(start, cfg, True, False)}
    if args.compiled:
        paths["fast-compiled"] = Loop(start, cfg, True, True)
    warm = {}
    for name, p in paths.items():        # first iteration: compile (fast) and allocator warm-up
        warm[name] = p.iteration(noise_for(cfg, 0, World(), shape), sched)["total"]
        print(f"{name}: first iteration {warm[name]:.1f} s", flush=True)
    times = {name: [] for name in paths}
    for it in range(1, args.iterations + 1):
        x = noise_for(cfg, it, World(), shape)
        for name, p in paths.items():
            times[name].append(p.iteration(x, sched))
        print(f"iteration {it}: " + ", ".join(f"{n} {t[-1]['total']:.2f} s" for n, t in times.items()), flush=True)

    def med(name, part):
        return round(statistics.median(t[part] for t in times[name]), 3)

    before = med("plain", "total")
    shared = round(med("fast", "student") + med("fast", "teacher") / args.share, 3)
    rows = [{"path": "plain", "s_per_iteration": before, "first_iteration_s": round(warm["plain"], 1),
             "ratio": 1.0, "note": "train._trajectory: one step at a time, teacher inline"}]
    for name in [n for n in paths if n != "plain"]:
        rows.append({"path": name, "s_per_iteration": med(name, "total"), "teacher_s": med(name, "teacher"),
                     "student_s": med(name, "student"), "first_iteration_s": round(warm[name], 1),
                     "ratio": round(before / med(name, "total"), 2),
                     "note": "the default: no compile" if name == "fast" else
                     "--compile (its float32 gradients are further from float64's: qat_grad_check.md)"})
    rows.append({"path": f"fast, teacher shared by {args.share} runs", "s_per_iteration": shared,
                 "ratio": round(before / shared, 2), "note": "student + teacher / share"})
    out_losses = {n: [round(t["out"], 3) for t in times[n]] for n in times}
    note = json.loads(NOTES_FILE.read_text())["note"] if NOTES_FILE.is_file() else ""
    save_rows(RESULTS / "qat_speed.json", rows, before_s_per_iteration=before, after_s_per_iteration=shared,
              after_unshared_s_per_iteration=med("fast", "total"), batch=args.batch, threads=args.threads,
              timed_iterations=args.iterations, share=args.share, load_average_at_start=load,
              ptq_init_s=round(init_s, 1), config="W2A4 OMQ(10%) + TRD(weight 100, window 2)",
              out_losses=out_losses, torch=torch.__version__, note=note)
    (RESULTS / "qat_speed.md").write_text(
        "# Seconds per QAT iteration (default model, W2A4 MPQ-DM, batch "
        f"{args.batch}, {args.threads} threads)\n\nCommand: `.venv/bin/python benchmarks/qat_speed.py`; "
        f"load average at start {load:.2f}; medians of {args.iterations} iterations taken in turn.\n\n"
        + markdown_table(rows, ["path", "s_per_iteration", "ratio", "teacher_s", "student_s",
                                "first_iteration_s", "note"])
        + f"\nBefore {before} s, after {shared} s per iteration: {before / shared:.2f}x.\n"
        + (f"\n{note}\n" if note else ""))
    print(f"plain {before} s, fast {med('fast', 'total')} s (unshared), {shared} s (teacher shared): "
          f"{before / shared:.2f}x")


if __name__ == "__main__":
    main()
