"""The C runtime (mpqdm-run) on the tiny model: host (static, dynamic, ASan+UBSan) and the Pis
under qemu, against the Python executor, the integer reference and the PyTorch fake-quant run; the
real artifact with every header byte flipped, and samples of its data and call table, refused."""

import subprocess

import numpy as np
import pytest
import tvm

from mpqdm.backend_tvm.artifact import CALL, HEADER, LAYOUT
from mpqdm.backend_tvm.build import build
from mpqdm.backend_tvm.compile import compile_export
from mpqdm.backend_tvm.lower import lower_export
from mpqdm.boards.registry import load_board
from mpqdm.testing.executor import Executor
from mpqdm.testing.runtime_check import fake_quant_samples, psnr, run_binary


@pytest.fixture(scope="module")
def host_dir(tiny_omq_export, tmp_path_factory):
    d = tmp_path_factory.mktemp("rt") / "host"
    compile_export(tiny_omq_export, "host", d)
    build(d, "host", sanitize=True)
    return d


def noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 32, 32, 1)).astype(np.float32)


def test_unet_call_equals_the_python_executor(tiny_omq_export, host_dir, tmp_path):
    plan, low = lower_export(tiny_omq_export, load_board("host"))
    ex = Executor(plan, tvm.runtime.load_module(str(host_dir / "kernels.so")))
    x = noise(2)
    for exe in ("mpqdm-run", "mpqdm-run-dyn"):
        for step in (0, plan.n_steps - 1):
            got = run_binary([str(host_dir / exe)], host_dir / "model.mpq", x, tmp_path / f"{exe}{step}",
                             "--unet-step", str(step), "--threads", "2")
            for i in range(2):
                want = ex.run(x[i: i + 1], float(low.schedule.timesteps[step]), step)
                assert np.array_equal(got[i: i + 1], want), (exe, step, i)


def test_sampling_matches_the_fake_quant_run(tiny_omq_export, host_dir, tmp_path):
    x = noise(4, seed=1)
    got = run_binary([str(host_dir / "mpqdm-run")], host_dir / "model.mpq", x, tmp_path / "s")
    want = fake_quant_samples(tiny_omq_export, x, 3)
    # the random tiny UNet cascades float-rounding code flips (test_export_intref.py): 34.8 dB here;
    # the 35 dB contract is held on the trained default model (test_runtime_default_slow.py)
    assert psnr(got, want) >= 30, psnr(got, want)
    assert len(list((tmp_path / "s").glob("sample_*.pgm"))) == 4


def test_sanitizer_build_runs_clean(host_dir, tmp_path):
    x = noise(1, seed=2)
    want = run_binary([str(host_dir / "mpqdm-run")], host_dir / "model.mpq", x, tmp_path / "a")
    got = run_binary([str(host_dir / "mpqdm-run-asan")], host_dir / "model.mpq", x, tmp_path / "b",
                     "--threads", "2")
    assert np.array_equal(got, want)


@pytest.fixture(scope="module")
def pi_dirs(tiny_omq_export, tmp_path_factory):
    dirs = {}
    for b in ("rpi4", "rpi5"):
        d = tmp_path_factory.mktemp("rt") / b
        compile_export(tiny_omq_export, b, d)
        build(d, b)
        dirs[b] = d
    return dirs


@pytest.mark.parametrize("board", ["rpi4", "rpi5"])
def test_pi_builds_under_qemu_match_the_host(board, pi_dirs, host_dir, tmp_path):
    b = load_board(board)
    x = noise(1, seed=3)
    want = run_binary([str(host_dir / "mpqdm-run")], host_dir / "model.mpq", x, tmp_path / "h", "--unet-step", "1")
    got = run_binary(b.qemu_command(pi_dirs[board] / "mpqdm-run"), pi_dirs[board] / "model.mpq", x,
                     tmp_path / board, "--unet-step", "1", "--threads", "2")
    assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)


def test_a_pi5_build_refuses_a_pi4(pi_dirs, tmp_path):
    exe = pi_dirs["rpi5"] / "mpqdm-run"
    cmd = load_board("rpi4").qemu_command(exe)          # cortex-a72: no dot product
    np.zeros((1, 32, 32, 1), np.float32).tofile(tmp_path / "n.f32")
    r = subprocess.run([*cmd, str(pi_dirs["rpi5"] / "model.mpq"), "--noise", str(tmp_path / "n.f32"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "dotprod" in r.stderr and "rpi5" in r.stderr


def test_build_refuses_another_boards_folder(host_dir):
    from mpqdm.core.errors import UserError

    with pytest.raises(UserError, match="compiled for board 'host'"):
        build(host_dir, "rpi5")


SANITIZER_WORDS = ("AddressSanitizer", "LeakSanitizer", "runtime error")


def expected_refusal(at: int) -> str:
    """What the loader says first about a flipped byte at offset `at` of a valid artifact."""
    fields = LAYOUT["mpq_art_header"]["fields"]
    for field, message in (("magic", "wrong magic"), ("version", "artifact version"),
                           ("header_size", "header size"), ("file_size", "its header says")):
        width = 8 if field in ("magic", "file_size") else 4
        if fields[field] <= at < fields[field] + width:
            return message
    return "checksum mismatch: the file is corrupted"


def flipped_offsets(buf: bytes) -> dict[str, list[int]]:
    h = HEADER.unpack(buf)
    rng = np.random.default_rng(0)
    calls = range(h["calls_offset"], h["calls_offset"] + h["n_calls"] * CALL.size)
    return {"header": list(range(HEADER.size)),
            "data": sorted(rng.choice(range(h["data_offset"], len(buf)), 48, replace=False).tolist()),
            "calls": sorted(rng.choice(calls, 24, replace=False).tolist())}


@pytest.mark.parametrize("exe", ["mpqdm-run", "mpqdm-run-asan"])
def test_flipped_bytes_of_the_real_artifact_are_refused(host_dir, tmp_path, exe):
    """Every byte of the header, and a sample of the data section and the call table, flipped one at a time
    (all 8 bits): each file is refused with exit status 2 and one line naming it, never a signal or a
    sanitizer report; past the magic, version and sizes it is the checksum that refuses it."""
    buf = (host_dir / "model.mpq").read_bytes()
    bad, noise = tmp_path / "flipped.mpq", tmp_path / "noise.f32"
    np.zeros((1, 32, 32, 1), np.float32).tofile(noise)
    failures = []
    for region, offsets in flipped_offsets(buf).items():
        for at in offsets:
            blob = bytearray(buf)
            blob[at] ^= 0xFF
            bad.write_bytes(bytes(blob))
            r = subprocess.run([str(host_dir / exe), str(bad), "--unet-step", "0", "--noise", str(noise), "--out",
                                str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
            want = expected_refusal(at)
            lines = r.stderr.splitlines()
            if (r.returncode != 2 or len(lines) != 1 or not lines[0].startswith(f"mpqdm-run: {bad}: ")
                    or want not in lines[0] or any(w in r.stderr for w in SANITIZER_WORDS)):
                failures.append(f"{region} byte {at}: exit {r.returncode}, stderr {r.stderr[-300:]!r}, wanted {want!r}")
    assert failures == [], f"{len(failures)} flips not refused cleanly:\n" + "\n".join(failures[:20])
    assert not (tmp_path / "out").exists()
