"""Fuzzing the C runtime's artifact loader (runtime/tests/fuzz_loader.c) with libFuzzer.

Shared by benchmarks/fuzz_loader.py (long runs, results file), tests/test_runtime_loader.py (a
short run, and the synthetic artifacts the tests corrupt) and mpqdm/testing/loader_data.py. No TVM: the
synthetic plans are written by hand and their kernels exist only as names.

Needs clang with its sanitizer and libFuzzer runtimes (Debian: clang libclang-rt-14-dev, installed by
scripts/install.sh); the build is `make -C runtime fuzz`.

A run also shows that the loader's arena-allocation failure branch was reached. The harness counts how
its opens ended ("fuzz_loader: outcomes: ... arena_alloc_failed=N"), and alloc_failure_coverage replays
the corpus the run left through a build with clang's source-based coverage (`make -C runtime fuzz
FUZZ_COVERAGE=1`, llvm-profdata, llvm-cov) and reads the execution count of the branch's line in
runtime/src/mpq_load.c (the statement after the comment holding ALLOC_MARK). libFuzzer's own
-print_coverage=1 is no proof here: at -O1 it files that branch's edge under another line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from mpqdm.backend_tvm.artifact import HEADER, LAYOUT, with_checksum, write_artifact
from mpqdm.backend_tvm.build import make
from mpqdm.backend_tvm.plan import ACT, CONST, INPUT, OUTPUT, TIMESTEP, Arg, Plan, Tensor, plan_memory
from mpqdm.core.errors import UserError
from mpqdm.core.resources import RUNTIME

SYNTHETIC_KERNELS = ("fuzz_quantize", "fuzz_conv", "fuzz_add")
# arch x86_64 and no features: mpq_check_cpu passes on the x86-64 build machines
SYNTHETIC_META = dict(board="host", arch="x86_64", features=[], model_sha256="5a" * 32)
CRASH_PREFIXES = ("crash-", "leak-", "timeout-", "oom-")
INSTALL_HINT = "run scripts/install.sh (apt: clang libclang-rt-14-dev libfuzzer-14-dev)"
LOADER_SOURCE = RUNTIME / "src" / "mpq_load.c"
ALLOC_MARK = "MPQ-FUZZ-ALLOC-FAILURE"          # on the line of the arena-allocation failure's branch
FUZZ_ARENA_FAIL_ABOVE = 16 << 20                 # runtime/Makefile's default for the fuzz build
REPO = RUNTIME.parent


class FuzzToolMissing(RuntimeError):
    """clang or its sanitizer/libFuzzer runtimes are not installed."""


# ---- synthetic artifacts -------------------------------------------------------------------------------

def synthetic_plan(n_steps: int = 2, seed: int = 0) -> Plan:
    """INPUT x [1,4,4,1] float32, TIMESTEP, CONST weights (one with a view), per-step CONSTs, an ACT with
    a view, OUTPUT [1,4,4,1]; three kernels, four calls, step-indexed arguments."""
    rng = np.random.default_rng(seed)
    plan = Plan(n_steps=n_steps, kernels={k: object() for k in SYNTHETIC_KERNELS})
    for t in [Tensor("w", "uint8", (4, 3), CONST, rng.integers(0, 256, (4, 3)), bits=2),
              Tensor("w.flat", "uint8", (12,), CONST, np.zeros(12), alias_of="w"),
              Tensor("bias", "float32", (1,), CONST, rng.standard_normal(1)),
              Tensor("step.scale", "float32", (n_steps,), CONST, rng.random(n_steps) + 0.1),
              Tensor("step.zero", "int32", (n_steps,), CONST, rng.integers(0, 16, n_steps)),
              Tensor("x", "float32", (1, 4, 4, 1), INPUT),
              Tensor("t", "float32", (1,), TIMESTEP),
              Tensor("h", "uint8", (1, 4, 4, 1), ACT),
              Tensor("h.tokens", "uint8", (1, 16, 1), ACT, alias_of="h"),
              Tensor("y", "float32", (1, 4, 4, 1), ACT),
              Tensor("eps", "float32", (1, 4, 4, 1), OUTPUT)]:
        plan.add(t)
    plan.call("fuzz_quantize", ["x", Arg("step.scale", True), Arg("step.zero", True), "h"], op="in.quantize")
    plan.call("fuzz_conv", ["h.tokens", "w.flat", Arg("step.zero", True), "y"], op="conv")
    plan.call("fuzz_add", ["y", "t", "bias", "eps"], op="out.add")
    plan.call("fuzz_conv", ["h", "w", Arg("step.scale", True), "eps"], op="conv_out")
    plan_memory(plan)
    return plan


def synthetic_sampler(n_steps: int) -> dict:
    ts = np.linspace(900, 100, n_steps).astype(int).tolist() if n_steps > 1 else [500]
    alphas = np.linspace(0.05, 0.9, n_steps, dtype=np.float32).tolist()
    return dict(timesteps=ts, alphas_cumprod=alphas, num_train_timesteps=1000, clip_sample=True, clip_range=1.0,
                final_alpha_cumprod=1.0)


def write_synthetic(path: Path, n_steps: int = 2, seed: int = 0) -> Path:
    write_artifact(path, synthetic_plan(n_steps, seed), **SYNTHETIC_META, sampler=synthetic_sampler(n_steps))
    return Path(path)


def seed_corpus(dir_: Path) -> list[Path]:
    """Three valid synthetic artifacts (1, 2 and 3 steps), a few broken ones and two whose arenas are too big
    (above the fuzz build's allocation limit, and above the harness's small arena limit) into dir_."""
    d = Path(dir_)
    d.mkdir(parents=True, exist_ok=True)
    valid = [write_synthetic(d / f"valid_{n}steps.mpq", n_steps=n, seed=n) for n in (1, 2, 3)]
    buf = valid[1].read_bytes()
    head = LAYOUT["mpq_art_header"]["fields"]
    rng = np.random.default_rng(0)
    def arena(n: int) -> bytes:
        return with_checksum(_patched(buf, head["arena_bytes"], n.to_bytes(8, "little")))

    broken = {"truncated_header": buf[:HEADER.size // 2], "truncated_half": buf[:len(buf) // 2],
              "version1": _patched(buf, head["version"], (1).to_bytes(4, "little")),
              "arena_alloc_fails": arena(FUZZ_ARENA_FAIL_ABOVE + 64), "arena_above_limit": arena(8192)}
    for i in range(3):
        flips = bytearray(buf)
        for at in rng.integers(0, len(buf), 4):
            flips[at] ^= 1 << int(rng.integers(0, 8))
        broken[f"flipped_{i}"] = bytes(flips)
    out = list(valid)
    for name, blob in broken.items():
        (d / f"{name}.mpq").write_bytes(blob)
        out.append(d / f"{name}.mpq")
    return out


def _patched(buf: bytes, at: int, raw: bytes) -> bytes:
    return buf[:at] + raw + buf[at + len(raw):]


# ---- building and running the fuzzer ---------------------------------------------------------------

def build_fuzzer(out_dir: Path, coverage: bool = False) -> Path:
    """out_dir/fuzz_loader (`make -C runtime fuzz`: rebuilt when a source or header is newer); with coverage,
    out_dir/fuzz_loader-cov, which also records source-based coverage. Raises FuzzToolMissing without clang
    or its runtimes, UserError when the build fails otherwise."""
    out_dir = Path(out_dir).resolve()
    exe = out_dir / ("fuzz_loader-cov" if coverage else "fuzz_loader")
    if shutil.which("clang") is None:
        raise FuzzToolMissing(f"clang is not installed: {INSTALL_HINT}")
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {"fuzz_coverage": 1} if coverage else {}
    try:
        make("fuzz", "the fuzzer", build=out_dir / (".build-cov" if coverage else ".build"), out=exe, **extra)
    except UserError as exc:
        if re.search(r"cannot find .*(libclang_rt|libFuzzer)", str(exc)):
            raise FuzzToolMissing(f"clang's sanitizer/libFuzzer runtimes are missing: {INSTALL_HINT}\n"
                                  f"{str(exc)[-2000:]}") from None
        raise
    return exe


def _stat(log: str, name: str) -> float | None:
    m = re.search(rf"^stat::{name}:\s*([0-9.]+)", log, re.M)
    return float(m[1]) if m else None


def relative(path: Path | str) -> str:
    """path relative to the repository root when it lies inside it (results files hold no machine paths)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def alloc_failure_line(source: Path = LOADER_SOURCE) -> int:
    """The line (1-based) of the loader's arena-allocation failure branch: the statement after the comment
    that holds ALLOC_MARK."""
    lines = Path(source).read_text().splitlines()
    mark = next((i for i, ln in enumerate(lines) if ALLOC_MARK in ln), None)
    if mark is None:
        raise RuntimeError(f"{source} has no line marked {ALLOC_MARK}")
    return mark + 2


