"""Latency tables (format owner): boards/<board>/latency.json, written by `mpqdm profile`, read by
the allocator.

{"format": "mpqdm.latency", "version": 1, "board": "host",
 "entries": [{"op": "qconv", "shape": "n1_16x16x64-64_k3x3_s1_p1", "wbits": 2, "abits": 4,
              "threads": 2, "channels": 64, "median_ms": 0.91, "spread": 0.04, "repeats": 20,
              "build_id": "...", "measured": "2026-11-23T01:50:00Z"}, ...]}

An entry is keyed by (op, shape, wbits, abits, threads, channels); `channels` is how many output
channels the timed kernel computed (the layer's c_out: full width; fewer: the partial width that
gives the fixed cost). Merging replaces entries with the same key and keeps the others, so tables
of several models share one file. Latency of a layer with a bit mix: per width b, t(n) = t0_b +
n * slope_b through the full and the partial measurement, and
    t = sum over the widths used of t0_b + sum_b n_b * slope_b
(a plan's channels of one width form one block: one kernel group, one fixed cost). A uniform layer
gets exactly its full-width time. The allocator's ILP uses this model (allocator/problem.py).
A missing entry is an error naming it; nothing is guessed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .io import write_json
from .packing import LANES

FORMAT, VERSION = "mpqdm.latency", 1
KEY = ("op", "shape", "wbits", "abits", "threads", "channels")
FIELDS = KEY + ("median_ms", "spread", "repeats", "build_id", "measured")


def partial_width(c_out: int) -> int:
    """The second width timed per shape (half, rounded down to the kernels' 8-channel tile)."""
    half = (c_out // 2) // LANES * LANES
    return half if half >= LANES else max(1, c_out // 2)


def _check_entry(path: Path, i: int, e) -> None:
    where = f"latency table {str(path)!r}: entry {i}"
    if not isinstance(e, dict):
        raise UserError(f"{where} is not an object. Possible solutions: profile again")
    missing = [k for k in FIELDS if k not in e]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}. Possible solutions: profile again")
    for k in ("wbits", "abits", "threads", "channels", "repeats"):
        if not isinstance(e[k], int) or isinstance(e[k], bool) or e[k] < 1:
            raise UserError(f"{where}: {k} is {e[k]!r}, not a positive integer. Possible solutions: profile again")
    t = e["median_ms"]
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
        raise UserError(f"{where}: median_ms is {t!r}, not a finite time >= 0. Possible solutions: profile again")
    if not isinstance(e["op"], str) or not isinstance(e["shape"], str):
        raise UserError(f"{where}: op and shape must be strings. Possible solutions: profile again")


def _key(e: dict) -> tuple:
    return tuple(e[k] for k in KEY)


@dataclass
class LatencyTable:
    board: str
    measured = True                 # class attribute: False for UnmeasuredTable
    entries: dict[tuple, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, board: str | None = None) -> LatencyTable:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except OSError as exc:
            raise UserError(f"cannot read latency table {str(path)!r} ({exc.strerror}). "
                            "Possible solutions: run mpqdm profile --board BOARD MODEL") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"latency table {str(path)!r} is not valid JSON ({exc}). "
                            "Possible solutions: delete it and profile again") from None
        d = d if isinstance(d, dict) else {}
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise UserError(f"{str(path)!r} is not a v{VERSION} latency table (format {d.get('format')!r}, "
                            f"version {d.get('version')!r}). Possible solutions: profile again with this mpqdm")
        if not isinstance(d.get("board"), str) or (board is not None and d["board"] != board):
            raise UserError(f"latency table {str(path)!r} is for board {d.get('board')!r}, not {board!r}")
        entries = d.get("entries", [])
        if not isinstance(entries, list):
            raise UserError(f"latency table {str(path)!r}: 'entries' is not a list. Possible solutions: profile again")
        table = cls(d["board"])
        for i, e in enumerate(entries):
            _check_entry(path, i, e)
            table.entries[_key(e)] = e
        return table

    @classmethod
    def load_or_empty(cls, path: str | Path, board: str) -> LatencyTable:
        return cls.load(path, board) if Path(path).is_file() else cls(board)

    def merge(self, entries: list[dict]) -> None:
        for e in entries:
            self.entries[_key(e)] = {k: e[k] for k in FIELDS}

    def save(self, path: str | Path) -> None:
        rows = sorted(self.entries.values(), key=lambda e: tuple(str(e[k]) for k in KEY))
        write_json(path, {"format": FORMAT, "version": VERSION, "board": self.board, "entries": rows})

    def time(self, op: str, shape: str, wbits: int, abits: int, threads: int, channels: int) -> float:
        e = self.entries.get((op, shape, wbits, abits, threads, channels))
        if e is None:
            raise UserError(f"latency table for {self.board!r} has no entry op={op} shape={shape} wbits={wbits} "
                            f"abits={abits} threads={threads} channels={channels}. Possible solutions: "
                            f"mpqdm profile --board {self.board} --wbits {wbits} --abits {abits} MODEL")
        return float(e["median_ms"])

    def fit(self, shape: str, c_out: int, partial: int, wbits: int, abits: int, threads: int,
            op: str = "qconv") -> tuple[float, float]:
        """(t0, slope) of t(n) = t0 + n * slope through the full- and partial-width timings; timing
        noise never makes either negative."""
        full = self.time(op, shape, wbits, abits, threads, c_out)
        if partial == c_out:
            return 0.0, full / c_out
        part = self.time(op, shape, wbits, abits, threads, partial)
        slope = max((full - part) / (c_out - partial), 0.0)
        return max(full - c_out * slope, 0.0), slope

    def layer_ms(self, shape: str, c_out: int, partial: int, groups, abits: int, threads: int,
                 op: str = "qconv") -> float:
        """Predicted time of one layer whose plan has `groups` [(channels, bits), ...]: each width
        used pays its fixed cost once (its channels run as one block), each channel its slope."""
        fits = {b: self.fit(shape, c_out, partial, b, abits, threads, op) for b in {b for _, b in groups}}
        return mix_ms(fits, groups)


class UnmeasuredTable(LatencyTable):
    """A board with no latency table: every kernel costs 0 ms, so only memory budgets bind (a
    latency budget is refused before it is used: see allocator.allocate)."""

    measured = False

    def time(self, op: str, shape: str, wbits: int, abits: int, threads: int, channels: int) -> float:
        return 0.0


def mix_ms(fits: dict[int, tuple[float, float]], groups) -> float:
    """The latency model: `fits` maps each width used to (t0, slope); groups [(channels, bits), ...]."""
    return sum(fits[b][0] for b in {b for _, b in groups}) + sum(n * fits[b][1] for n, b in groups)
