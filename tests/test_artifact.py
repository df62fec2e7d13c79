"""The artifact format: a hand-made plan round-trips exactly, the C header's layout matches the Python
structs, and broken files or plans are refused with a clear error."""

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from mpqdm.backend_tvm import artifact
from mpqdm.backend_tvm.artifact import HEADER, LAYOUT, TENSOR, read_artifact, write_artifact
from mpqdm.backend_tvm.plan import ACT, CONST, INPUT, OUTPUT, TIMESTEP, Arg, Plan, Tensor, plan_memory

INCLUDE = Path(__file__).resolve().parents[1] / "runtime" / "include"
N_STEPS = 3
META = dict(board="rpi5", arch="aarch64", features=["neon", "dotprod"], model_sha256="ab" * 32)
SAMPLER = dict(timesteps=[900, 500, 100], alphas_cumprod=np.float32([0.03, 0.5, 0.9]).tolist(),
               num_train_timesteps=1000, clip_sample=True, clip_range=1.0, final_alpha_cumprod=1.0)


def small_plan(seed: int = 0) -> Plan:
    """Constants of every dtype (one with a view), per-step parameters, arena tensors with a view, calls."""
    rng = np.random.default_rng(seed)
    plan = Plan(n_steps=N_STEPS, kernels={k: object() for k in ("quantize", "qconv", "add", "never_called")})
    u32 = rng.integers(0, 2**32, (2, 3), dtype=np.uint32)
    for t in [Tensor("w.f32", "float32", (4, 3, 3, 2), CONST, rng.standard_normal((4, 3, 3, 2))),
              Tensor("w.u8", "uint8", (5, 7), CONST, rng.integers(0, 256, (5, 7)), bits=3),
              Tensor("w.i32", "int32", (9,), CONST, rng.integers(-2**31, 2**31, 9)),
              Tensor("w.u32", "uint32", (2, 3), CONST, u32, bits=2),
              Tensor("w.u32.flat", "uint32", (6,), CONST, u32.reshape(6), alias_of="w.u32"),
              Tensor("step.scale", "float32", (N_STEPS,), CONST, rng.random(N_STEPS) + 0.1),
              Tensor("step.zero", "int32", (N_STEPS,), CONST, rng.integers(0, 16, N_STEPS)),
              Tensor("x", "float32", (1, 4, 4, 2), INPUT),
              Tensor("t", "float32", (1,), TIMESTEP),
              Tensor("h0", "uint8", (1, 4, 4, 5), ACT),
              Tensor("h0.tokens→", "uint8", (1, 16, 5), ACT, alias_of="h0"),
              Tensor("h1", "float32", (1, 4, 4, 2), ACT),
              Tensor("eps", "float32", (1, 4, 4, 2), OUTPUT)]:
        plan.add(t)
    plan.call("quantize", ["x", Arg("step.scale", True), Arg("step.zero", True), "h0"], op="conv_in.quantize")
    plan.call("qconv", ["h0.tokens→", "w.u8", "w.u32.flat", "w.f32", "h1"], op="conv_in")
    plan.call("add", ["h1", "t", "w.i32", "eps"])
    plan.call("qconv", ["h1", "w.u32", Arg("step.zero", True), "eps"], op="conv_out")
    plan_memory(plan)
    return plan


def header_field(buf: bytes, name: str) -> int:
    return HEADER.unpack(buf)[name]