def _tool(name: str) -> str:
    for candidate in (name, f"{name}-14", f"{name}-15", f"{name}-16"):
        if shutil.which(candidate):
            return candidate
    raise FuzzToolMissing(f"{name} is not installed: {INSTALL_HINT} (apt: llvm)")


def _count(text: str) -> float:
    """llvm-cov show's execution count: 12, 1.2k, 3.4M, 5.6G."""
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get(text[-1], 1)
    return float(text.rstrip("kMG")) * scale


def line_counts(cov_exe: Path, corpus: Path, work: Path, source: Path = LOADER_SOURCE) -> dict[int, int]:
    """Execution count of each line of `source` when cov_exe (build_fuzzer(coverage=True)) runs every file of
    `corpus` once (-runs=0); lines without code are absent."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    raw, data = work / "fuzz.profraw", work / "fuzz.profdata"
    env = {**os.environ, "LLVM_PROFILE_FILE": str(raw), "ASAN_OPTIONS": "detect_leaks=1"}
    r = subprocess.run([str(cov_exe), "-runs=0", str(corpus)], capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0 or not raw.is_file():
        raise RuntimeError(f"the coverage replay failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    subprocess.run([_tool("llvm-profdata"), "merge", "-sparse", "-o", str(data), str(raw)], check=True,
                   capture_output=True, text=True)
    shown = subprocess.run([_tool("llvm-cov"), "show", str(cov_exe), f"-instr-profile={data}", str(source)],
                           check=True, capture_output=True, text=True).stdout
    counts = {}
    for m in re.finditer(r"^\s*(\d+)\|\s*([0-9.]+[kMG]?)\|", shown, re.M):
        counts[int(m[1])] = int(_count(m[2]))
    return counts


def alloc_failure_coverage(cov_exe: Path, corpus: Path, work: Path) -> dict:
    """How often replaying `corpus` runs the loader's arena-allocation failure branch (source-based coverage)."""
    line = alloc_failure_line()
    counts = line_counts(cov_exe, corpus, work)
    if not counts:
        raise RuntimeError(f"llvm-cov reported no line of {LOADER_SOURCE}")
    return {"alloc_failure_line": f"{relative(LOADER_SOURCE)}:{line}", "alloc_failure_runs": counts.get(line, 0)}


