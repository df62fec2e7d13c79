"""Bad input, tried as a new user would (mpqdm/testing/bad_inputs.py: malformed option values, missing,
malformed and truncated files, destructive output paths, models the backend cannot lower): each
case's command, exit code, first error line, whether a traceback showed and which of the user's
files changed or vanished.

Run: .venv/bin/python benchmarks/bad_inputs.py        (about a minute: the tiny fixtures first)
Writes benchmarks/results/bad_inputs.json and bad_inputs.md.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from mpqdm.testing.bad_inputs import CASES, command_line, make_fixtures, run_case
from mpqdm.testing.bench import markdown_table, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_fixtures(tmp / "fixtures")
        for i, case in enumerate(CASES):
            out = run_case(case, paths, tmp / f"case{i}")
            message = out.message.replace(str(tmp), "TMP").replace(f"{ROOT}/", "")   # no machine paths
            rows.append({"case": case.name, "command": command_line(case), "exit": out.exit,
                         "message": message, "traceback": out.traceback,
                         "lost_files": [p.replace(str(tmp), "TMP") for p in out.lost_files],
                         "expected": bool(re.search(case.expect, out.message))})
            print(f"{out.exit}  {case.name}: {message[:110]}", flush=True)
    bad = [r for r in rows if r["exit"] != 2 or r["traceback"] or r["lost_files"] or not r["expected"]]
    save_rows(RESULTS / "bad_inputs.json", rows, cases=len(rows), not_as_expected=len(bad))
    table = [{"case": r["case"], "exit": r["exit"], "message": r["message"][:140].replace("|", "/")} for r in rows]
    (RESULTS / "bad_inputs.md").write_text(
        f"# Bad input: {len(rows)} cases\n\nCommand: `.venv/bin/python benchmarks/bad_inputs.py`. Every case must "
        "end with exit code 2 and one error line, no traceback, none of the user's files changed; "
        f"{len(bad)} did not.\n\n" + markdown_table(table, ["case", "exit", "message"]))


if __name__ == "__main__":
    main()
