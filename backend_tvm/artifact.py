"""The artifact file: a compiled Plan, its constants and its sampler, in the format the C runtime maps.

runtime/include/mpq_artifact.h is the definition of the format (layout in prose, C structs); this
module restates the structs as `struct` formats, writes artifacts and reads them back for tests and
reports (the runtime never uses the reader). tests/test_artifact.py compiles the header and checks
every size and field offset in LAYOUT against the C compiler's.

Version 2 adds the checksum: header.checksum is zlib.crc32 of the whole file with the checksum field
taken as zero (checksum(); the runtime's mpq_checksum_compute is the same CRC-32). The writer computes
it while it writes and stores it last; with_checksum() restamps edited bytes (the tests' corruptions).

Choices the header leaves to the writer: tensors keep the plan's order (a view always follows its
base); the kernel table holds only the kernels the calls use, in order of first use; strings are
stored once each; CONST views store no data of their own (they point at their root's bytes).
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from .plan import ACT, ALIGN, CONST, DTYPES, INPUT, OUTPUT, TIMESTEP, Plan, Tensor

FORMAT_VERSION = 2
MAGIC = b"MPQDMART"
MAX_DIMS = 4
ARG_STEP = 1
ARCHES = ("x86_64", "aarch64")
DTYPE_CODES = {"float32": 0, "uint8": 1, "int32": 2, "uint32": 3}
KIND_CODES = {CONST: 0, ACT: 1, INPUT: 2, TIMESTEP: 3, OUTPUT: 4}
PREDICTION_CODES = {"epsilon": 0}
SAMPLER_KEYS = ("timesteps", "alphas_cumprod", "num_train_timesteps", "clip_sample", "clip_range",
                "final_alpha_cumprod")


class Struct:
    """A C struct as (field, struct code) pairs, little-endian, with no implicit padding."""

    def __init__(self, name: str, fields: list[tuple[str, str]]):
        self.name = name
        self.fields = fields
        self.fmt = struct.Struct("<" + "".join(code for _, code in fields))
        self.size = self.fmt.size
        self.offsets = {f: struct.calcsize("<" + "".join(c for _, c in fields[:i])) for i, (f, _) in enumerate(fields)}
        self._counts = {f: _count(code) for f, code in fields}

    def pack(self, **values) -> bytes:
        flat = []
        for f, _ in self.fields:
            if self._counts[f]:
                flat.extend(values[f])
            else:
                flat.append(values[f])
        return self.fmt.pack(*flat)

    def unpack(self, buf: bytes, offset: int = 0) -> dict:
        flat = list(self.fmt.unpack_from(buf, offset))
        out = {}
        for f, _ in self.fields:
            n = self._counts[f]
            out[f], flat = (tuple(flat[:n]), flat[n:]) if n else (flat[0], flat[1:])
        return out


def _count(code: str) -> int:
    """The number of values an array field packs (0 for a scalar or a byte string)."""
    m = re.fullmatch(r"(\d*)([a-zA-Z])", code)
    if m is None:
        raise ValueError(f"bad struct code {code!r}")
    return 0 if m[2] == "s" or not m[1] else int(m[1])


_SECTIONS = ("tensors", "kernels", "calls", "args", "strings", "sampler", "data")
_SECTION_FIELDS = [("tensors_offset", "Q"), ("n_tensors", "Q"), ("kernels_offset", "Q"), ("n_kernels", "Q"),
                   ("calls_offset", "Q"), ("n_calls", "Q"), ("args_offset", "Q"), ("n_args", "Q"),
                   ("strings_offset", "Q"), ("strings_bytes", "Q"), ("sampler_offset", "Q"),
                   ("sampler_bytes", "Q"), ("data_offset", "Q"), ("data_bytes", "Q")]

HEADER = Struct("mpq_art_header", [
    ("magic", "8s"), ("version", "I"), ("header_size", "I"), ("checksum", "I"), ("flags", "I"), ("board", "32s"),
    ("arch", "16s"), ("features", "128s"), ("model_sha256", "32s"), ("file_size", "Q"), ("arena_bytes", "Q"),
    ("n_steps", "I"), ("reserved", "I"), *_SECTION_FIELDS])
TENSOR = Struct("mpq_art_tensor", [
    ("name_offset", "I"), ("name_len", "I"), ("dtype", "B"), ("kind", "B"), ("ndim", "B"), ("bits", "B"),
    ("alias", "i"), ("shape", f"{MAX_DIMS}q"), ("offset", "Q"), ("nbytes", "Q")])
KERNEL = Struct("mpq_art_kernel", [("name_offset", "I"), ("name_len", "I")])
CALL = Struct("mpq_art_call", [
    ("kernel", "I"), ("first_arg", "I"), ("n_args", "I"), ("op_offset", "I"), ("op_len", "I"), ("pad", "I")])
ARG = Struct("mpq_art_arg", [("tensor", "I"), ("flags", "I")])
SAMPLER = Struct("mpq_art_sampler", [
    ("n_steps", "I"), ("num_train_timesteps", "I"), ("prediction_type", "I"), ("clip_sample", "I"),
    ("clip_range", "f"), ("final_alpha_cumprod", "f")])
STRUCTS = (HEADER, TENSOR, KERNEL, CALL, ARG, SAMPLER)
BOARD_LEN = 32
BOARD_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{BOARD_LEN - 1}}}")
RESERVED = ("flags", "reserved")                 # header fields that must be 0
CHECKSUM_AT = HEADER.offsets["checksum"]
LAYOUT = {s.name: {"size": s.size, "fields": dict(s.offsets)} for s in STRUCTS}

# The header's #defines and enum values, checked against the compiler by the layout test.
C_CONSTANTS = {"MPQ_ARTIFACT_VERSION": FORMAT_VERSION, "MPQ_ARTIFACT_MAGIC_LEN": len(MAGIC),
               "MPQ_ARTIFACT_ALIGN": ALIGN, "MPQ_ART_MAX_DIMS": MAX_DIMS, "MPQ_ARG_STEP": ARG_STEP,
               "MPQ_ART_BOARD_LEN": BOARD_LEN,
               **{f"MPQ_DT_{k.upper()}": v for k, v in DTYPE_CODES.items()},
               **{f"MPQ_KIND_{k.upper()}": v for k, v in KIND_CODES.items()},
               **{f"MPQ_PRED_{k.upper()}": v for k, v in PREDICTION_CODES.items()}}


def checksum(buf: bytes) -> int:
    """The CRC-32 an artifact's header stores: zlib.crc32 of all of buf with the checksum field as zero."""
    crc = zlib.crc32(buf[:CHECKSUM_AT])
    crc = zlib.crc32(b"\0\0\0\0", crc)
    return zlib.crc32(buf[CHECKSUM_AT + 4:], crc)


