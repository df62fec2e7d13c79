"""Kernel paths chosen by measurement against the board's rule, on this host: the W2A4 UNet step of
the default model (OMQ's 10% split) and of the DDPM CIFAR-10 configuration (random weights, uniform),
compiled twice from one export: `mpqdm compile --kernels rule` (each group on the best instruction
family the CPU has: AMX, then VNNI, then AVX2) and `--kernels measured` (each on the path `mpqdm
profile` timed fastest for its layer shape and widths, from a table profiled here).

Steps per model: (1) a W2A4 PTQ export made here; (2) `mpqdm profile` of the model at the export's
widths into out/kernel_paths/<model>-latency.json (every path a layer shape can take; resumed when
rerun with the same build); (3) both compiles and builds; (4) --rounds rounds, each running both
binaries once in turn (`mpqdm-run --bench`, median step over >= 20 steps) at each thread count. A
ratio is the median over rounds of measured / rule within one round.

Run (on a quiet machine): .venv/bin/python benchmarks/kernel_paths.py [--models default] [--threads 2]
  [--rounds 5] [--report]
Writes benchmarks/results/kernel_paths.json and kernel_paths.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from mpqdm.backend_tvm.build import build
from mpqdm.backend_tvm.compile import compile_export
from mpqdm.backend_tvm.profile import profile
from mpqdm.backend_tvm.run import bench_binary
from mpqdm.core.machine import provenance
from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.testing.bench import load_rows, markdown_table, ptq_w2a4_export, random_model, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "out" / "kernel_paths"
MODELS = {"default": ("omq", (1, 2, 3), 6), "ddpm-cifar10": ("uniform", (2,), 5)}   # plan, widths, samples
KINDS = ("rule", "measured")


def prepare(model: str) -> dict:
    plan, wbits, _ = MODELS[model]
    fp = DEFAULT_MODEL if model == "default" else random_model(ROOT, model)
    export = ptq_w2a4_export(fp, OUT / f"{model}-W2A4", plan)
    table = OUT / f"{model}-latency.json"
    t0 = time.perf_counter()
    prof = profile(fp, "host", wbits=wbits, abits=(4,), table_path=table)
    info = {"profile_s": round(time.perf_counter() - t0, 1), "profile_build": prof["build_id"],
            "fastest": prof["fastest"], "profile_threads": prof["threads"]}
    for kind in KINDS:
        d = OUT / f"{model}-{kind}"
        c = compile_export(export, "host", d, latency=table, kernels=kind)
        build(d, "host")
        info[kind] = {"dir": str(d), "kernel_paths": c["kernel_paths"], "kernel_choice": c["kernel_choice"]}
    return info


def step_ms(d: Path, threads: int, count: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return bench_binary([str(d / "mpqdm-run")], d / "model.mpq", Path(tmp), threads, count)["median_ms_per_step"]


def rows_of(model: str, info: dict, threads: list[int], rounds: int) -> list[dict]:
    rows = []
    for t in threads:
        got = {k: [] for k in KINDS}
        for _ in range(rounds):
            for k in KINDS:
                got[k].append(step_ms(Path(info[k]["dir"]), t, MODELS[model][2]))
        ratio = float(np.median(np.array(got["measured"]) / np.array(got["rule"])))
        rows.append({"model": model, "threads": t, "rule_ms": round(float(np.median(got["rule"])), 3),
                     "measured_ms": round(float(np.median(got["measured"])), 3), "measured_over_rule": round(ratio, 3),
                     "rounds": rounds, "paths_rule": info["rule"]["kernel_paths"],
                     "paths_measured": info["measured"]["kernel_paths"], "fastest": info["fastest"],
                     "profile_s": info["profile_s"], "profile_build": info["profile_build"]})
    return rows


def fmt(paths: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in paths.items())


def write_markdown(doc: dict) -> None:
    table = [{"model": r["model"], "threads": r["threads"], "rule_ms": r["rule_ms"], "measured_ms": r["measured_ms"],
              "measured_over_rule": r["measured_over_rule"], "groups_rule": fmt(r["paths_rule"]),
              "groups_measured": fmt(r["paths_measured"])} for r in doc["rows"]]
    fastest = sorted({(r["model"], fmt(r["fastest"]), r["profile_s"]) for r in doc["rows"]})
    lines = ["# Kernel paths: measured against the rule (one W2A4 UNet step on this host)", "",
             f"Command: `{doc['command']}` (commit {doc['commit']}); {doc['machine']}; "
             f"load average at start {doc['load_average_at_start']}",
             "", "rule: each quantized group on the best instruction family the CPU has (AMX, VNNI, AVX2); "
             "measured: on the path `mpqdm profile` timed fastest for its layer shape and widths. Step times: "
             "median over rounds of the median `mpqdm-run --bench` step; the ratio: median over rounds of "
             "measured / rule within a round.", "",
             markdown_table(table, list(table[0])) if table else "(no rows)", "",
             "Fastest path per (layer shape, weight width) in the profile, and the profile's time:", ""]
    lines += [f"- {m}: {f} ({s:.0f} s)" for m, f, s in fastest]
    if doc.get("note"):
        lines += ["", doc["note"]]
    (RESULTS / "kernel_paths.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--report", action="store_true", help="rewrite the Markdown from the JSON (note edited)")
    a = ap.parse_args()
    path = RESULTS / "kernel_paths.json"
    if a.report:
        import json

        write_markdown(json.loads(path.read_text()))
        return
    load = os.getloadavg()[0]
    rows = []
    for model in a.models.split(","):
        info = prepare(model)
        rows += rows_of(model, info, [int(t) for t in a.threads.split(",")], a.rounds)
    old = load_rows(path) if path.is_file() else []
    keep = [r for r in old if r["model"] not in {r["model"] for r in rows}]
    doc = {**provenance(), "load_average_at_start": round(load, 2), "rows": keep + rows}
    save_rows(path, doc["rows"], load_average_at_start=doc["load_average_at_start"])
    write_markdown(doc)
    print((RESULTS / "kernel_paths.md").read_text())


if __name__ == "__main__":
    main()
