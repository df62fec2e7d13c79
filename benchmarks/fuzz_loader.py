"""Fuzzing the C runtime's artifact loader and executor argument setup (runtime/tests/fuzz_loader.c).

Run: .venv/bin/python benchmarks/fuzz_loader.py [--seconds 600] [--fresh]
Builds the libFuzzer harness (clang, ASan + UBSan + leak check) into out/fuzz/, seeds out/fuzz/corpus
with synthetic artifacts (valid ones of 1-3 steps and broken copies), fuzzes for --seconds on one core
and writes benchmarks/results/fuzz_loader.{json,md}: executions (libFuzzer's final
stat::number_of_executed_units), executions per second, crash/leak/timeout/oom reproducers found
(kept in out/fuzz/found/) and the corpus size after the run. The corpus is kept between runs unless
--fresh. Needs clang and its runtimes: scripts/install.sh.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from mpqdm.testing.bench import markdown_table, save_rows
from mpqdm.testing.fuzz import build_fuzzer, run_fuzzer, seed_corpus

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

OUT = ROOT / "out" / "fuzz"
COLS = ["seconds", "executions", "exec_per_sec", "crashes", "corpus_files"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--fresh", action="store_true", help="start from the seed corpus alone")
    args = ap.parse_args()
    corpus, found = OUT / "corpus", OUT / "found"
    if args.fresh:
        shutil.rmtree(corpus, ignore_errors=True)
    exe = build_fuzzer(OUT)
    seed_corpus(corpus)
    r = run_fuzzer(exe, corpus, args.seconds, artifacts=found)
    row = {c: r[c] for c in COLS}
    print(r["log_tail"][-1500:])
    save_rows(RESULTS / "fuzz_loader.json", [row], fuzzer=r["command"], crash_files=r["crash_files"])
    (RESULTS / "fuzz_loader.md").write_text(
        "# Loader fuzzing (libFuzzer, ASan + UBSan, one core)\n\n" + markdown_table([row], COLS)
        + (f"\nReproducers in out/fuzz/found/: {', '.join(r['crash_files'])}\n" if r["crash_files"] else ""))
    print(markdown_table([row], COLS))
    if r["returncode"] != 0 or r["crashes"]:
        sys.exit(f"fuzz_loader: libFuzzer exited {r['returncode']} with {r['crashes']} reproducer(s) in {found}")


if __name__ == "__main__":
    main()
