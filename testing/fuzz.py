"""Fuzzing the C runtime's artifact loader (runtime/tests/fuzz_loader.c) with libFuzzer.

Shared by benchmarks/fuzz_loader.py (long runs, results file), tests/test_runtime_loader.py (a
short run, and the synthetic artifacts the tests corrupt) and testing/loader_data.py. No TVM: the
synthetic plans are written by hand and their kernels exist only as names.

Needs clang with its sanitizer and libFuzzer runtimes (Debian: clang libclang-rt-14-dev, installed by
scripts/install.sh); the build is `make -C runtime fuzz`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from mpqdm.backend_tvm.artifact import HEADER, LAYOUT, write_artifact
from mpqdm.backend_tvm.build import make
from mpqdm.backend_tvm.plan import ACT, CONST, INPUT, OUTPUT, TIMESTEP, Arg, Plan, Tensor, plan_memory
from mpqdm.core.errors import UserError

SYNTHETIC_KERNELS = ("fuzz_quantize", "fuzz_conv", "fuzz_add")
# arch x86_64 and no features: mpq_check_cpu passes on the x86-64 build machines
SYNTHETIC_META = dict(board="host", arch="x86_64", features=[], model_sha256="5a" * 32)
CRASH_PREFIXES = ("crash-", "leak-", "timeout-", "oom-")
INSTALL_HINT = "run scripts/install.sh (apt: clang libclang-rt-14-dev libfuzzer-14-dev)"


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
    """Three valid synthetic artifacts (1, 2 and 3 steps) and a few broken ones into dir_."""
    d = Path(dir_)
    d.mkdir(parents=True, exist_ok=True)
    valid = [write_synthetic(d / f"valid_{n}steps.mpq", n_steps=n, seed=n) for n in (1, 2, 3)]
    buf = valid[1].read_bytes()
    head = LAYOUT["mpq_art_header"]["fields"]
    rng = np.random.default_rng(0)
    broken = {"truncated_header": buf[:HEADER.size // 2], "truncated_half": buf[:len(buf) // 2],
              "version2": _patched(buf, head["version"], (2).to_bytes(4, "little"))}
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

def build_fuzzer(out_dir: Path) -> Path:
    """out_dir/fuzz_loader (`make -C runtime fuzz`: rebuilt when a source or header is newer). Raises
    FuzzToolMissing without clang or its runtimes, UserError when the build fails otherwise."""
    out_dir = Path(out_dir).resolve()
    exe = out_dir / "fuzz_loader"
    if shutil.which("clang") is None:
        raise FuzzToolMissing(f"clang is not installed: {INSTALL_HINT}")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        make("fuzz", "the fuzzer", build=out_dir / ".build", out=exe)
    except UserError as exc:
        if re.search(r"cannot find .*(libclang_rt|libFuzzer)", str(exc)):
            raise FuzzToolMissing(f"clang's sanitizer/libFuzzer runtimes are missing: {INSTALL_HINT}\n"
                                  f"{str(exc)[-2000:]}") from None
        raise
    return exe


def _stat(log: str, name: str) -> float | None:
    m = re.search(rf"^stat::{name}:\s*([0-9.]+)", log, re.M)
    return float(m[1]) if m else None


def run_fuzzer(exe: Path, corpus: Path, seconds: int, artifacts: Path | None = None) -> dict:
    """Fuzz for `seconds` from (and into) the corpus folder; crash reproducers go to `artifacts` (default:
    corpus/../fuzz_artifacts). Returns the run's numbers, libFuzzer's return code and the log's tail."""
    corpus = Path(corpus)
    artifacts = Path(artifacts) if artifacts else corpus.parent / "fuzz_artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    largest = max((p.stat().st_size for p in corpus.iterdir()), default=0)
    cmd = [str(exe), f"-max_total_time={seconds}", "-print_final_stats=1", f"-artifact_prefix={artifacts}/",
           "-timeout=20", "-rss_limit_mb=2048", f"-max_len={max(4096, 2 * largest)}", str(corpus)]
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 120)
    log = r.stdout + r.stderr
    found = sorted(p.name for p in artifacts.iterdir() if p.name.startswith(CRASH_PREFIXES))
    executions, per_sec = _stat(log, "number_of_executed_units"), _stat(log, "average_exec_per_sec")
    return {"seconds": seconds, "executions": int(executions or 0), "exec_per_sec": int(per_sec or 0),
            "crashes": len(found), "crash_files": found, "corpus_files": sum(1 for _ in corpus.iterdir()),
            "returncode": r.returncode, "command": " ".join(cmd), "log_tail": log[-4000:]}
