"""The C runtime's loader against bad input: a short libFuzzer run over the in-memory loader and executor
(which must reach the arena-allocation failure branch), broken artifacts through the real mpqdm-run
(plain and ASan+UBSan builds with do-nothing kernels), which must refuse each with a one-line message,
exit status 2 and no crash; its command line (--help, option errors, exit codes, the board and the
memory limit); a valid synthetic artifact runs clean."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mpqdm.backend_tvm.artifact import HEADER, LAYOUT, SAMPLER, read_artifact, with_checksum
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
    assert sorted(p.name for p in data.glob("*.mpq")) == sorted(name for name, _, _, _ in cases)
    for name, blob, _, _ in cases:
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
    assert r["executions"] > 0 and r["corpus_files"] >= 11, r["log_tail"]
    # the whole open path: checksum refusals, and past the checksum the arena limit, the board and the
    # allocation failure (the fuzz build's MPQ_TEST_ARENA_FAIL_ABOVE hook) were all reached
    opens = r["outcomes"]
    assert all(opens.get(k, 0) > 0 for k in ("opened", "checksum_mismatch", "arena_alloc_failed",
                                              "arena_above_limit", "other_error")), opens


def test_fuzz_results_hold_no_machine_paths():
    assert fuzz.relative(fuzz.REPO / "out" / "fuzz" / "corpus") == "out/fuzz/corpus"
    assert fuzz.relative(str(fuzz.REPO / "out" / "fuzz" / "fuzz_loader")) == "out/fuzz/fuzz_loader"


def test_fuzz_corpus_runs_the_allocation_failure_branch(tmp_path):
    """Source-based coverage: replaying a corpus with an arena above the fuzz build's allocation limit runs
    the marked line in mpq_load.c; one without never does (so the count is a real proof)."""
    try:
        cov = fuzz.build_fuzzer(tmp_path / "build", coverage=True)
    except fuzz.FuzzToolMissing as exc:
        pytest.skip(f"libFuzzer or llvm-cov is not available ({exc}); run scripts/install.sh")
    corpus = tmp_path / "corpus"
    fuzz.seed_corpus(corpus)
    without = tmp_path / "without"
    without.mkdir()
    shutil.copy(corpus / "valid_2steps.mpq", without)
    assert fuzz.alloc_failure_coverage(cov, without, tmp_path / "w0")["alloc_failure_runs"] == 0
    got = fuzz.alloc_failure_coverage(cov, corpus, tmp_path / "w1")
    assert got["alloc_failure_runs"] >= 2 and got["alloc_failure_line"].startswith("runtime/src/mpq_load.c:"), got


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
    """buf with a field packed at `at` and its checksum recomputed, so that it reaches the field's own check."""
    out = bytearray(buf)
    struct.pack_into("<" + fmt, out, at, *values)
    return with_checksum(bytes(out))


def renamed_kernel(buf: bytes, path: Path) -> bytes:
    """Kernel 2 (fuzz_add) renamed fuzz_xyz in the string table: a kernel this binary does not have."""
    k = read_artifact(path)["kernels"].index("fuzz_add")
    h = HEADER.unpack(buf)
    at = h["strings_offset"] + struct.unpack_from("<I", buf, field_at(buf, "kernels", "mpq_art_kernel", k,
                                                                      "name_offset"))[0]
    assert buf[at:at + 8] == b"fuzz_add"
    return with_checksum(buf[:at] + b"fuzz_xyz" + buf[at + 8:])


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
        "version1": (patch(buf, head_at("version"), "I", 1), "version 1"),
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