def outcomes(log: str) -> dict[str, int]:
    """The harness's count of how the opens ended (the last "fuzz_loader: outcomes:" line)."""
    found = re.findall(r"^fuzz_loader: outcomes:(.*)$", log, re.M)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found[-1])} if found else {}


def run_fuzzer(exe: Path, corpus: Path, seconds: int, artifacts: Path | None = None) -> dict:
    """Fuzz for `seconds` from (and into) the corpus folder; crash reproducers go to `artifacts` (default:
    corpus/../fuzz_artifacts). Returns the run's numbers, the harness's outcome counts, libFuzzer's return
    code, the command (paths relative to the repository root) and the log's tail."""
    corpus = Path(corpus)
    artifacts = Path(artifacts) if artifacts else corpus.parent / "fuzz_artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    largest = max((p.stat().st_size for p in corpus.iterdir()), default=0)
    flags = [f"-max_total_time={seconds}", "-print_final_stats=1"]
    limits = ["-timeout=20", "-rss_limit_mb=2048", f"-max_len={max(4096, 2 * largest)}"]
    cmd = [str(exe), *flags, f"-artifact_prefix={artifacts}/", *limits, str(corpus)]
    shown = [relative(exe), *flags, f"-artifact_prefix={relative(artifacts)}/", *limits, relative(corpus)]
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 120)
    log = r.stdout + r.stderr
    found = sorted(p.name for p in artifacts.iterdir() if p.name.startswith(CRASH_PREFIXES))
    executions, per_sec = _stat(log, "number_of_executed_units"), _stat(log, "average_exec_per_sec")
    return {"seconds": seconds, "executions": int(executions or 0), "exec_per_sec": int(per_sec or 0),
            "crashes": len(found), "crash_files": found, "corpus_files": sum(1 for _ in corpus.iterdir()),
            "outcomes": outcomes(log), "returncode": r.returncode, "command": " ".join(shown),
            "log_tail": log[-4000:]}
