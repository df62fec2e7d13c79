"""Fuzzing the C runtime's artifact loader and executor argument setup (runtime/tests/fuzz_loader.c).

Run: .venv/bin/python benchmarks/fuzz_loader.py [--seconds 600] [--fresh]
Builds the libFuzzer harness (clang, ASan + UBSan + leak check) into out/fuzz/, seeds out/fuzz/corpus
with synthetic artifacts (valid ones of 1-3 steps, broken copies, arenas too big to allocate or above
the harness's limit), fuzzes for --seconds on one core and writes benchmarks/results/fuzz_loader.{json,md}:
executions (libFuzzer's final stat::number_of_executed_units), executions per second, crash/leak/
timeout/oom reproducers found (kept in out/fuzz/found/), the corpus size after the run, how the
harness's opens ended (checksum refusals, arena allocation failures, arena-limit and board refusals,
other refusals, opened), and how often replaying the final corpus through the coverage build runs the
loader's arena-allocation failure branch (source-based coverage: mpqdm/testing/fuzz.py alloc_failure_coverage).
The corpus is kept between runs unless --fresh. Paths in the results are relative to the repository
root. Needs clang, its runtimes and llvm (llvm-profdata, llvm-cov): scripts/install.sh.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from mpqdm.testing.bench import markdown_table, save_rows
from mpqdm.testing.fuzz import alloc_failure_coverage, build_fuzzer, relative, run_fuzzer, seed_corpus

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

OUT = ROOT / "out" / "fuzz"
COLS = ["seconds", "executions", "exec_per_sec", "crashes", "corpus_files", "alloc_failure_runs"]
OUTCOME_COLS = ["checksum_mismatch", "arena_alloc_failed", "arena_above_limit", "other_board", "other_error",
                "opened"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--fresh", action="store_true", help="start from the seed corpus alone")
    args = ap.parse_args()
    corpus, found = OUT / "corpus", OUT / "found"
    if args.fresh:
        shutil.rmtree(corpus, ignore_errors=True)
    exe, cov_exe = build_fuzzer(OUT), build_fuzzer(OUT, coverage=True)
    seed_corpus(corpus)
    r = run_fuzzer(exe, corpus, args.seconds, artifacts=found)
    cov = alloc_failure_coverage(cov_exe, corpus, OUT / "coverage")
    row = {**{c: r[c] for c in COLS if c in r}, "alloc_failure_runs": cov["alloc_failure_runs"]}
    opens = {c: r["outcomes"].get(c, 0) for c in OUTCOME_COLS}
    print(r["log_tail"][-1500:])
    save_rows(RESULTS / "fuzz_loader.json", [row], fuzzer=r["command"], crash_files=r["crash_files"],
              outcomes=opens, alloc_failure_line=cov["alloc_failure_line"],
              coverage=f"{relative(cov_exe)} -runs=0 {relative(corpus)} (then llvm-profdata merge, llvm-cov show)")
    (RESULTS / "fuzz_loader.md").write_text(
        "# Loader fuzzing (libFuzzer, ASan + UBSan, one core)\n\n" + markdown_table([row], COLS)
        + "\nHow the harness's opens ended (each input is opened as it is, then with its checksum recomputed "
          "without limits, then for board host with a 4 KiB arena limit):\n\n" + markdown_table([opens], OUTCOME_COLS)
        + f"\nalloc_failure_runs: executions of {cov['alloc_failure_line']} (the arena-allocation failure "
          "branch) when the final corpus is replayed through the source-coverage build.\n"
        + (f"\nReproducers in out/fuzz/found/: {', '.join(r['crash_files'])}\n" if r["crash_files"] else ""))
    print(markdown_table([row], COLS))
    print(markdown_table([opens], OUTCOME_COLS))
    if r["returncode"] != 0 or r["crashes"]:
        sys.exit(f"fuzz_loader: libFuzzer exited {r['returncode']} with {r['crashes']} reproducer(s) in "
                 f"{relative(found)}")
    if cov["alloc_failure_runs"] == 0:
        sys.exit(f"fuzz_loader: the corpus never ran {cov['alloc_failure_line']} (arena allocation failure)")


if __name__ == "__main__":
    main()
