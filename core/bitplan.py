"""The versioned BitPlan JSON format (`quant_plan.json`): per-layer, per-channel-group bit widths.

Reader, writer and validation live here and nowhere else. A quantized layer lists its output channels
by descending kurtosis (`order`) and gives bit widths to half-open ranges of positions in that order.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .bits import WBITS
from .errors import UserError
from .io import write_json

FORMAT = "mpqdm.bitplan"
VERSION = 1
MIN_BITS, MAX_BITS = WBITS[0], WBITS[-1]


def _fail(msg: str, fix: str) -> NoReturn:
    raise UserError(f"{msg}. Possible solutions: {fix}.")


def _int(value, what: str, lo: int | None = None, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(f"{what} must be an integer, got {value!r}", "write it as a JSON integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        allowed = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        _fail(f"{what} is {value}, not {allowed}", f"use a value {allowed}")
    return value


def _bits(value, what: str) -> int:
    return _int(value, what, MIN_BITS, MAX_BITS)


@dataclass(frozen=True)
class Group:
    """Positions [start, stop) of the layer's `order`, all quantized to `wbits`."""

    start: int
    stop: int
    wbits: int

    def __post_init__(self):
        _int(self.start, "group start", 0)
        _int(self.stop, "group stop", 0)
        if self.stop <= self.start:
            _fail(f"group [{self.start}, {self.stop}) is empty or reversed", "give ranges with start < stop")
        _bits(self.wbits, f"wbits of group [{self.start}, {self.stop})")


@dataclass(frozen=True)
class LayerPlan:
    """A quantized layer: channel order, groups covering positions 0..c_out, activation bits."""

    order: tuple[int, ...]
    groups: tuple[Group, ...]
    abits: int

    def __post_init__(self):
        object.__setattr__(self, "order", tuple(self.order))
        object.__setattr__(self, "groups", tuple(self.groups))
        n = len(self.order)
        if n == 0:
            _fail("order is empty", "list every output channel index once")
        for i in self.order:
            _int(i, "order entry", 0, n - 1)
        if len(set(self.order)) != n:
            missing = sorted(set(range(n)) - set(self.order))
            _fail(f"order is not a permutation of 0..{n - 1} (missing {missing[:5]}, others repeated)",
                  "list every output channel index exactly once")
        for g in self.groups:
            if not isinstance(g, Group):
                _fail(f"group {g!r} is not a Group", "build groups with Group(start, stop, wbits)")
            if g.stop > n:
                _fail(f"group [{g.start}, {g.stop}) is out of range: the layer has {n} channels",
                      f"keep group ranges within 0..{n}, the length of `order`")
        starts = [g.start for g in self.groups]
        if starts != sorted(starts):
            _fail(f"groups are not sorted by start ({starts})", "list groups in order of their start")
        pos = 0
        for g in self.groups:
            if g.start != pos:
                kind = "gap" if g.start > pos else "overlap"
                _fail(f"groups do not cover 0..{n} exactly: {kind} at position {min(pos, g.start)} "
                      f"(group [{g.start}, {g.stop}) after one ending at {pos})",
                      "make each group start where the previous one stops")
            pos = g.stop
        if pos != n:
            _fail(f"groups cover positions 0..{pos} but the layer has {n} channels (0..{n})",
                  f"make the last group stop at {n}, the length of `order`")
        _bits(self.abits, "abits")

    @classmethod
    def uniform(cls, c_out: int, wbits: int, abits: int) -> LayerPlan:
        """All channels at `wbits`, in natural order."""
        _int(c_out, "c_out", 1)
        return cls(tuple(range(c_out)), (Group(0, c_out, wbits),), abits)

    @property
    def c_out(self) -> int:
        return len(self.order)

    @property
    def avg_wbits(self) -> float:
        """Mean weight bits over channels."""
        return sum((g.stop - g.start) * g.wbits for g in self.groups) / self.c_out

    def bits_per_channel(self) -> tuple[int, ...]:
        """wbits indexed by ORIGINAL output-channel index."""
        bits = [0] * self.c_out
        for g in self.groups:
            for pos in range(g.start, g.stop):
                bits[self.order[pos]] = g.wbits
        return tuple(bits)

    def is_uniform(self) -> bool:
        return len(self.groups) == 1 and self.order == tuple(range(self.c_out))


