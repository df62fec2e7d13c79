"""Channel statistics (format owner): the allocator's input, written by `mpqdm stats`
(frontend/quant/stats.py computes them).

{"format": "mpqdm.stats", "version": 3, "model": {"sha256", "class"}, "method", "smoothing",
 "candidate_bits": [1..8], "abits": [4, 8], "calibration": {...},
 "e2e": {"samples", "every", "seed", "seconds"},
 "layers": {name: {"kind": "conv2d" | "linear", "policy": "quant" | "w8a8" | "float",
                   "c_out", "c_in", "kernel", "stride", "padding", "weights_per_channel",
                   "shape": the kernel shape key of the latency table (core/scheme.py ConvSpec.shape_key),
                   "macs": MACs per UNet call (batch 1), "kurtosis": [c_out],
                   "cost": {"4": [[c_out] per candidate bit-width], "8": [...]},
                   "sensitivity": d|eps|^2 / d|layer output|^2,
                   "e2e": {"4": [per candidate bit-width], "8": [...]}}}}   (not on float layers)
cost[a][k][c]: squared output error of channel c alone at candidate_bits[k] with a-bit inputs,
summed over the kept calibration inputs; additive over channels (any grouping is a sum).
e2e[a][k]: the UNet's mean squared noise-prediction error with this layer alone at W candidate_bits[k]
A a, every other layer FP (frontend/quant/e2e.py), on the statistics' own FP trajectories.
"""

from __future__ import annotations

import math
from pathlib import Path

from .bits import WBITS
from .errors import UserError
from .io import read_versioned_json, write_json

FORMAT, VERSION = "mpqdm.stats", 3     # v2: "shape" (latency lookups); v3: "e2e" (the allocator's cost)
CANDIDATE_BITS = tuple(range(1, 9))


def write_stats(stats: dict, path: str | Path) -> None:
    write_json(path, stats)


def read_stats(path: str | Path) -> dict:
    """The statistics, every field checked: a malformed file is named with the field that is wrong."""
    doc = read_versioned_json(path, FORMAT, VERSION, f"re-run mpqdm stats MODEL_DIR --out {path}")
    check_stats(doc, str(path))
    return doc


POLICIES = ("quant", "w8a8", "float")


def _bad(where: str, field: str, problem: str) -> UserError:
    return UserError(f"statistics {where!r}: {field} {problem}. Possible solutions: re-run mpqdm stats")


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_stats(doc: dict, where: str = "statistics") -> None:
    model = doc.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("sha256"), str) or not isinstance(
            model.get("class"), str):
        raise _bad(where, "'model'", "must hold 'sha256' and 'class'")
    bits = doc.get("candidate_bits")
    if not isinstance(bits, list) or not bits or not all(isinstance(b, int) and b in WBITS for b in bits):
        raise _bad(where, "'candidate_bits'", f"is {bits!r}, not a list of widths 1..8")
    if not isinstance(doc.get("smoothing"), bool):
        raise _bad(where, "'smoothing'", "must be true or false")
    layers = doc.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise _bad(where, "'layers'", "must map layer names to their statistics")
    for name, L in layers.items():
        _check_layer(where, name, L, len(bits))


def _check_layer(where: str, name: str, L, n_bits: int) -> None:
    field = f"layer {name!r}"
    if not isinstance(L, dict):
        raise _bad(where, field, "is not an object")
    if L.get("policy") not in POLICIES:
        raise _bad(where, f"{field} 'policy'", f"is {L.get('policy')!r}, not one of {', '.join(POLICIES)}")
    for key in ("c_out", "weights_per_channel"):
        if not isinstance(L.get(key), int) or isinstance(L.get(key), bool) or L[key] < 1:
            raise _bad(where, f"{field} {key!r}", f"is {L.get(key)!r}, not a positive integer")
    if not isinstance(L.get("shape"), str):
        raise _bad(where, f"{field} 'shape'", "must be the latency table's shape key")
    if not _number(L.get("sensitivity")) or L["sensitivity"] < 0:
        raise _bad(where, f"{field} 'sensitivity'", f"is {L.get('sensitivity')!r}, not a finite number >= 0")
    c = L["c_out"]
    kurt = L.get("kurtosis")
    if not isinstance(kurt, list) or len(kurt) != c or not all(_number(k) for k in kurt):
        raise _bad(where, f"{field} 'kurtosis'", f"must list {c} finite numbers, one per output channel")
    cost = L.get("cost")
    if not isinstance(cost, dict) or not cost:
        raise _bad(where, f"{field} 'cost'", "must map activation widths to per-bit costs")
    for a, rows in cost.items():
        ok = isinstance(rows, list) and len(rows) == n_bits and all(
            isinstance(r, list) and len(r) == c and all(_number(v) and v >= 0 for v in r) for r in rows)
        if not ok:
            raise _bad(where, f"{field} 'cost'[{a!r}]", f"must be {n_bits} lists (one per candidate width) of "
                       f"{c} finite costs >= 0")
    if L["policy"] == "float":
        return
    e2e = L.get("e2e")
    if not isinstance(e2e, dict) or set(e2e) != set(cost) or not all(
            isinstance(r, list) and len(r) == n_bits and all(_number(v) and v >= 0 for v in r) for r in e2e.values()):
        raise _bad(where, f"{field} 'e2e'", f"must map the activation widths {sorted(cost)} to {n_bits} finite "
                   "errors >= 0 (one per candidate width)")
