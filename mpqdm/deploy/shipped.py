"""Statistics that ship with the package, keyed by the model's hash (models/stats/<sha256[:16]>.json):
deploying the embedded default model with a budget does not recompute them."""

from __future__ import annotations

from pathlib import Path

from mpqdm.core.errors import UserError
from mpqdm.core.resources import MODELS
from mpqdm.core.stats import read_stats

STATS = MODELS / "stats"


def stats_path(sha256: str) -> Path:
    return STATS / f"{sha256[:16]}.json"


def stats_for(sha256: str) -> Path | None:
    """The shipped statistics of this model, if any (and only if they are of this mpqdm's version)."""
    p = stats_path(sha256)
    if not p.is_file():
        return None
    try:
        doc = read_stats(p)
    except UserError:                  # an older version: recompute rather than fail
        return None
    return p if doc.get("model", {}).get("sha256") == sha256 else None
