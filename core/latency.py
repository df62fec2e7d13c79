"""Latency tables (format owner): boards/<board>/latency.json, written by `mpqdm profile`, read by
the allocator and the reports.

{"format": "mpqdm.latency", "version": 3, "board": "host",
 "entries": [{"op": "qconv", "shape": "n1_16x16x64-64_k3x3_s1_p1", "wbits": 2, "abits": 4,
              "threads": 2, "channels": 64, "kernel": "amx", "median_ms": 0.91, "spread": 0.04, "repeats": 20,
              "build_id": "...", "measured": "2026-11-23T01:50:00Z",
              "key": "rpi5", "cpu": "Cortex-A76", "features": ["neon", "dotprod"], "emulated": false}, ...],
 "models": {"<model sha256[:16]>": {"name": "mnist-default",
            "calls": [{"op": "group_norm", "shape": "GroupNormSpec(...)", "count": 27}, ...],
            "fused_quantizers": ["down_blocks.0.resnets.0.conv1", ...]}}}

Entries: one per call kind of a compiled plan (backend_tvm/plan.py), each timed as the C runtime runs
it (its own thread pool). Keyed by (op, shape, wbits, abits, threads, channels, kernel):
- op "qconv": a quantized layer's kernel; shape its ConvSpec.shape_key(); channels how many output
  channels the timed kernel computed (the layer's c_out: full width; fewer: the partial width that
  gives the fixed cost); kernel the path it took (ConvSpec.kernels: "amx", "vnni", "udot", "neon",
  ...; the backend's kernels/qconv_schedule.PATHS). Every path a shape can take on the board is
  timed; the fastest at full width (`kernel_for`) is the one compile builds and the one the
  allocator's times come from (its full and partial entries both).
- op "quantize": that layer's input quantizer at `abits` (shape: the layer's shape key; wbits and
  channels 0).
- every other op (group_norm, attention, add, concat, upsample, silu, timestep, conv2d, dense): an FP
  kernel, shape its spec as the lowering names it; wbits, abits and channels 0, kernel "".
Version 2 tables (no kernel field: each shape timed on the rule's path only) are read with kernel "",
which compile reads as "the rule's path"; `mpqdm profile` keeps such a table aside and starts v3.
Where each came from: the RPC key of the board that ran it (local: "local"), the CPU model and
features it reported, threads, build id, date; `emulated` marks a board under qemu (its times prove
that a kernel loads and runs, they are no milliseconds). Optional: `instructions`, the executed
instructions of one call counted under qemu (`mpqdm profile --count-instructions`: an emulated
board's quantized layers at full width, median_ms 0): until a real board is profiled, its kernel
paths are chosen by these counts.
`models` lists, per profiled model, the plan-independent calls of one UNet call (every op but qconv
and quantize) with their counts, so that a plan's latency is a whole UNet call (step_ms), and the
quantized layers whose input quantizer runs inside the producing GroupNorm call (its time is in that
call's entry: such a layer pays no quantize entry; absent in tables written before the fusion).
Merging replaces entries with the same key and keeps the others, so tables of several models share
one file. Latency of a layer with a bit mix: per width b, t(n) = t0_b + n * slope_b through the full
and the partial measurement, and
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

from .board import known_features, same_kernel_features
from .errors import UserError
from .io import write_json
from .packing import LANES

FORMAT, VERSION = "mpqdm.latency", 3
READS = (2, 3)                          # v2: no kernel field (kernel "")
KEY = ("op", "shape", "wbits", "abits", "threads", "channels", "kernel")
SOURCE = ("key", "cpu", "features", "emulated")
FIELDS = KEY + ("median_ms", "spread", "repeats", "build_id", "measured") + SOURCE
OPTIONAL = {"instructions": 0}          # executed instructions of one call under qemu (0: not counted)
PLAN_OPS = ("qconv", "quantize")        # the ops whose calls depend on the bit plan


def partial_width(c_out: int) -> int:
    """The second width timed per shape (half, rounded down to the kernels' 8-channel tile)."""
    half = (c_out // 2) // LANES * LANES
    return half if half >= LANES else max(1, c_out // 2)


def _check_entry(path: Path, i: int, e) -> None:
    where = f"latency table {str(path)!r}: entry {i}"
    if not isinstance(e, dict):
        raise UserError(f"{where} is not an object. Possible solutions: profile again")
    missing = [k for k in FIELDS if k not in e]
    e.setdefault("instructions", 0)
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}. Possible solutions: profile again")
    for k in ("wbits", "abits", "threads", "channels", "repeats", "instructions"):
        low = 1 if k in ("threads", "repeats") else 0
        if not isinstance(e[k], int) or isinstance(e[k], bool) or e[k] < low:
            raise UserError(f"{where}: {k} is {e[k]!r}, not an integer >= {low}. Possible solutions: profile again")
    t = e["median_ms"]
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
        raise UserError(f"{where}: median_ms is {t!r}, not a finite time >= 0. Possible solutions: profile again")
    if not all(isinstance(e[k], str) for k in ("op", "shape", "key", "cpu", "kernel")):
        raise UserError(f"{where}: op, shape, key, cpu and kernel must be strings. Possible solutions: profile again")
    if not isinstance(e["features"], list) or not all(isinstance(f, str) for f in e["features"]):
        raise UserError(f"{where}: features must be a list of strings. Possible solutions: profile again")
    if not isinstance(e["emulated"], bool):
        raise UserError(f"{where}: emulated must be true or false. Possible solutions: profile again")


def _check_models(path: Path, models) -> dict:
    where = f"latency table {str(path)!r}: models"
    if not isinstance(models, dict):
        raise UserError(f"{where} is not an object. Possible solutions: profile again")
    for sha, m in models.items():
        calls = m.get("calls") if isinstance(m, dict) else None
        if not isinstance(calls, list) or not all(
                isinstance(c, dict) and isinstance(c.get("op"), str) and isinstance(c.get("shape"), str)
                and isinstance(c.get("count"), int) and c["count"] >= 1 for c in calls):
            raise UserError(f"{where}[{sha!r}] needs calls [{{op, shape, count}}, ...]. Possible solutions: "
                            "profile again")
        fused = m.get("fused_quantizers", [])
        if not isinstance(fused, list) or not all(isinstance(n, str) for n in fused):
            raise UserError(f"{where}[{sha!r}] fused_quantizers must be a list of layer names. Possible "
                            "solutions: profile again")
    return models


def _key(e: dict) -> tuple:
    return tuple(e[k] for k in KEY)


@dataclass
class LatencyTable:
    board: str
    measured = True                 # class attribute: False for UnmeasuredTable
    entries: dict[tuple, dict] = field(default_factory=dict)
    models: dict[str, dict] = field(default_factory=dict)       # model sha256[:16] -> {"name", "calls"}
    _fastest: dict | None = field(default=None, repr=False, compare=False)   # kernel_for's index

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
        if d.get("format") != FORMAT or d.get("version") not in READS:
            raise UserError(f"{str(path)!r} is not a v{VERSION} latency table (format {d.get('format')!r}, "
                            f"version {d.get('version')!r}; version 2 times every call kind of a UNet call and "
                            "records where each time came from, version 3 every kernel path a layer can take). "
                            "Possible solutions: profile again with this mpqdm")
        if not isinstance(d.get("board"), str) or (board is not None and d["board"] != board):
            raise UserError(f"latency table {str(path)!r} is for board {d.get('board')!r}, not {board!r}")
        entries = d.get("entries", [])
        if not isinstance(entries, list):
            raise UserError(f"latency table {str(path)!r}: 'entries' is not a list. Possible solutions: profile again")
        table = cls(d["board"], models=_check_models(path, d.get("models", {})))
        for i, e in enumerate(entries):
            if d["version"] == 2 and isinstance(e, dict):
                e = {**e, "kernel": ""}
            _check_entry(path, i, e)
            table.entries[_key(e)] = e
        return table

    @classmethod
    def load_or_empty(cls, path: str | Path, board: str) -> LatencyTable:
        return cls.load(path, board) if Path(path).is_file() else cls(board)

    @classmethod
    def load_for_update(cls, path: str | Path, board: str) -> tuple[LatencyTable, int | None]:
        """The table `mpqdm profile` merges into, and the version of an older table at `path` (None:
        none), which `keep_older` moves aside before the new one is first saved."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            d = None
        old = d.get("version") if isinstance(d, dict) and d.get("format") == FORMAT else None
        if isinstance(old, int) and old < VERSION:
            return cls(board), old
        return cls.load_or_empty(path, board), None

    @staticmethod
    def keep_older(path: str | Path, old: int) -> str:
        """Move a table of an older version aside (latency.v2.json), so upgrading loses nothing."""
        path = Path(path)
        keep = path.with_name(f"{path.stem}.v{old}{path.suffix}")
        path.replace(keep)
        return f"{path} was a v{old} table: kept as {keep}, a v{VERSION} table started"

    def merge(self, entries: list[dict]) -> None:
        for e in entries:
            self.entries[_key(e)] = {**OPTIONAL, **{k: e[k] for k in (*FIELDS, *OPTIONAL) if k in e}}
        self._fastest = None

    def save(self, path: str | Path) -> None:
        rows = sorted(self.entries.values(), key=lambda e: tuple(str(e[k]) for k in KEY))
        write_json(path, {"format": FORMAT, "version": VERSION, "board": self.board, "entries": rows,
                          "models": dict(sorted(self.models.items()))})

    def check_measured_on(self, board, path: str | Path = "") -> list[str]:
        """Refuse a table measured on CPU features other than the board profile's (or, for a board other
        than the host, on another CPU model); returns warnings (the host's CPU model differing)."""
        where = f"latency table {str(path)!r}" if path else f"the latency table of {board.name!r}"
        warnings = []
        for (cpu, feats), e in {(e["cpu"], tuple(e["features"])): e for e in self.entries.values()}.items():
            got = set(known_features(board.arch, feats))
            if not same_kernel_features(board.arch, got, board.cpu_features):
                raise UserError(f"{where} was measured on a CPU with features {sorted(got) or 'none'} (board key "
                                f"{e['key']!r}, {cpu!r}), but profile {board.name!r} describes "
                                f"{sorted(board.cpu_features)}. Possible solutions: profile this board again "
                                f"(mpqdm profile --board {board.name}), or fix cpu_features in {board.path}")
            if cpu != board.cpu:
                msg = (f"{where} was measured on {cpu!r} (board key {e['key']!r}), profile {board.name!r} "
                       f"describes {board.cpu!r}")
                if board.name != "host":
                    raise UserError(f"{msg}. Possible solutions: profile this board again, or fix cpu in "
                                    f"{board.path}")
                warnings.append(f"{msg} (same features, so it is used)")
        return warnings

    @property
    def emulated(self) -> bool:
        return any(e["emulated"] for e in self.entries.values())

    def kernel_for(self, shape: str, wbits: int, abits: int, threads: int) -> str | None:
        """The kernel path of a quantized layer shape at these widths that ran fastest at full width
        (the most channels timed; on an emulated board: the fewest instructions counted, where they
        were); None where the table has no such entry."""
        if self._fastest is None:
            best: dict[tuple, tuple] = {}
            for (op, sh, w, a, t, ch, kernel), e in self.entries.items():
                if op == "qconv" and (e["instructions"] or not e["emulated"]):
                    rank = (-ch, e["instructions"] if e["emulated"] else e["median_ms"], kernel)
                    k = (sh, w, a, t)
                    if k not in best or rank < best[k]:
                        best[k] = rank
            self._fastest = {k: r[2] for k, r in best.items()}
        return self._fastest.get((shape, wbits, abits, threads))

    def _path(self, op: str, shape: str, wbits: int, abits: int, threads: int) -> str:
        """The kernel path a lookup takes: a quantized layer's fastest (kernel_for), "" for the rest."""
        return (self.kernel_for(shape, wbits, abits, threads) or "") if op == "qconv" else ""

    def time(self, op: str, shape: str, wbits: int, abits: int, threads: int, channels: int,
             kernel: str | None = None) -> float:
        """One entry's median; a quantized layer's on `kernel` (None: the fastest path, kernel_for)."""
        if kernel is None:
            kernel = self._path(op, shape, wbits, abits, threads)
        e = self.entries.get((op, shape, wbits, abits, threads, channels, kernel))
        if e is None:
            widths = f" --wbits {wbits} --abits {abits}" if op == "qconv" else ""
            path = f" kernel={kernel}" if kernel else ""
            raise UserError(f"latency table for {self.board!r} has no entry op={op} shape={shape} wbits={wbits} "
                            f"abits={abits} threads={threads} channels={channels}{path}. Possible solutions: "
                            f"mpqdm profile --board {self.board}{widths} --threads {threads} MODEL")
        return float(e["median_ms"])

    def fit(self, shape: str, c_out: int, partial: int, wbits: int, abits: int, threads: int,
            op: str = "qconv") -> tuple[float, float]:
        """(t0, slope) of t(n) = t0 + n * slope through the full- and partial-width timings of one
        kernel path (the fastest at full width); timing noise never makes either negative."""
        kernel = self._path(op, shape, wbits, abits, threads)
        full = self.time(op, shape, wbits, abits, threads, c_out, kernel)
        if partial == c_out:
            return 0.0, full / c_out
        part = self.time(op, shape, wbits, abits, threads, partial, kernel)
        slope = max((full - part) / (c_out - partial), 0.0)
        return max(full - c_out * slope, 0.0), slope

    def layer_ms(self, shape: str, c_out: int, partial: int, groups, abits: int, threads: int,
                 op: str = "qconv") -> float:
        """Predicted time of one layer whose plan has `groups` [(channels, bits), ...]: each width
        used pays its fixed cost once (its channels run as one block), each channel its slope."""
        fits = {b: self.fit(shape, c_out, partial, b, abits, threads, op) for b in {b for _, b in groups}}
        return mix_ms(fits, groups)


    def step_ms(self, model: str, layers, threads: int) -> dict[str, float]:
        """Predicted ms of one UNet call of `model` (its sha256[:16]) by op: `layers` are the quantized
        layers' (name, shape, c_out, partial, groups [(channels, bits), ...], abits)."""
        m = self.models.get(model)
        if m is None:
            raise UserError(f"latency table for {self.board!r} has no whole-step calls of model {model} (its "
                            f"float calls). Possible solutions: mpqdm profile --board {self.board} MODEL")
        out: dict[str, float] = {"qconv": 0.0, "quantize": 0.0}
        fused = self.fused_quantizers(model)
        for name, shape, c_out, partial, groups, abits in layers:
            out["qconv"] += self.layer_ms(shape, c_out, partial, groups, abits, threads)
            if name not in fused:
                out["quantize"] += self.time("quantize", shape, 0, abits, threads, 0)
        for c in m["calls"]:
            out[c["op"]] = out.get(c["op"], 0.0) + c["count"] * self.time(c["op"], c["shape"], 0, 0, threads, 0)
        return out

    def fused_quantizers(self, model: str) -> set[str]:
        """The layers of `model` whose input quantizer runs inside the GroupNorm call before them."""
        return set(self.models.get(model, {}).get("fused_quantizers", []))

    def fixed_ms(self, model: str, threads: int) -> float:
        """The plan-independent part of one UNet call (every op but qconv and quantize)."""
        return sum(self.step_ms(model, [], threads).values())


class UnmeasuredTable(LatencyTable):
    """A board with no latency table: every kernel costs 0 ms, so only memory budgets bind (a
    latency budget is refused before it is used: see allocator.allocate)."""

    measured = False

    def time(self, op: str, shape: str, wbits: int, abits: int, threads: int, channels: int,
             kernel: str | None = None) -> float:
        return 0.0

    def step_ms(self, model: str, layers, threads: int) -> dict[str, float]:
        return {"qconv": 0.0, "quantize": 0.0}


def mix_ms(fits: dict[int, tuple[float, float]], groups) -> float:
    """The latency model: `fits` maps each width used to (t0, slope); groups [(channels, bits), ...]."""
    return sum(fits[b][0] for b in {b for _, b in groups}) + sum(n * fits[b][1] for n, b in groups)
