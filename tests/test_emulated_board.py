"""Emulated Raspberry Pis in TVM's RPC farm: an aarch64 python3.11 with TVM under qemu-aarch64 (Pi 5: cortex-a76,
Pi 4: cortex-a72) joins a tracker on 127.0.0.1 like a board; a qconv kernel cross-built for the board is uploaded,
loaded and run there through remote tensors, and matches the NumPy integer reference. Slow: the ~200 MB sysroot
(scripts/arm_sysroot.sh, run here, a no-op once built) and minutes of emulated TVM imports."""

import subprocess
import time

import numpy as np
import pytest

from mpqdm.backend_tvm.kernels.qconv_schedule import schedule_qconv
from mpqdm.backend_tvm.tvm_compat import cc, target, tvm
from mpqdm.boards.registry import load_board
from mpqdm.core.scheme import ConvSpec, QConvArgs, weight_constants
from mpqdm.testing import emulated, farm
from mpqdm.testing.reference import qconv_int

pytestmark = pytest.mark.slow

SPEC = ConvSpec(1, 5, 7, 24, 40, 3, 3, 1, 1, ((40, 2),), 4)     # odd sizes, W2A4
DOT_OPS = ("sdot", "udot", "usdot")
# the emulated CPU's AT_HWCAP has bit 20 (ASIMDDP, the dot product) on the Pi 5 and not on the Pi 4
HAS_DOT = ("import struct; a = dict(struct.iter_unpack('<QQ', open('/proc/self/auxv', 'rb').read())); "
           "print(bool(a[16] & 1 << 20))")


@pytest.fixture(scope="module")
def tracker_port():
    emulated.build_sysroot()
    proc, port = farm.start_tracker()
    yield port
    farm.stop(proc)


def layer(spec: ConvSpec, rng):
    """Random arguments (shuffled channels, zero points, steps, bias) and the integer reference."""
    (c, b), = spec.groups
    rows = rng.integers(0, 1 << b, size=(c, spec.k), dtype=np.uint8)
    order = rng.permutation(c)
    za = int(rng.integers(0, 1 << spec.abits))
    wc = weight_constants(spec, rows, order, rng.uniform(0.01, 0.1, c), rng.integers(0, 1 << b, size=c))
    args = QConvArgs(x=rng.integers(0, 1 << spec.abits, size=(spec.n, spec.h, spec.w, spec.c_in), dtype=np.uint8),
                     **wc, bias=rng.normal(size=c).astype(np.float32), act=np.array([0.05], np.float32),
                     az=np.array([za], np.int32), y=np.zeros((spec.n, spec.ho, spec.wo, c), np.float32))
    ref = qconv_int(args.x, rows, order, args.zw, za, spec.kh, spec.kw, spec.stride, spec.pad)
    return args, ref


def export(spec: ConvSpec, board, path):
    """The integer-accumulator kernel `qconv_acc` and the float one `qconv` for the board, one shared library."""
    mod = schedule_qconv(spec, board, with_epilogue=False, name="qconv_acc")
    mod.update(schedule_qconv(spec, board, name="qconv"))
    ex = tvm.compile(mod, target=target(board.tvm_target_dict()))
    ex.export_library(str(path), fcompile=cc.cross_compiler(board.cc))
    return path