CASES = ["cut_header", "cut_tensor_table", "cut_data", "magic", "version1", "file_size", "section_outside",
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
        status = 1 if name == "arch" else 2       # exit 1: this CPU cannot run it; 2: the input is refused
        if r.returncode != status or message not in r.stderr or len(r.stderr.splitlines()) != 1:
            failures.append(f"{name}: exit {r.returncode}, stderr {r.stderr.strip()!r} (wanted {message!r})")
    r = run(binaries[build], tmp_path / "no_such.mpq", "--out", tmp_path / "out")
    if r.returncode != 2 or "cannot open" not in r.stderr:
        failures.append(f"nonexistent file: exit {r.returncode}, stderr {r.stderr.strip()!r}")
    assert failures == []


@pytest.mark.parametrize("build", ["plain", "asan"])
def test_valid_unet_step(binaries, valid, tmp_path, build):
    noise = tmp_path / "noise.f32"
    np.random.default_rng(0).standard_normal((1, 4, 4, 1)).astype(np.float32).tofile(noise)
    r = run(binaries[build], valid, "--unet-step", 0, "--noise", noise, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "eps.f32").stat().st_size == 4 * 4 * 4
    assert r.stderr == f"mpqdm-run: wrote 1 UNet output at step 0 to {tmp_path / 'out'} (eps.f32)\n"


# ---- mpqdm-run's command line, its board and its memory limit --------------------------------------------

def test_help_lists_every_option_and_the_exit_codes(binaries):
    r = run(binaries["plain"], "--help")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    for word in ("usage: mpqdm-run MODEL", "--out DIR", "--count N", "--seed S", "--noise FILE", "--steps N",
                 "--unet-step S", "--threads T", "--max-memory-mb N", "--kernels LIB.so", "--bench", "-h, --help",
                 "for board host (24576 MiB", "exit status:", "  0  success", "  1  the run failed",
                 "  2  bad usage or input"):
        assert word in r.stdout, word
    assert run(binaries["plain"], "-h").stdout == r.stdout


@pytest.mark.parametrize("args, message", [
    (["--steps", "x"], "--steps 'x': expected an integer in 1..1000000"),
    (["--count", "0"], "--count '0': expected an integer in 1..1000000"),
    (["--seed", "-1"], "--seed '-1': expected an integer in 0..2147483647"),
    (["--unet-step", "1.5"], "--unet-step '1.5': expected an integer in 0..1000000"),
    (["--max-memory-mb", "0"], "--max-memory-mb '0': expected an integer in 1..1048576"),
    (["--threads", "0"], "--threads '0': expected an integer in 1..1000000"),
    (["--threads", str((os.cpu_count() or 1) + 1)], f"--threads {(os.cpu_count() or 1) + 1}: above the"),
    (["--frobnicate"], "unknown option '--frobnicate'"),
    (["--out"], "option --out needs a value"),
    (["--kernels", "k.so"], "--kernels 'k.so': this binary has its kernels linked in"),
    (["two.mpq"], "more than one MODEL given"),
    ([], None),
])
def test_option_errors_name_the_option_and_exit_2(binaries, valid, args, message):
    r = run(binaries["plain"], *([valid, *args] if message else args))
    assert r.returncode == 2, r.stderr
    assert (message or "MODEL is required") in r.stderr and "mpqdm-run --help" in r.stderr, r.stderr


@pytest.mark.parametrize("value, what", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_noise_must_be_finite(binaries, valid, tmp_path, value, what):
    x = np.zeros((2, 4, 4, 1), np.float32)
    x[1, 2, 3, 0] = value
    x.tofile(tmp_path / "noise.f32")
    r = run(binaries["plain"], valid, "--noise", tmp_path / "noise.f32", "--out", tmp_path / "out")
    assert r.returncode == 2 and f"value 11 (sample 1) is {what}; the noise must be finite" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_success_says_what_was_written(binaries, valid, tmp_path):
    out = tmp_path / "out"
    r = run(binaries["plain"], valid, "--count", 3, "--seed", 1, "--threads", 1, "--out", out)
    assert r.returncode == 0, r.stderr
    assert r.stderr == f"mpqdm-run: wrote 3 samples to {out} (sample_0000.pgm .. sample_0002.pgm, samples.f32)\n"
    assert r.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["sample_0000.pgm", "sample_0001.pgm", "sample_0002.pgm",
                                                     "samples.f32"]


@pytest.mark.parametrize("build", ["plain", "asan"])
def test_an_artifact_for_another_board_is_refused(binaries, valid, tmp_path, build):
    bad = tmp_path / "rpi5.mpq"
    bad.write_bytes(patch(valid.read_bytes(), head_at("board"), "32s", b"rpi5"))
    r = run(binaries[build], bad, "--out", tmp_path / "out")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "compiled for board 'rpi5', but this binary was built for board 'host'" in r.stderr
    assert "mpqdm build DIR --board rpi5" in r.stderr


def with_arena(valid: Path, tmp_path: Path, arena_bytes: int) -> Path:
    """The valid artifact asking for a bigger arena (its tensors still fit: they lie at its start)."""
    big = tmp_path / f"arena_{arena_bytes}.mpq"
    big.write_bytes(patch(valid.read_bytes(), head_at("arena_bytes"), "Q", arena_bytes))
    return big


@pytest.mark.parametrize("build", ["plain", "asan"])
def test_the_arena_is_checked_against_the_memory_limit_before_allocating(binaries, valid, tmp_path, build):
    # 2 TiB would not pass the format's range check; 1 TiB passes it and is far above the default limit (the
    # host profile's 24576 MiB): refused without trying to allocate it (an attempt would fail or be killed)
    r = run(binaries[build], with_arena(valid, tmp_path, 1 << 40), "--out", tmp_path / "out")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "the arena needs 1099511627776 bytes (1048576.0 MiB), above the memory limit of 25769803776 bytes " \
           "(24576.0 MiB): raise the limit (mpqdm-run --max-memory-mb)" in r.stderr
    four_mib = with_arena(valid, tmp_path, 4 << 20)
    r = run(binaries[build], four_mib, "--max-memory-mb", 3, "--out", tmp_path / "out")
    assert r.returncode == 2 and "above the memory limit of 3145728 bytes (3.0 MiB)" in r.stderr, r.stderr
    r = run(binaries[build], four_mib, "--max-memory-mb", 4, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr


def test_the_sanitizer_build_refuses_a_failed_arena_allocation_cleanly(binaries, valid, tmp_path):
    """ASan's allocator returns NULL for the 256 MiB arena (max_allocation_size_mb=128): the loader says so in
    one line, frees what it had allocated (LeakSanitizer is on) and mpqdm-run exits 2."""
    env = {**os.environ, "ASAN_OPTIONS": "allocator_may_return_null=1:max_allocation_size_mb=128:detect_leaks=1"}
    big = with_arena(valid, tmp_path, 256 << 20)
    r = subprocess.run([str(binaries["asan"]), str(big), "--max-memory-mb", "1024", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=60, env=env)
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("==")]   # ASan's "failed to allocate" notice
    assert r.returncode == 2, r.stderr
    assert lines == [f"mpqdm-run: {big}: cannot allocate the 268435456-byte arena "
                     "(256.0 MiB): free memory, or run it on a board with more"], r.stderr
    assert not any(w in r.stderr for w in ("ERROR: AddressSanitizer", "LeakSanitizer", "runtime error")), r.stderr


def test_sanitizer_build_samples(binaries, valid, tmp_path):
    noise = tmp_path / "noise.f32"
    np.random.default_rng(1).standard_normal((2, 4, 4, 1)).astype(np.float32).tofile(noise)
    out = tmp_path / "out"
    r = run(binaries["asan"], valid, "--noise", noise, "--out", out)
    assert r.returncode == 0, r.stderr
    assert (out / "samples.f32").stat().st_size == 2 * 16 * 4
    assert sorted(p.name for p in out.glob("sample_*.pgm")) == ["sample_0000.pgm", "sample_0001.pgm"]
