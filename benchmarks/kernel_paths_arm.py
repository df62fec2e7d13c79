"""Kernel paths on the Pis without a Pi: `mpqdm profile --count-instructions` of the default model for the
Raspberry Pi 4 (cortex-a72: NEON only) and Pi 5 (cortex-a76: udot and NEON), into out/kernel_paths/, and
per (board, path, weight x activation width) the executed instructions of one call of every quantized
layer shape of the model, summed (each shape once), with the path compile takes for each.

Run: .venv/bin/python benchmarks/kernel_paths_arm.py [--report]
Writes benchmarks/results/kernel_paths_arm.json and .md (about 5 min on 2 cores).
The committed boards/rpi4/latency.json and boards/rpi5/latency.json are made by the same command
(`.venv/bin/mpqdm profile --board rpi4 --count-instructions`, without --table).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mpqdm.backend_tvm.profile import profile
from mpqdm.core.latency import LatencyTable
from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.testing.bench import markdown_table, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "out" / "kernel_paths"
BOARDS = {"rpi4": "cortex-a72", "rpi5": "cortex-a76"}


def rows_of(board: str, table: LatencyTable) -> list[dict]:
    sums: dict[tuple, int] = {}
    for (_, _, w, a, _, _, kernel), e in table.entries.items():
        sums[kernel, w, a] = sums.get((kernel, w, a), 0) + e["instructions"]
    shapes = {(k[1], k[2], k[3]) for k in table.entries}
    return [{"board": board, "cpu": BOARDS[board], "path": k, "wbits": w, "abits": a,
             "minstr": round(n / 1e6, 2), "shapes": sum(1 for s in shapes if s[1:] == (w, a)),
             "chosen_for": sum(1 for s in shapes if s[1:] == (w, a) and table.kernel_for(*s, 1) == k)}
            for (k, w, a), n in sorted(sums.items())]


def write_markdown(doc: dict) -> None:
    rows = doc["rows"]
    lines = ["# Kernel paths on the Pis: instructions counted under qemu (default model, 1 thread)", "",
             f"Command: `{doc['command']}` (commit {doc['commit']}; counts do not depend on the host)", "",
             "minstr: executed instructions (millions) of one call of each quantized layer shape of the default "
             "model at that width, summed over the shapes (each once); chosen_for: the shapes for which this "
             "path had the fewest (what `mpqdm compile` builds).", "",
             markdown_table(rows, ["board", "cpu", "path", "wbits", "abits", "minstr", "shapes", "chosen_for"]), ""]
    lines += [f"- {b}: profile {s} s" for b, s in doc["profile_seconds"].items()]
    if doc.get("note"):
        lines += ["", doc["note"]]
    (RESULTS / "kernel_paths_arm.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--report", action="store_true", help="rewrite the Markdown from the JSON (note edited)")
    a = ap.parse_args()
    path = RESULTS / "kernel_paths_arm.json"
    if a.report:
        return write_markdown(json.loads(path.read_text()))
    rows, seconds = [], {}
    for board in BOARDS:
        table = OUT / f"{board}-latency.json"
        t0 = time.perf_counter()
        profile(DEFAULT_MODEL, board, table_path=table, count=True)
        seconds[board] = round(time.perf_counter() - t0)
        rows += rows_of(board, LatencyTable.load(table, board))
    save_rows(path, rows, profile_seconds=seconds)
    write_markdown(json.loads(path.read_text()))
    print((RESULTS / "kernel_paths_arm.md").read_text())


if __name__ == "__main__":
    main()