def test_round_trip(tmp_path):
    plan = small_plan()
    path = tmp_path / "model.mpq"
    summary = write_artifact(path, plan, **META, sampler=SAMPLER)
    buf = path.read_bytes()
    assert summary == {"bytes": len(buf), "const_bytes": sum(t.nbytes for t in plan.by_kind(CONST)) - 24,
                       "tensors": len(plan.tensors), "calls": 4, "kernels": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.mpq"]
    art = read_artifact(path)
    assert (art["board"], art["arch"], art["features"], art["model_sha256"]) == \
        (META["board"], META["arch"], META["features"], META["model_sha256"])
    assert (art["arena_bytes"], art["n_steps"]) == (plan.arena_bytes, N_STEPS)
    assert list(art["tensors"]) == list(plan.tensors)
    data_offset = header_field(buf, "data_offset")
    for name, t in plan.tensors.items():
        r = art["tensors"][name]
        assert (r["dtype"], r["kind"], r["shape"], r["bits"], r["alias"], r["nbytes"]) == \
            (t.dtype, t.kind, t.shape, t.bits, t.alias_of, t.nbytes), name
        if t.kind == CONST:
            assert (data_offset + r["offset"]) % 64 == 0, name
            assert r["data"].dtype == t.data.dtype and r["data"].tobytes() == t.data.tobytes(), name
        else:
            assert r["offset"] == t.offset and r["data"] is None, name
    assert art["tensors"]["w.u32.flat"]["offset"] == art["tensors"]["w.u32"]["offset"]
    assert art["kernels"] == ["quantize", "qconv", "add"]
    assert art["calls"] == [
        {"kernel": c.kernel, "op": c.op, "args": [(a.tensor, a.step) for a in c.args]} for c in plan.calls]
    assert art["calls"][0]["args"][1] == ("step.scale", True)
    assert art["sampler"] == {**SAMPLER, "prediction_type": "epsilon"}


def test_layout_matches_c_header(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    lines = ['#include <stddef.h>', '#include <stdio.h>', '#include "mpq_artifact.h"', 'int main(void) {',
             '    printf("magic %s\\n", MPQ_ARTIFACT_MAGIC);']
    for s, lay in LAYOUT.items():
        lines.append(f'    printf("size {s} %zu\\n", sizeof({s}));')
        for f in lay["fields"]:
            lines.append(f'    printf("field {s}.{f} %zu %zu\\n", offsetof({s}, {f}), sizeof((({s} *)0)->{f}));')
    for c in artifact.C_CONSTANTS:
        lines.append(f'    printf("const {c} %ld\\n", (long){c});')
    (tmp_path / "layout.c").write_text("\n".join([*lines, "    return 0;", "}", ""]))
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE}",
                    str(tmp_path / "layout.c"), "-o", str(exe)], check=True, capture_output=True, text=True)
    out = [ln.split() for ln in subprocess.run([exe], check=True, capture_output=True, text=True).stdout.splitlines()]
    assert out[0] == ["magic", artifact.MAGIC.decode()]
    c_sizes = {w[1]: int(w[2]) for w in out if w[0] == "size"}
    c_fields = {w[1]: (int(w[2]), int(w[3])) for w in out if w[0] == "field"}
    c_consts = {w[1]: int(w[2]) for w in out if w[0] == "const"}
    assert c_sizes == {s: lay["size"] for s, lay in LAYOUT.items()}
    assert c_consts == artifact.C_CONSTANTS
    for s, lay in LAYOUT.items():
        offs = list(lay["fields"].values())
        for f, off, nxt in zip(lay["fields"], offs, [*offs[1:], lay["size"]], strict=True):
            assert c_fields[f"{s}.{f}"] == (off, nxt - off), f"{s}.{f}"     # no implicit padding either


@pytest.fixture
def good_file(tmp_path) -> Path:
    path = tmp_path / "good.mpq"
    write_artifact(path, small_plan(), **META, sampler=SAMPLER)
    return path


def corrupt(path: Path, edit, stamp: bool = True) -> Path:
    """path's bytes edited, with the checksum recomputed (so the edit reaches its own check) unless not stamp."""
    buf = bytearray(path.read_bytes())
    edit(buf)
    bad = path.with_name("bad.mpq")
    bad.write_bytes(artifact.with_checksum(bytes(buf)) if stamp else bytes(buf))
    return bad


