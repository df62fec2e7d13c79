"""Shared by the benchmark runners: results files with provenance, Markdown tables."""

from __future__ import annotations

import json
from pathlib import Path

from mpqdm.io import write_json
from mpqdm.machine import provenance


def load_rows(path: Path) -> list[dict]:
    if path.is_file():
        return json.loads(path.read_text()).get("rows", [])
    return []


def save_rows(path: Path, rows: list[dict], **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**provenance(), **extra, "rows": rows})


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
