"""Shared by the benchmark runners: results files with provenance, Markdown tables."""

from __future__ import annotations

import json
from pathlib import Path

from mpqdm.io import write_json
from mpqdm.machine import provenance
from mpqdm.report import markdown_table  # noqa: F401  (the runners import it from here)


def load_rows(path: Path) -> list[dict]:
    if path.is_file():
        return json.loads(path.read_text()).get("rows", [])
    return []


def save_rows(path: Path, rows: list[dict] | None, **extra) -> None:
    """{machine, commit, command, **extra, rows}; rows None: a file whose lists are named in `extra`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**provenance(), **extra, **({} if rows is None else {"rows": rows})})