def test_truncated(good_file):
    size = good_file.stat().st_size
    for cut in (0, 7, HEADER.size - 1, HEADER.size, size // 2, size - 1):
        bad = good_file.with_name("cut.mpq")
        bad.write_bytes(good_file.read_bytes()[:cut])
        with pytest.raises(ValueError, match="truncated"):
            read_artifact(bad)


def test_bad_magic_and_version(good_file):
    with pytest.raises(ValueError, match="magic"):
        read_artifact(corrupt(good_file, lambda b: b.__setitem__(slice(0, 8), b"NOTMPQDM")))
    version = LAYOUT["mpq_art_header"]["fields"]["version"]
    with pytest.raises(ValueError, match="version 1, this reader reads version 2: recompile"):
        read_artifact(corrupt(good_file, lambda b: struct.pack_into("<I", b, version, 1)))


def test_offsets_out_of_range(good_file):
    buf = good_file.read_bytes()
    entry = header_field(buf, "tensors_offset") + TENSOR.offsets["offset"]     # tensor 0 is CONST "w.f32"
    with pytest.raises(ValueError, match="'w.f32'.*outside the data section"):
        read_artifact(corrupt(good_file, lambda b: struct.pack_into("<Q", b, entry, len(buf))))
    calls = LAYOUT["mpq_art_header"]["fields"]["calls_offset"]
    with pytest.raises(ValueError, match="calls section .* outside the file"):
        read_artifact(corrupt(good_file, lambda b: struct.pack_into("<Q", b, calls, len(buf) - 8)))


@pytest.mark.parametrize("break_plan, message", [
    (lambda p: p.call("add", [Arg("w.i32", True), "eps"]), "step-indexed argument 'w.i32'"),
    (lambda p: p.call("add", [Arg("h1", True), "eps"]), "step-indexed argument 'h1'"),
    (lambda p: setattr(p, "n_steps", 4), "n_steps"),
    (lambda p: setattr(p.tensors["h1"], "offset", p.arena_bytes), "'h1': arena region"),
])
def test_writer_refuses_and_leaves_nothing(tmp_path, break_plan, message):
    plan = small_plan()
    break_plan(plan)
    with pytest.raises(ValueError, match=message):
        write_artifact(tmp_path / "model.mpq", plan, **META, sampler=SAMPLER)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.mpq"
    path.write_bytes(b"old")

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(artifact.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_artifact(path, small_plan(), **META, sampler=SAMPLER)
    assert [p.name for p in tmp_path.iterdir()] == ["model.mpq"] and path.read_bytes() == b"old"


@pytest.mark.parametrize("change, message", [
    ({"arch": "riscv64"}, "arch"),
    ({"board": "b" * 32}, "board"),
    ({"features": ["neon,dotprod"]}, "features"),
    ({"model_sha256": "xyz"}, "model_sha256"),
    ({"sampler": {**SAMPLER, "timesteps": [100, 500, 900]}}, "descend"),
    ({"sampler": {**SAMPLER, "alphas_cumprod": [0.5]}}, "alphas_cumprod"),
])
def test_writer_refuses_bad_metadata(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        write_artifact(tmp_path / "model.mpq", small_plan(), **{**META, "sampler": SAMPLER, **change})
    assert list(tmp_path.iterdir()) == []


def test_checksum_is_zlib_crc32_with_the_field_as_zero(good_file):
    buf = good_file.read_bytes()
    at = LAYOUT["mpq_art_header"]["fields"]["checksum"]
    assert zlib.crc32(b"123456789") == 0xCBF43926          # the vector test_loader.c checks in C
    assert header_field(buf, "checksum") == zlib.crc32(buf[:at] + b"\0\0\0\0" + buf[at + 4:]) == artifact.checksum(buf)
    assert artifact.with_checksum(buf) == buf


@pytest.mark.parametrize("where", ["data", "calls", "checksum"])
def test_checksum_mismatch_is_refused(good_file, where):
    buf = good_file.read_bytes()
    at = {"data": header_field(buf, "data_offset") + 3, "calls": header_field(buf, "calls_offset"),
          "checksum": LAYOUT["mpq_art_header"]["fields"]["checksum"]}[where]
    with pytest.raises(ValueError, match=r"checksum mismatch: the file is corrupted \(stored 0x[0-9a-f]{8}, computed "
                                         r"0x[0-9a-f]{8}\); recompile it with mpqdm compile"):
        read_artifact(corrupt(good_file, lambda b: b.__setitem__(at, b[at] ^ 0x10), stamp=False))


@pytest.mark.parametrize("field", ["flags", "reserved"])
def test_reserved_fields_must_be_zero(good_file, field):
    at = LAYOUT["mpq_art_header"]["fields"][field]
    with pytest.raises(ValueError, match=f"reserved header field {field} is 0x4, expected 0"):
        read_artifact(corrupt(good_file, lambda b: struct.pack_into("<I", b, at, 4)))


@pytest.mark.parametrize("board", [b"", b"rpi 5", b"rpi5\0x", b"r\xc3\xa9pi"])
def test_reader_refuses_bad_board_names(good_file, board):
    at = LAYOUT["mpq_art_header"]["fields"]["board"]
    with pytest.raises(ValueError, match="bad board name"):
        read_artifact(corrupt(good_file, lambda b: b.__setitem__(slice(at, at + 32), board.ljust(32, b"\0"))))


@pytest.mark.parametrize("board", ["", "rpi 5", "a/b", "pi\n", "é", "b" * 31 + "c"])
def test_writer_refuses_bad_board_names(tmp_path, board):
    with pytest.raises(ValueError, match=r"board must be a name of 1 to 31 characters of \[A-Za-z0-9._-\]"):
        write_artifact(tmp_path / "model.mpq", small_plan(), **{**META, "board": board}, sampler=SAMPLER)
    assert list(tmp_path.iterdir()) == []