@pytest.mark.parametrize("name", ["rpi5", "rpi4"])
def test_kernel_runs_on_an_emulated_board(name, tracker_port, tmp_path):
    board = load_board(name)
    key = f"{name}-emu"
    lib = export(SPEC, board, tmp_path / "qconv.so")
    dis = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(lib)], capture_output=True, text=True,
                         check=True).stdout
    assert any(f"\t{op}\t" in dis for op in DOT_OPS) == (name == "rpi5")   # the Pi 4 has no dot product
    args, ref = layer(SPEC, np.random.default_rng(5))
    python = emulated.python_wrapper(emulated.SYSROOT, board.qemu_cpu)
    has_dot = subprocess.run([str(python), "-c", HAS_DOT], capture_output=True, text=True, check=True).stdout
    assert has_dot.strip() == str(name == "rpi5")

    t0 = time.monotonic()
    server = emulated.start_emulated_server(tracker_port, key, board.qemu_cpu)
    try:
        registered = time.monotonic() - t0
        remote = tvm.rpc.connect_tracker("127.0.0.1", tracker_port).request(key, session_timeout=600)
        t0 = time.monotonic()
        remote.upload(str(lib))
        mod = remote.load_module("qconv.so")
        loaded = time.monotonic() - t0
        dev = remote.cpu()
        targs = [tvm.runtime.tensor(a, dev) for a in args.ordered()]
        acc = tvm.runtime.tensor(np.zeros(args.y.shape, np.int32), dev)
        t0 = time.monotonic()
        mod["qconv_acc"](*targs[:-1], acc)
        mod["qconv"](*targs)
        ran = time.monotonic() - t0
        assert np.array_equal(acc.numpy().astype(np.int64), ref)
        want = ref * (args.act[0].astype(np.float64) * args.sw.astype(np.float64)) + args.bias
        np.testing.assert_allclose(targs[-1].numpy(), want, rtol=2e-6, atol=2e-6)
        print(f"\n{name} ({board.qemu_cpu}): registered in {registered:.1f} s, upload + load {loaded:.2f} s, "
              f"two kernel calls {ran:.2f} s")

        farm.stop(server)                 # the board goes away: the session's next call fails, quickly
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as err:
            mod["qconv"](*targs)
        print(f"after the kill: {err.type.__name__} in {time.monotonic() - t0:.2f} s: {str(err.value)[:300]}")
        assert time.monotonic() - t0 < 10
    finally:
        farm.stop(server)


def test_profile_and_bench_through_an_emulated_pi5(tracker_port, tiny_unet_dir, tmp_path):
    """`mpqdm profile --board rpi5 --tracker` on an emulated Pi 5: a table of the same call kinds as a
    local run, its entries marked emulated (so the allocator refuses a latency budget on it); the whole
    tiny model runs there through the bench module."""
    from mpqdm.allocator.allocate import latency_table
    from mpqdm.allocator.ilp import Budgets
    from mpqdm.backend_tvm.board_bench import bench
    from mpqdm.backend_tvm.build import build
    from mpqdm.backend_tvm.compile import compile_export
    from mpqdm.backend_tvm.profile import profile
    from mpqdm.core.errors import UserError
    from mpqdm.core.latency import LatencyTable
    from mpqdm.testing.fixtures import tiny_export

    small = {"wbits": (2,), "abits": (4,), "repeats": 1, "min_repeat_ms": 0, "progress": False, "passes": 1}
    server = emulated.start_emulated_server(tracker_port, "rpi5-emu", "cortex-a76")
    try:
        info = profile(tiny_unet_dir, "rpi5", table_path=tmp_path / "rpi5.json", tracker=f"127.0.0.1:{tracker_port}",
                       key="rpi5-emu", **small)
        compiled = tmp_path / "compiled"
        compile_export(tiny_export(tiny_unet_dir, tmp_path / "export"), "rpi5", compiled, progress=False)
        build(compiled, "rpi5")
        r = bench(compiled, "rpi5", tracker=f"127.0.0.1:{tracker_port}", key="rpi5-emu", threads=2, count=1)
    finally:
        farm.stop(server)
    profile(tiny_unet_dir, "host", table_path=tmp_path / "host.json", **small)
    arm, host = LatencyTable.load(tmp_path / "rpi5.json", "rpi5"), LatencyTable.load(tmp_path / "host.json")
    assert {k[:4] + k[5:] for k in arm.entries} == {k[:4] + k[5:] for k in host.entries}    # threads aside
    assert info["entries"] == len(arm.entries) and arm.emulated
    assert all(e["cpu"] == "Cortex-A76" and e["key"] == "rpi5-emu" for e in arm.entries.values())
    with pytest.raises(UserError, match="emulated board"):
        latency_table(load_board("rpi5"), tmp_path / "rpi5.json", Budgets(latency_ms=10.0))
    assert r["emulated"] and r["cpu"] == "Cortex-A76" and r["ms_per_step"] > 0
    assert len(r["calls"]) == len(r["ms_by_kind"]) or sum(r["ms_by_kind"].values()) > 0