@dataclass(frozen=True)
class FloatLayer:
    """Marker: the layer stays floating point."""


Layer = LayerPlan | FloatLayer


@dataclass(frozen=True)
class BitPlan:
    """A whole model's plan: every quantizable layer is a LayerPlan or a FloatLayer."""

    model_sha256: str
    model_class: str
    group_size: int
    smoothing: bool
    layers: dict[str, Layer]

    def __post_init__(self):
        if not isinstance(self.model_sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", self.model_sha256):
            _fail(f"model sha256 {self.model_sha256!r} is not 64 lowercase hex digits",
                  "use frontend.model_io.model_fingerprint(model_dir)")
        if not isinstance(self.model_class, str) or not self.model_class:
            _fail(f"model class {self.model_class!r} is not a name", "give a class name, e.g. 'UNet2DModel'")
        _int(self.group_size, "group_size", 1)
        if not isinstance(self.smoothing, bool):
            _fail(f"smoothing must be true or false, got {self.smoothing!r}", "write a JSON boolean")
        if not isinstance(self.layers, dict) or not self.layers:
            _fail("plan has no layers", "list every quantizable layer of the model")
        object.__setattr__(self, "layers", dict(self.layers))  # a private copy
        for name, layer in self.layers.items():
            if not isinstance(layer, LayerPlan | FloatLayer):
                _fail(f"layer {name!r} is {layer!r}", "use LayerPlan or FloatLayer")

    def to_json(self) -> dict:
        layers = {}
        for name, p in self.layers.items():
            if isinstance(p, FloatLayer):
                layers[name] = {"float": True}
            elif p.is_uniform():  # compact form; c_out keeps the file self-contained
                layers[name] = {"wbits": p.groups[0].wbits, "abits": p.abits, "c_out": p.c_out}
            else:
                groups = [{"channels": [g.start, g.stop], "wbits": g.wbits} for g in p.groups]
                layers[name] = {"order": list(p.order), "groups": groups, "abits": p.abits}
        return {"format": FORMAT, "version": VERSION,
                "model": {"sha256": self.model_sha256, "class": self.model_class},
                "group_size": self.group_size, "smoothing": self.smoothing, "layers": layers}

    @classmethod
    def from_json(cls, d: dict, layer_shapes: dict[str, int] | None = None) -> BitPlan:
        """Parse a plan; `layer_shapes` (name -> c_out) is needed only for compact entries without c_out."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            _fail(f"not a bit plan: format is {found!r}, expected {FORMAT!r}",
                  "pass a quant_plan.json written by the mpqdm allocator")
        if d.get("version") != VERSION:
            _fail(f"unsupported bit plan version {d.get('version')!r}; this mpqdm reads version {VERSION}",
                  "regenerate the plan with this mpqdm, or use the mpqdm version that wrote it")
        model, layers = d.get("model"), d.get("layers")
        if not isinstance(model, dict) or not isinstance(layers, dict):
            _fail("plan lacks a 'model' or 'layers' object", "regenerate the plan with the mpqdm allocator")
        parsed = {}
        for name, entry in layers.items():
            try:
                parsed[name] = _parse_layer(entry, (layer_shapes or {}).get(name))
            except UserError as exc:
                raise UserError(f"layer {name!r}: {exc}") from None
        return cls(model.get("sha256"), model.get("class"), d.get("group_size"), d.get("smoothing"), parsed)

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file in the same folder, then os.replace)."""
        try:
            write_json(path, self.to_json())
        except OSError as exc:
            _fail(f"cannot write bit plan {str(path)!r} ({exc.strerror})", "check that the folder exists")

    @classmethod
    def load(cls, path: str | Path, layer_shapes: dict[str, int] | None = None) -> BitPlan:
        try:
            with open(path) as fh:
                d = json.load(fh)
        except OSError as exc:
            _fail(f"cannot read bit plan {str(path)!r} ({exc.strerror})", "check the path")
        except UnicodeDecodeError:
            _fail(f"bit plan {str(path)!r} is not a text file", "give the JSON file mpqdm allocate wrote")
        except json.JSONDecodeError as exc:
            _fail(f"bit plan {str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                  f"column {exc.colno})", "fix the file or regenerate it with the mpqdm allocator")
        try:
            return cls.from_json(d, layer_shapes)
        except UserError as exc:
            raise UserError(f"bit plan {str(path)!r}: {exc}") from None

    def avg_wbits(self, weights_per_channel: dict[str, int]) -> float:
        """Mean weight bits over quantized layers, each channel weighted by its weight count (Cin*kh*kw)."""
        bits = count = 0
        for name, p in self.layers.items():
            if isinstance(p, FloatLayer):
                continue
            if name not in weights_per_channel:
                _fail(f"no weight count for layer {name!r}",
                      "pass the weights per channel of every quantized layer")
            w = weights_per_channel[name]
            bits += w * sum((g.stop - g.start) * g.wbits for g in p.groups)
            count += w * p.c_out
        if count == 0:
            _fail("plan has no quantized layers with weights", "quantize at least one layer")
        return bits / count

    def validate_against(self, layer_shapes: dict[str, int], model_sha256: str | None = None) -> None:
        """Check the plan fits a model: `layer_shapes` maps every quantizable layer name to its c_out."""
        if model_sha256 is not None and model_sha256 != self.model_sha256:
            _fail(f"plan is for model {self.model_sha256[:12]}..., not this model ({model_sha256[:12]}...)",
                  "pass the plan made for this model, or rerun the allocator on it")
        extra = [n for n in self.layers if n not in layer_shapes]
        if extra:
            _fail(f"plan names layers the model lacks: {extra[:5]}",
                  "check the plan matches this model class, or remove these layers from the plan")
        missing = [n for n in layer_shapes if n not in self.layers]
        if missing:
            _fail(f"plan misses layers the model has: {missing[:5]}",
                  "add them to the plan (use {\"float\": true} to keep a layer floating point)")
        for name, p in self.layers.items():
            if isinstance(p, LayerPlan) and p.c_out != layer_shapes[name]:
                _fail(f"layer {name!r} has {p.c_out} channels in the plan, {layer_shapes[name]} in the model",
                      "regenerate the plan for this model")


def _parse_layer(entry, c_out: int | None) -> Layer:
    keys = set(entry) if isinstance(entry, dict) else None
    if keys == {"float"} and entry["float"] is True:
        return FloatLayer()
    if keys == {"order", "groups", "abits"}:
        if not isinstance(entry["order"], list) or not isinstance(entry["groups"], list):
            _fail("'order' and 'groups' must be lists", "see the bit plan format in core/bitplan.py")
        groups = []
        for g in entry["groups"]:
            ok = isinstance(g, dict) and set(g) == {"channels", "wbits"}
            if not ok or not isinstance(g["channels"], list) or len(g["channels"]) != 2:
                _fail(f"group {g!r} is malformed", 'write groups as {"channels": [start, stop], "wbits": w}')
            groups.append(Group(g["channels"][0], g["channels"][1], g["wbits"]))
        return LayerPlan(tuple(entry["order"]), tuple(groups), entry["abits"])
    if keys is not None and {"wbits", "abits"} <= keys <= {"wbits", "abits", "c_out"}:
        n = entry.get("c_out", c_out)
        if n is None:
            _fail("compact entry has no 'c_out' and no model shapes were given",
                  'add "c_out" to the entry, or load with layer_shapes=... from the model')
        if c_out is not None and n != c_out:
            _fail(f"c_out is {n} in the plan but {c_out} in the model", "regenerate the plan for this model")
        return LayerPlan.uniform(n, entry["wbits"], entry["abits"])
    _fail(f"entry {entry!r} is neither a quantized layer nor a float layer",
          'write {"wbits": w, "abits": a}, {"order": [...], "groups": [...], "abits": a} or {"float": true}')
