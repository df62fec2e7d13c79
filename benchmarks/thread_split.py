"""Where a second thread pays inside the W2A4 step, by call kind: the default model (OMQ's 10% split,
the PTQ export made here), compiled and built for the host, `mpqdm-run --bench` at 1 and at 2 threads
in turn, --rounds times. A call's time is the mean over one run's steps (--count samples x the
sampler's steps; the first step's start-up spreads over them), a kind's time the sum of its calls,
each the median over rounds. Issue 18 asks the whole step to run 1.6x faster on 2 threads.

Run (on a quiet machine): .venv/bin/python benchmarks/thread_split.py [--rounds 9] [--report]
Writes benchmarks/results/thread_split.json and .md (note: benchmarks/results/thread_split.json "note").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from mpqdm.backend_tvm.build import build
from mpqdm.backend_tvm.compile import compile_export
from mpqdm.backend_tvm.run import bench_binary
from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.testing.bench import markdown_table, ptq_w2a4_export, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "out" / "thread_split"


def per_call(d: Path, threads: int, count: int) -> tuple[dict[int, tuple[str, float]], float]:
    """{call: (kind, ms)} of one run, and its median step (ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        r = bench_binary([str(d / "mpqdm-run")], d / "model.mpq", Path(tmp), threads, count, per_call=True)
    return dict(enumerate(r["ms_by_call"])), r["median_ms_per_step"]


def rows_of(runs: dict[int, list]) -> list[dict]:
    kinds: dict[str, dict[int, float]] = {}
    for t, rs in runs.items():
        for i, (kind, _) in rs[0][0].items():
            ms = statistics.median(r[0][i][1] for r in rs)
            kinds.setdefault(kind, {}).setdefault(t, 0.0)
            kinds[kind][t] += ms
    rows = [{"kind": k, "calls": sum(1 for kind, _ in runs[1][0][0].values() if kind == k),
             "ms_1_thread": round(v[1], 4), "ms_2_threads": round(v[2], 4), "speedup": round(v[1] / v[2], 2)}
            for k, v in sorted(kinds.items(), key=lambda kv: -kv[1][1])]
    step = {t: statistics.median(r[1] for r in rs) for t, rs in runs.items()}
    rows.append({"kind": "median step", "calls": len(runs[1][0][0]), "ms_1_thread": round(step[1], 4),
                 "ms_2_threads": round(step[2], 4), "speedup": round(step[1] / step[2], 2)})
    return rows


def write_markdown(doc: dict) -> None:
    lines = ["# A second thread inside the W2A4 step, by call kind (default model, this host)", "",
             f"Command: `{doc['command']}` (commit {doc['commit']}); {doc['machine']}; load average at start "
             f"{doc['load_average_at_start']}", "",
             "Per kind: the sum of its calls' times (each call: the mean over one run's steps, the median over "
             "rounds); the last row: the median step of the runs.", "",
             markdown_table(doc["rows"], list(doc["rows"][0])), ""]
    if doc.get("note"):
        lines += [doc["note"], ""]
    (RESULTS / "thread_split.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--count", type=int, default=20, help="samples per run")
    ap.add_argument("--report", action="store_true", help="rewrite the Markdown from the JSON (note edited)")
    a = ap.parse_args()
    path = RESULTS / "thread_split.json"
    if a.report:
        return write_markdown(json.loads(path.read_text()))
    export = ptq_w2a4_export(DEFAULT_MODEL, OUT / "default-W2A4", "omq")
    d = OUT / "default-host"
    compile_export(export, "host", d)
    build(d, "host")
    load = os.getloadavg()[0]
    runs: dict[int, list] = {1: [], 2: []}
    for _ in range(a.rounds):
        for t in runs:
            runs[t].append(per_call(d, t, a.count))
    old = json.loads(path.read_text()) if path.is_file() else {}
    save_rows(path, rows_of(runs), load_average_at_start=round(load, 2), rounds=a.rounds, count=a.count,
              **({"note": old["note"]} if "note" in old else {}))
    write_markdown(json.loads(path.read_text()))
    print((RESULTS / "thread_split.md").read_text())


if __name__ == "__main__":
    main()