def with_checksum(buf: bytes) -> bytes:
    """buf (a whole artifact, perhaps edited) with its checksum field recomputed."""
    return bytes(buf[:CHECKSUM_AT]) + struct.pack("<I", checksum(buf)) + bytes(buf[CHECKSUM_AT + 4:])


def _align(n: int, a: int = ALIGN) -> int:
    return -(-n // a) * a


def _le(dtype: str) -> np.dtype:
    return np.dtype(DTYPES[dtype]).newbyteorder("<")


# ---- writing ----------------------------------------------------------------------------------------

class _Strings:
    """The string table: each string once, NUL-terminated, addressed by (offset, length)."""

    def __init__(self):
        self.buf = bytearray()
        self.at: dict[str, tuple[int, int]] = {}

    def add(self, s: object, what: str) -> tuple[int, int]:
        if not isinstance(s, str):
            raise ValueError(f"{what}: a name must be a str, got {type(s).__name__}")
        if "\0" in s:
            raise ValueError(f"{what}: name {s!r} contains a NUL character")
        if s not in self.at:
            raw = s.encode()
            self.at[s] = (len(self.buf), len(raw))
            self.buf += raw + b"\0"
        return self.at[s]


def _fixed(s: str, size: int, what: str) -> bytes:
    raw = s.encode() if isinstance(s, str) else None
    if raw is None or len(raw) >= size or b"\0" in raw:
        raise ValueError(f"{what} must be a str of at most {size - 1} bytes without NUL, got {s!r}")
    return raw


def _header_strings(board: str, arch: str, features: list[str], model_sha256: str) -> dict:
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {ARCHES}, got {arch!r}")
    if isinstance(features, str) or not all(isinstance(f, str) and f and "," not in f for f in features):
        raise ValueError(f"features must be a list of non-empty names without commas, got {features!r}")
    try:
        sha = bytes.fromhex(model_sha256)
    except (TypeError, ValueError):
        sha = b""
    if len(sha) != 32:
        raise ValueError(f"model_sha256 must be 64 hex digits, got {model_sha256!r}")
    if not isinstance(board, str) or not BOARD_NAME.fullmatch(board):
        raise ValueError(f"board must be a name of 1 to {BOARD_LEN - 1} characters of [A-Za-z0-9._-], got {board!r}")
    return {"board": _fixed(board, BOARD_LEN, "board"), "arch": _fixed(arch, 16, "arch"),
            "features": _fixed(",".join(features), 128, "features"), "model_sha256": sha}


def _sampler_section(plan: Plan, sampler: dict) -> bytes:
    missing = [k for k in SAMPLER_KEYS if k not in sampler]
    if missing:
        raise ValueError(f"sampler is missing {missing}")
    ts = [int(t) for t in sampler["timesteps"]]
    alphas = [float(a) for a in sampler["alphas_cumprod"]]
    n_train = int(sampler["num_train_timesteps"])
    pred = sampler.get("prediction_type", "epsilon")
    if not ts or plan.n_steps != len(ts) or len(alphas) != len(ts):
        raise ValueError(f"plan.n_steps ({plan.n_steps}), len(timesteps) ({len(ts)}) and len(alphas_cumprod) "
                         f"({len(alphas)}) must be equal and at least 1")
    if any(a <= b for a, b in zip(ts, ts[1:], strict=False)) or not 0 <= ts[-1] <= ts[0] < n_train:
        raise ValueError(f"timesteps must descend strictly within [0, {n_train}), got {ts}")
    finals = [*alphas, float(sampler["final_alpha_cumprod"])]
    if not all(0.0 < a <= 1.0 for a in finals):
        raise ValueError(f"alphas_cumprod and final_alpha_cumprod must lie in (0, 1], got {finals}")
    if pred not in PREDICTION_CODES:
        raise ValueError(f"prediction_type {pred!r} is not supported (only {list(PREDICTION_CODES)})")
    fixed = SAMPLER.pack(n_steps=len(ts), num_train_timesteps=n_train, prediction_type=PREDICTION_CODES[pred],
                         clip_sample=int(bool(sampler["clip_sample"])), clip_range=float(sampler["clip_range"]),
                         final_alpha_cumprod=finals[-1])
    return fixed + struct.pack(f"<{len(ts)}i{len(ts)}f", *ts, *alphas)


def _check_tensor(plan: Plan, t: Tensor, index: dict[str, int]) -> None:
    what = f"tensor {t.name!r}"
    if len(t.shape) > MAX_DIMS or any(d < 0 for d in t.shape):
        raise ValueError(f"{what}: shape {t.shape} has more than {MAX_DIMS} dims or a negative dim")
    if not 0 <= t.bits <= 255:
        raise ValueError(f"{what}: bits {t.bits} out of range")
    if t.alias_of is not None:
        if index.get(t.alias_of, len(index)) >= index[t.name]:
            raise ValueError(f"{what}: views {t.alias_of!r}, which is not defined before it")
        if (t.kind == CONST) != (plan.tensors[plan.root(t.name)].kind == CONST):
            raise ValueError(f"{what}: a view and its base must both be CONST or both live in the arena")
    elif t.kind == CONST:
        if t.data is None or t.data.nbytes != t.nbytes:
            raise ValueError(f"{what}: constant data does not match shape {t.shape} {t.dtype}")
    elif t.offset < 0 or t.offset % ALIGN or t.offset + t.nbytes > plan.arena_bytes:
        raise ValueError(f"{what}: arena region [{t.offset}, {t.offset + t.nbytes}) is not a {ALIGN}-aligned "
                         f"region inside the arena ({plan.arena_bytes} B); run plan_memory first")


def _check_step_args(plan: Plan) -> None:
    for c in plan.calls:
        for a in c.args:
            t = plan.tensors[a.tensor]
            if a.step and (t.kind != CONST or t.shape != (plan.n_steps,)):
                raise ValueError(f"call {c.kernel} ({c.op}): step-indexed argument {t.name!r} must be a CONST "
                                 f"tensor of shape ({plan.n_steps},), got {t.kind} {t.shape}")


def _const_offsets(plan: Plan, tensors: list[Tensor]) -> tuple[dict[str, int], int]:
    """Offsets of the stored constants inside the data section, and the section's size."""
    offsets, end = {}, 0
    for t in tensors:
        if t.kind == CONST and t.alias_of is None:
            offsets[t.name] = _align(end)
            end = offsets[t.name] + t.nbytes
    return offsets, end


def _tensor_table(plan: Plan, tensors: list[Tensor], index: dict[str, int], strings: _Strings,
                  const_at: dict[str, int]) -> bytes:
    out = bytearray()
    for t in tensors:
        off, n = strings.add(t.name, "tensor")
        root = plan.tensors[plan.root(t.name)]
        where = const_at[root.name] if t.kind == CONST else root.offset
        out += TENSOR.pack(name_offset=off, name_len=n, dtype=DTYPE_CODES[t.dtype], kind=KIND_CODES[t.kind],
                           ndim=len(t.shape), bits=t.bits, alias=-1 if t.alias_of is None else index[t.alias_of],
                           shape=(*t.shape, *[0] * (MAX_DIMS - len(t.shape))), offset=where, nbytes=t.nbytes)
    return bytes(out)


def _call_tables(plan: Plan, index: dict[str, int], strings: _Strings) -> tuple[list[str], bytes, bytes, bytes]:
    kernels = list(dict.fromkeys(c.kernel for c in plan.calls))
    kernel_at = {k: i for i, k in enumerate(kernels)}
    ktab = bytearray()
    for k in kernels:
        off, n = strings.add(k, "kernel")
        ktab += KERNEL.pack(name_offset=off, name_len=n)
    ctab, atab, n_args = bytearray(), bytearray(), 0
    for c in plan.calls:
        op_off, op_len = strings.add(c.op, f"call {c.kernel}")
        ctab += CALL.pack(kernel=kernel_at[c.kernel], first_arg=n_args, n_args=len(c.args), op_offset=op_off,
                          op_len=op_len, pad=0)
        for a in c.args:
            atab += ARG.pack(tensor=index[a.tensor], flags=ARG_STEP if a.step else 0)
        n_args += len(c.args)
    return kernels, bytes(ktab), bytes(ctab), bytes(atab)


def _build(plan: Plan, meta: dict, sampler: dict) -> tuple[bytes, list[tuple[int, Tensor]], dict]:
    """Validate, then lay out everything but the constant bytes: (head bytes, [(file offset, const)], summary)."""
    tensors = list(plan.tensors.values())
    index = {t.name: i for i, t in enumerate(tensors)}
    sampler_blob = _sampler_section(plan, sampler)
    for t in tensors:
        _check_tensor(plan, t, index)
    _check_step_args(plan)
    strings = _Strings()
    const_at, data_bytes = _const_offsets(plan, tensors)
    ttab = _tensor_table(plan, tensors, index, strings, const_at)
    kernels, ktab, ctab, atab = _call_tables(plan, index, strings)
    head = {"magic": MAGIC, "version": FORMAT_VERSION, "header_size": HEADER.size, "checksum": 0, "flags": 0, **meta,
            "arena_bytes": plan.arena_bytes, "n_steps": plan.n_steps, "reserved": 0,
            "n_tensors": len(tensors), "n_kernels": len(kernels), "n_calls": len(plan.calls),
            "n_args": len(atab) // ARG.size, "strings_bytes": len(strings.buf), "sampler_bytes": len(sampler_blob)}
    body, pos = bytearray(), HEADER.size
    for name, blob in (("tensors", ttab), ("kernels", ktab), ("calls", ctab), ("args", atab),
                       ("sampler", sampler_blob), ("strings", bytes(strings.buf))):
        gap = _align(pos, 8) - pos
        body += b"\0" * gap
        head[f"{name}_offset"], pos = pos + gap, pos + gap + len(blob)
        body += blob
    head["data_offset"] = _align(pos)
    body += b"\0" * (head["data_offset"] - pos)
    head.update(data_bytes=data_bytes, file_size=head["data_offset"] + data_bytes)
    consts = [(head["data_offset"] + const_at[t.name], t) for t in tensors if t.name in const_at]
    summary = {"bytes": head["file_size"], "const_bytes": sum(t.nbytes for _, t in consts),
               "tensors": len(tensors), "calls": len(plan.calls), "kernels": len(kernels)}
    return HEADER.pack(**head) + bytes(body), consts, summary     # checksum 0: write_artifact stores it


def write_artifact(path: str | Path, plan: Plan, *, board: str, arch: str, features: list[str],
                   model_sha256: str, sampler: dict) -> dict:
    """Write `plan` as an artifact, atomically (a temporary file beside `path`, then rename).

    sampler: timesteps (descending), alphas_cumprod (at those timesteps), num_train_timesteps, clip_sample,
    clip_range, final_alpha_cumprod, optionally prediction_type ("epsilon"); floats are stored as float32.
    Raises ValueError for a plan or metadata the format cannot hold. Returns a summary of what was written.
    """
    path = Path(path)
    meta = _header_strings(board, arch, features, model_sha256)
    try:
        head, consts, summary = _build(plan, meta, sampler)
    except struct.error as exc:
        raise ValueError(f"a value does not fit its artifact field: {exc}") from None
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            crc = zlib.crc32(head)                      # the checksum field is 0 in head
            fh.write(head)
            for at, t in consts:
                for blob in (b"\0" * (at - fh.tell()), np.ascontiguousarray(t.data, dtype=_le(t.dtype)).tobytes()):
                    crc = zlib.crc32(blob, crc)
                    fh.write(blob)
            fh.seek(CHECKSUM_AT)
            fh.write(struct.pack("<I", crc))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return summary


# ---- reading (tests and reports) ---------------------------------------------------------------------

_DTYPE_NAMES = {v: k for k, v in DTYPE_CODES.items()}
_KIND_NAMES = {v: k for k, v in KIND_CODES.items()}
_PREDICTION_NAMES = {v: k for k, v in PREDICTION_CODES.items()}


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode()


def _read_header(buf: bytes, where: str) -> dict:
    if len(buf) < HEADER.size:
        raise ValueError(f"{where}: truncated: {len(buf)} bytes, the header alone needs {HEADER.size}")
    h = HEADER.unpack(buf)
    if h["magic"] != MAGIC:
        raise ValueError(f"{where}: bad magic {h['magic']!r} (not an mpqdm artifact)")
    if h["version"] != FORMAT_VERSION:
        raise ValueError(f"{where}: format version {h['version']}, this reader reads version {FORMAT_VERSION}: "
                         "recompile it with mpqdm compile")
    if h["header_size"] != HEADER.size:
        raise ValueError(f"{where}: header size {h['header_size']}, expected {HEADER.size}")
    if len(buf) < h["file_size"]:
        raise ValueError(f"{where}: truncated: {len(buf)} bytes, the header says {h['file_size']}")
    if len(buf) != h["file_size"]:
        raise ValueError(f"{where}: {len(buf)} bytes, the header says {h['file_size']}")
    computed = checksum(buf)
    if computed != h["checksum"]:
        raise ValueError(f"{where}: checksum mismatch: the file is corrupted (stored 0x{h['checksum']:08x}, computed "
                         f"0x{computed:08x}); recompile it with mpqdm compile")
    for name in RESERVED:
        if h[name]:
            raise ValueError(f"{where}: reserved header field {name} is {h[name]:#x}, expected 0")
    board = h["board"].split(b"\0", 1)
    if len(board) != 2 or board[1].strip(b"\0") or not BOARD_NAME.fullmatch(board[0].decode("latin-1")):
        raise ValueError(f"{where}: bad board name {h['board']!r}: 1 to {BOARD_LEN - 1} characters of "
                         "[A-Za-z0-9._-], NUL-padded")
    sizes = {"tensors": TENSOR.size, "kernels": KERNEL.size, "calls": CALL.size, "args": ARG.size}
    for name in _SECTIONS:
        off = h[f"{name}_offset"]
        n = h[f"n_{name}"] * sizes[name] if name in sizes else h[f"{name}_bytes"]
        if off < HEADER.size or off + n > h["file_size"]:
            raise ValueError(f"{where}: {name} section [{off}, {off + n}) lies outside the file "
                             f"({h['file_size']} bytes)")
    if h["data_offset"] % ALIGN:
        raise ValueError(f"{where}: data section at {h['data_offset']} is not {ALIGN}-aligned")
    return h


def _string(buf: bytes, h: dict, off: int, n: int, what: str) -> str:
    if off + n > h["strings_bytes"]:
        raise ValueError(f"{what}: name [{off}, {off + n}) lies outside the string table ({h['strings_bytes']} B)")
    start = h["strings_offset"] + off
    return buf[start:start + n].decode()


def _read_tensor(buf: bytes, h: dict, i: int, names: list[str]) -> tuple[str, dict]:
    e = TENSOR.unpack(buf, h["tensors_offset"] + i * TENSOR.size)
    name = _string(buf, h, e["name_offset"], e["name_len"], f"tensor {i}")
    if e["dtype"] not in _DTYPE_NAMES or e["kind"] not in _KIND_NAMES or e["ndim"] > MAX_DIMS:
        raise ValueError(f"tensor {name!r}: bad dtype {e['dtype']}, kind {e['kind']} or ndim {e['ndim']}")
    dtype, kind, shape = _DTYPE_NAMES[e["dtype"]], _KIND_NAMES[e["kind"]], tuple(e["shape"][:e["ndim"]])
    if any(d < 0 for d in shape) or e["nbytes"] != int(np.prod(shape, dtype=np.int64)) * _le(dtype).itemsize:
        raise ValueError(f"tensor {name!r}: nbytes {e['nbytes']} does not match shape {shape} {dtype}")
    if not -1 <= e["alias"] < i:
        raise ValueError(f"tensor {name!r}: alias {e['alias']} is out of range")
    off, end = e["offset"], e["offset"] + e["nbytes"]
    limit = h["data_bytes"] if kind == CONST else h["arena_bytes"]
    if off % ALIGN or end > limit:
        region = "data section" if kind == CONST else "arena"
        raise ValueError(f"tensor {name!r}: [{off}, {end}) lies outside the {region} ({limit} B) or is unaligned")
    data = None
    if kind == CONST:
        start = h["data_offset"] + off
        data = np.frombuffer(buf, dtype=_le(dtype), count=e["nbytes"] // _le(dtype).itemsize,
                             offset=start).reshape(shape)
    return name, {"dtype": dtype, "kind": kind, "shape": shape, "bits": e["bits"],
                  "alias": None if e["alias"] < 0 else names[e["alias"]], "offset": off, "nbytes": e["nbytes"],
                  "data": data}


def _read_calls(buf: bytes, h: dict, names: list[str], kernels: list[str]) -> list[dict]:
    calls = []
    for i in range(h["n_calls"]):
        c = CALL.unpack(buf, h["calls_offset"] + i * CALL.size)
        if c["kernel"] >= len(kernels) or c["first_arg"] + c["n_args"] > h["n_args"]:
            raise ValueError(f"call {i}: kernel {c['kernel']} or arguments [{c['first_arg']}, "
                             f"{c['first_arg'] + c['n_args']}) lie outside their tables")
        if c["pad"]:
            raise ValueError(f"call {i}: reserved field pad is {c['pad']}, expected 0")
        args = []
        for j in range(c["first_arg"], c["first_arg"] + c["n_args"]):
            a = ARG.unpack(buf, h["args_offset"] + j * ARG.size)
            if a["tensor"] >= len(names) or a["flags"] & ~ARG_STEP:
                raise ValueError(f"call {i}: argument {j} has tensor {a['tensor']} or flags {a['flags']} out of range")
            args.append((names[a["tensor"]], bool(a["flags"] & ARG_STEP)))
        op = _string(buf, h, c["op_offset"], c["op_len"], f"call {i}")
        calls.append({"kernel": kernels[c["kernel"]], "op": op, "args": args})
    return calls


def _read_sampler(buf: bytes, h: dict) -> dict:
    n = h["n_steps"]
    if h["sampler_bytes"] != SAMPLER.size + 8 * n:
        raise ValueError(f"sampler section has {h['sampler_bytes']} bytes, {n} steps need {SAMPLER.size + 8 * n}")
    s = SAMPLER.unpack(buf, h["sampler_offset"])
    if s["n_steps"] != n or s["prediction_type"] not in _PREDICTION_NAMES:
        raise ValueError(f"sampler: {s['n_steps']} steps (header: {n}), prediction type {s['prediction_type']}")
    arrays = struct.unpack_from(f"<{n}i{n}f", buf, h["sampler_offset"] + SAMPLER.size)
    return {"timesteps": list(arrays[:n]), "alphas_cumprod": list(arrays[n:]),
            "num_train_timesteps": s["num_train_timesteps"], "clip_sample": bool(s["clip_sample"]),
            "clip_range": s["clip_range"], "final_alpha_cumprod": s["final_alpha_cumprod"],
            "prediction_type": _PREDICTION_NAMES[s["prediction_type"]]}


def read_artifact(path: str | Path) -> dict:
    """Read and check an artifact (for tests and reports; the C runtime maps the file itself).
    CONST data are read-only arrays over the file's bytes. Raises ValueError naming what is wrong."""
    buf = Path(path).read_bytes()
    h = _read_header(buf, str(path))
    names, tensors = [], {}
    for i in range(h["n_tensors"]):
        name, t = _read_tensor(buf, h, i, names)
        if name in tensors:
            raise ValueError(f"tensor {name!r} defined twice")
        names.append(name)
        tensors[name] = t
    kernels = []
    for i in range(h["n_kernels"]):
        k = KERNEL.unpack(buf, h["kernels_offset"] + i * KERNEL.size)
        kernels.append(_string(buf, h, k["name_offset"], k["name_len"], f"kernel {i}"))
    features = _cstr(h["features"])
    return {"board": _cstr(h["board"]), "arch": _cstr(h["arch"]), "features": features.split(",") if features else [],
            "model_sha256": h["model_sha256"].hex(), "arena_bytes": h["arena_bytes"], "n_steps": h["n_steps"],
            "tensors": tensors, "kernels": kernels, "calls": _read_calls(buf, h, names, kernels),
            "sampler": _read_sampler(buf, h)}
