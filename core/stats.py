"""Channel statistics (format owner): the allocator's input, written by `mpqdm stats`
(frontend/quant/stats.py computes them).

{"format": "mpqdm.stats", "version": 2, "model": {"sha256", "class"}, "method", "smoothing",
 "candidate_bits": [1..8], "abits": [4, 8], "calibration": {...},
 "layers": {name: {"kind": "conv2d" | "linear", "policy": "quant" | "w8a8" | "float",
                   "c_out", "c_in", "kernel", "stride", "padding", "weights_per_channel",
                   "shape": the kernel shape key of the latency table (core/scheme.py ConvSpec.shape_key),
                   "macs": MACs per UNet call (batch 1), "kurtosis": [c_out],
                   "cost": {"4": [[c_out] per candidate bit-width], "8": [...]},
                   "sensitivity": d|eps|^2 / d|layer output|^2}}}
cost[a][k][c]: squared output error of channel c alone at candidate_bits[k] with a-bit inputs,
summed over the kept calibration inputs; additive over channels (any grouping is a sum).
"""

from __future__ import annotations

from pathlib import Path

from .io import read_versioned_json, write_json

FORMAT, VERSION = "mpqdm.stats", 2     # v2: "shape", for the allocator's latency lookups
CANDIDATE_BITS = tuple(range(1, 9))


def write_stats(stats: dict, path: str | Path) -> None:
    write_json(path, stats)


def read_stats(path: str | Path) -> dict:
    return read_versioned_json(path, FORMAT, VERSION, "re-run mpqdm stats")
