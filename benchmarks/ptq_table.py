"""PTQ results table on the default model: FD of FP and of every PTQ configuration (resumable).

Run: .venv/bin/python benchmarks/ptq_table.py [--samples 1000] [--only W2A4-omq,...]
Writes benchmarks/results/ptq.json and ptq.md (+ sample grids of the W4A8 and W2A4 rows).
Rows already in ptq.json with the same sample count are skipped; an interrupted row resumes.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.frontend.evaluate import EvalConfig, evaluate
from mpqdm.frontend.quant.export import avg_wbits
from mpqdm.frontend.quant.ptq import PTQConfig, quantize
from mpqdm.testing.bench import load_rows, markdown_table, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

ROWS = [("FP", None, None, "fp")]
ROWS += [(f"W{w}A{a}", w, a, m) for m in ("minmax", "mse") for w, a in
         [(8, 8), (4, 8), (2, 8), (4, 4), (3, 4), (2, 4)]]
ROWS += [(f"W{w}A4", w, 4, "omq") for w in (4, 3, 2)]
GRIDS = {("W4A8", "mse"), ("W2A4", "mse"), ("W2A4", "omq"), ("FP", "fp")}


def run_row(config, wbits, abits, method, samples, device, work: Path) -> dict:
    key = f"{config}-{method}"
    t0 = time.perf_counter()
    if method == "fp":
        model = DEFAULT_MODEL
        avg = 32.0
    else:
        model = work / key / "export"
        plan = "omq" if method == "omq" else "uniform"
        cfg = PTQConfig(plan=plan, wbits=wbits, abits=abits, method="mse" if method == "omq" else method)
        if not (model / "quant_export.json").is_file():
            quantize(DEFAULT_MODEL, model, cfg, device=device)
        avg = avg_wbits(model)
    m = evaluate(model, work / key / "eval", EvalConfig(samples=samples), device=device)
    if (config, method) in GRIDS:
        shutil.copyfile(work / key / "eval" / "samples_grid.png", RESULTS / f"ptq_{key}_grid.png")
    return {"config": config, "wbits": wbits, "abits": abits, "method": method,
            "avg_wbits": round(avg, 4), "fd": m["fd"], "fd_floor": m["fd_floor"], "samples": samples,
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default="", help="comma-separated CONFIG-METHOD keys")
    args = ap.parse_args()
    out_json, out_md = RESULTS / "ptq.json", RESULTS / "ptq.md"
    work = ROOT / "out" / "ptq"
    rows = [r for r in load_rows(out_json) if r.get("samples") == args.samples]
    done = {(r["config"], r["method"]) for r in rows}
    only = {k for k in args.only.split(",") if k}
    for config, w, a, method in ROWS:
        if (config, method) in done or (only and f"{config}-{method}" not in only):
            continue
        print(f"== {config} {method}", flush=True)
        rows.append(run_row(config, w, a, method, args.samples, args.device, work))
        order = {(c, m): i for i, (c, _, _, m) in enumerate(ROWS)}
        rows.sort(key=lambda r: order[(r["config"], r["method"])])
        save_rows(out_json, rows, samples=args.samples, ddim_steps=20)
        cols = ["config", "method", "avg_wbits", "fd", "fd_floor", "samples", "seconds"]
        out_md.write_text("# PTQ on the default model (FD, classifier features, 20 DDIM steps)\n\n"
                          "Command: `.venv/bin/python benchmarks/ptq_table.py`\n\n" + markdown_table(rows, cols))


if __name__ == "__main__":
    main()
