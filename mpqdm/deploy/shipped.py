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


def ship(stats_file: Path) -> Path:
    """Copy `mpqdm stats` output into the package, compact (floats to 6 significant digits: the
    allocator's costs do not need more), named by its model's hash."""
    import json

    def compact(x):
        if isinstance(x, float):
            return float(f"{x:.6g}")
        if isinstance(x, list):
            return [compact(v) for v in x]
        return {k: compact(v) for k, v in x.items()} if isinstance(x, dict) else x

    doc = compact(read_stats(stats_file))
    out = stats_path(doc["model"]["sha256"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    return out


if __name__ == "__main__":      # python -m mpqdm.deploy.shipped out/stats/mnist-default.json
    import sys

    print(ship(Path(sys.argv[1])))
