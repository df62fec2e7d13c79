"""FD of the default model with its shortcut and downsample convs in floating point (the MPQ-DM authors'
policy, our default) against the same at W8A8 (`POLICIES["shortcuts-w8a8"]`), after PTQ, two
evaluation seeds each: what the W8A8 trade costs in quality (resumable: finished rows are kept).

PTQ at W4A4 (mse ranges): a configuration PTQ does not break (benchmarks/results/ptq.md), so the
difference is the shortcut convs' own; W2A4 needs QAT, which does not fit a row here.
Run: .venv/bin/python benchmarks/shortcut_fd.py [--samples 1000]
Writes benchmarks/results/shortcut_fd.json and shortcut_fd.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.frontend.evaluate import EvalConfig, evaluate
from mpqdm.frontend.quant.ptq import PTQConfig, quantize
from mpqdm.frontend.quant.swap import POLICIES
from mpqdm.testing.bench import load_rows, markdown_table, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "out" / "shortcut_fd"
SEEDS = (0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    out = RESULTS / "shortcut_fd"
    rows = [r for r in load_rows(out.with_suffix(".json")) if r.get("samples") == a.samples]
    for policy in POLICIES:
        export = WORK / f"W4A4-mse-{policy}"
        for seed in SEEDS:
            if any(r["policy"] == policy and r["seed"] == seed for r in rows):
                continue
            print(f"== {policy}, evaluation seed {seed}", flush=True)
            t0 = time.perf_counter()
            if not (export / "quant_export.json").is_file():
                quantize(DEFAULT_MODEL, export, PTQConfig(wbits=4, abits=4, method="mse", policy=POLICIES[policy]),
                         device=a.device)
            m = evaluate(export, export / f"eval{seed}", EvalConfig(samples=a.samples, seed=seed), device=a.device)
            rows.append({"config": "W4A4 PTQ (mse)", "policy": policy, "seed": seed, "fd": round(m["fd"], 2),
                         "fd_floor": round(m["fd_floor"], 2), "samples": a.samples,
                         "seconds": round(time.perf_counter() - t0, 1)})
            save_rows(out.with_suffix(".json"), rows, samples=a.samples, ddim_steps=20)
    out.with_suffix(".md").write_text(
        "# Shortcut and downsample convs: floating point (default) against W8A8, default model\n\n"
        "Command: `.venv/bin/python benchmarks/shortcut_fd.py` (FD over classifier features, 20 DDIM steps; "
        "each policy's PTQ export evaluated with two sampling seeds)\n\n"
        + markdown_table(rows, ["config", "policy", "seed", "fd", "fd_floor", "samples", "seconds"]))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
