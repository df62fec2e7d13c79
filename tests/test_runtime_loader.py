"""The C runtime's loader against bad input: a short libFuzzer run over the in-memory loader and executor,
and broken artifacts through the real mpqdm-run (plain and ASan+UBSan builds with do-nothing kernels),
which must refuse each with a clear message and never crash; a valid synthetic artifact runs clean."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mpqdm.backend_tvm.artifact import HEADER, LAYOUT, SAMPLER, read_artifact
from mpqdm.backend_tvm.build import kernel_table, make
from mpqdm.core.resources import RUNTIME
from mpqdm.testing import fuzz, loader_data

N_STEPS = 2
SANITIZER_WORDS = ("AddressSanitizer", "LeakSanitizer", "runtime error")


# ---- the C runtime's own tests (make -C runtime test) on the committed artifacts ----------------------

def test_committed_loader_data_is_what_the_writer_makes():
    cases = loader_data.cases()
    data = RUNTIME / "tests" / "data"
    remake = "remake: python -m mpqdm.testing.loader_data runtime/tests/data"
    assert (data / "cases.txt").read_text() == loader_data.manifest(cases), remake
    assert sorted(p.name for p in data.glob("*.mpq")) == sorted(name for name, _, _ in cases)
    for name, blob, _ in cases:
        assert (data / name).read_bytes() == blob, f"{name} differs; {remake}"


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_make_test_passes(cc, tmp_path):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not found; run scripts/install.sh")
    r = subprocess.run(["make", "-C", str(RUNTIME), "test", f"CC={cc}", f"BUILD={tmp_path}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    n = len(loader_data.cases())
    assert f"test_loader: {n} cases" in r.stdout and ", 0 failed" in r.stdout and "FAIL" not in r.stdout, r.stdout


# ---- the fuzzer ----------------------------------------------------------------------------------------

def test_fuzzer_runs_clean(tmp_path):
    try:
        exe = fuzz.build_fuzzer(tmp_path / "build")
    except fuzz.FuzzToolMissing as exc:
        pytest.skip(f"libFuzzer is not available ({exc}); run scripts/install.sh")
    corpus = tmp_path / "corpus"
    fuzz.seed_corpus(corpus)
    r = fuzz.run_fuzzer(exe, corpus, 20, artifacts=tmp_path / "found")
    assert r["returncode"] == 0 and r["crash_files"] == [], r["log_tail"]
    assert r["executions"] > 0 and r["corpus_files"] >= 9, r["log_tail"]


# ---- mpqdm-run on bad input ---------------------------------------------------------------------------

def noop_kernels_c(kernels: list[str]) -> str:
    """Do-nothing definitions of the kernels (what `mpqdm build` links in from kernels.o)."""
    body = [f"int __tvm_ffi_{k}(void *self, const mpq_ffi_any *args, int32_t n, mpq_ffi_any *result) {{\n"
            "    (void)self; (void)args; (void)n; (void)result;\n    return 0;\n}" for k in kernels]
    return '#include "mpq_runtime.h"\n\n' + "\n".join(body) + "\n"


def build_run(dir_: Path, sanitize: bool) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    kernels = list(fuzz.SYNTHETIC_KERNELS)
    (dir_ / "kernel_table.c").write_text(kernel_table(kernels))
    (dir_ / "noop_kernels.c").write_text(noop_kernels_c(kernels))
    exe = dir_ / ("mpqdm-run-asan" if sanitize else "mpqdm-run")
    make("run-asan" if sanitize else "run", "mpqdm-run", cc="gcc", build=dir_ / ".build",
         board_cflags="-fsanitize=float-cast-overflow -O1" if sanitize else "", kernels=dir_ / "noop_kernels.c",
         kernel_table=dir_ / "kernel_table.c", out=exe)
    return exe


@pytest.fixture(scope="module")
def binaries(tmp_path_factory) -> dict[str, Path]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found; run scripts/install.sh")
    d = tmp_path_factory.mktemp("run")
    return {"plain": build_run(d / "plain", False), "asan": build_run(d / "asan", True)}


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> Path:
    return fuzz.write_synthetic(tmp_path_factory.mktemp("art") / "valid.mpq", n_steps=N_STEPS)


def run(exe: Path, *args) -> subprocess.CompletedProcess:
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=60)
    assert r.returncode >= 0, f"killed by signal {-r.returncode}: {r.stderr}"
    assert not any(w in r.stderr for w in SANITIZER_WORDS), r.stderr
    return r


def field_at(buf: bytes, section: str, struct_name: str, i: int, field: str) -> int:
    """File offset of `field` of entry i of a table section (tensors, kernels, calls, args)."""
    lay = LAYOUT[struct_name]
    return HEADER.unpack(buf)[f"{section}_offset"] + i * lay["size"] + lay["fields"][field]


def head_at(field: str) -> int:
    return LAYOUT["mpq_art_header"]["fields"][field]


def tensor_index(path: Path, name: str) -> int:
    return list(read_artifact(path)["tensors"]).index(name)


def patch(buf: bytes, at: int, fmt: str, *values) -> bytes:
    out = bytearray(buf)
    struct.pack_into("<" + fmt, out, at, *values)
    return bytes(out)


def renamed_kernel(buf: bytes, path: Path) -> bytes:
    """Kernel 2 (fuzz_add) renamed fuzz_xyz in the string table: a kernel this binary does not have."""
    k = read_artifact(path)["kernels"].index("fuzz_add")
    h = HEADER.unpack(buf)
    at = h["strings_offset"] + struct.unpack_from("<I", buf, field_at(buf, "kernels", "mpq_art_kernel", k,
                                                                      "name_offset"))[0]
    assert buf[at:at + 8] == b"fuzz_add"
    return buf[:at] + b"fuzz_xyz" + buf[at + 8:]


def bad_cases(path: Path) -> dict[str, tuple[bytes, str]]:
    buf = path.read_bytes()
    h = HEADER.unpack(buf)
    w, x, y = (tensor_index(path, n) for n in ("w", "x", "y"))
    shape_w = field_at(buf, "tensors", "mpq_art_tensor", w, "shape")
    return {
        "cut_header": (buf[:HEADER.size // 2], "truncated"),
        "cut_tensor_table": (buf[:h["tensors_offset"] + 70], "truncated"),
        "cut_data": (buf[:h["data_offset"] + 10], "truncated"),
        "magic": (b"NOTMPQDM" + buf[8:], "magic"),
        "version2": (patch(buf, head_at("version"), "I", 2), "version 2"),
        "file_size": (patch(buf, head_at("file_size"), "Q", len(buf) + 64), "header says"),
        "section_outside": (patch(buf, head_at("calls_offset"), "Q", len(buf) - 8), "section lies outside"),
        "const_past_data": (patch(buf, field_at(buf, "tensors", "mpq_art_tensor", w, "offset"), "Q",
                                  h["data_bytes"] + 64), "outside the data section"),
        "act_past_arena": (patch(buf, field_at(buf, "tensors", "mpq_art_tensor", y, "offset"), "Q",
                                 h["arena_bytes"]), "outside the arena"),
        "shape_overflow": (patch(patch(buf, field_at(buf, "tensors", "mpq_art_tensor", w, "ndim"), "B", 4),
                                 shape_w, "4q", 2**40, 2**40, 1, 1), "bad shape"),
        "negative_dim": (patch(buf, field_at(buf, "tensors", "mpq_art_tensor", x, "shape"), "q", -1), "bad shape"),
        "arg_past_table": (patch(buf, field_at(buf, "args", "mpq_art_arg", 1, "tensor"), "I", h["n_tensors"]),
                           "bad argument"),
        "first_arg_past_table": (patch(buf, field_at(buf, "calls", "mpq_art_call", 2, "first_arg"), "I",
                                       h["n_args"] - 1), "argument range"),
        "kernel_missing": (renamed_kernel(buf, path), "missing"),
        "final_alpha": (patch(buf, h["sampler_offset"] + SAMPLER.offsets["final_alpha_cumprod"], "f", 2.0),
                        "final alpha_cumprod"),     # accepted before: NaN samples, NaN cast to int in the image
        "arch": (patch(buf, head_at("arch"), "16s", b"aarch64"), "this artifact is for aarch64"),
        # the first call's output (its 4th argument) made the mapped, read-only weights
        "writes_const": (patch(buf, field_at(buf, "args", "mpq_art_arg", 3, "tensor"), "I", w), "writes a constant"),
    }


CASES = ["cut_header", "cut_tensor_table", "cut_data", "magic", "version2", "file_size", "section_outside",
         "const_past_data", "act_past_arena", "shape_overflow", "negative_dim", "arg_past_table",
         "first_arg_past_table", "kernel_missing", "final_alpha", "arch", "writes_const"]


@pytest.mark.parametrize("build", ["plain", "asan"])
def test_bad_artifacts_are_refused(binaries, valid, tmp_path, build):
    cases = bad_cases(valid)
    assert sorted(cases) == sorted(CASES)
    noise = tmp_path / "noise.f32"
    np.zeros((1, 4, 4, 1), np.float32).tofile(noise)
    failures = []
    for name in CASES:
        blob, message = cases[name]
        bad = tmp_path / f"{name}.mpq"
        bad.write_bytes(blob)
        r = run(binaries[build], bad, "--unet-step", 0, "--noise", noise, "--out", tmp_path / "out")
        if r.returncode == 0 or message not in r.stderr:
            failures.append(f"{name}: exit {r.returncode}, stderr {r.stderr.strip()!r} (wanted {message!r})")
    r = run(binaries[build], tmp_path / "no_such.mpq", "--out", tmp_path / "out")
    if r.returncode == 0 or "cannot open" not in r.stderr:
        failures.append(f"nonexistent file: exit {r.returncode}, stderr {r.stderr.strip()!r}")
    assert failures == []


@pytest.mark.parametrize("build", ["plain", "asan"])
def test_valid_unet_step(binaries, valid, tmp_path, build):
    noise = tmp_path / "noise.f32"
    np.random.default_rng(0).standard_normal((1, 4, 4, 1)).astype(np.float32).tofile(noise)
    r = run(binaries[build], valid, "--unet-step", 0, "--noise", noise, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "eps.f32").stat().st_size == 4 * 4 * 4


def test_sanitizer_build_samples(binaries, valid, tmp_path):
    noise = tmp_path / "noise.f32"
    np.random.default_rng(1).standard_normal((2, 4, 4, 1)).astype(np.float32).tofile(noise)
    out = tmp_path / "out"
    r = run(binaries["asan"], valid, "--noise", noise, "--out", out)
    assert r.returncode == 0, r.stderr
    assert (out / "samples.f32").stat().st_size == 2 * 16 * 4
    assert sorted(p.name for p in out.glob("sample_*.pgm")) == ["sample_0000.pgm", "sample_0001.pgm"]
