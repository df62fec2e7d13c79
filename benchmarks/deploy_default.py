"""`mpqdm deploy` on the embedded default model, timed from the command's start (the install excluded),
as the README's main command runs it; and on the Pis (emulated: their binaries run under qemu with the
board's CPU and must agree with the host build).

Run: .venv/bin/python benchmarks/deploy_default.py [--board host] [-- extra deploy options]
Each run starts from an empty folder (out/deploy_bench/<board>), so nothing is reused. Writes
benchmarks/results/deploy_default.json (host) or deploy_<board>.json, and a Markdown table beside it;
for the host also docs/deploy_report.png, the report rendered in headless Chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mpqdm.testing.bench import markdown_table, save_rows
from mpqdm.testing.browser import render

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "out" / "deploy_bench"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--board", default="host")
    ap.add_argument("extra", nargs="*", help="more mpqdm deploy options (after --)")
    args = ap.parse_args()
    out = WORK / args.board
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(Path(sys.executable).with_name("mpqdm")), "deploy", "--board", args.board, "-o", str(out), *args.extra]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = round(time.perf_counter() - t0, 1)
    info = json.loads((out / "deploy.json").read_text())
    chk = info["check"]
    row = {"command": " ".join([".venv/bin/mpqdm", *cmd[1:]]).replace(str(ROOT) + "/", ""), "seconds": seconds,
           "load_average_at_start": round(load, 2), "fd": info["fd"], "fd_fp": info["fd_fp"],
           "fd_samples": info["fd_samples"], "artifact_kb": info["artifact_kb"], "binary_kb": info["binary_kb"],
           "ms_per_step": info["ms_per_step"], "threads": info["threads"], "peak_rss_mb": info["peak_rss_mb"],
           "budgets_met": info["budgets_met"], "avg_wbits": info["plan"]["avg_wbits"],
           "check_median_rel_error": round(chk["median_rel_error"], 6),
           "identical_to_host": chk.get("identical_to_host"), "stage_seconds": info["stage_seconds"]}
    name = "deploy_default" if args.board == "host" else f"deploy_{args.board}"
    bench_cmd = f".venv/bin/python benchmarks/deploy_default.py --board {args.board}" + (
        " -- " + " ".join(args.extra) if args.extra else "")
    save_rows(RESULTS / f"{name}.json", None, **row, benchmark_command=bench_cmd, board=args.board)
    cols = [k for k in row if k != "stage_seconds"]
    (RESULTS / f"{name}.md").write_text(
        f"# mpqdm deploy, default model, board {args.board}\n\nCommand: `{bench_cmd}`\n\n"
        + markdown_table([row], cols) + "\n\nStage seconds: " + json.dumps(info["stage_seconds"]) + "\n")
    if args.board == "host":                  # the README's picture of the report
        r = render(out / "report.html", ROOT / "docs" / "deploy_report.png", 1100, 2300)
        assert not r["errors"] and all(i["ok"] for i in r["images"]), r
    print(row)


if __name__ == "__main__":
    main()
