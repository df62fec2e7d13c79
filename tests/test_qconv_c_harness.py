"""The quantized kernels built for each board and run from C (no libtvm): natively on the host,
under qemu-aarch64 for the Raspberry Pi 4 (Cortex-A72) and 5 (Cortex-A76) builds."""

import subprocess
from dataclasses import replace

import numpy as np
import pytest

from mpqdm.backend_tvm.kernels.qconv_schedule import dot_intrins, schedule_qconv
from mpqdm.backend_tvm.tvm_compat import tvm
from mpqdm.boards.registry import load_board
from mpqdm.core.packing import pack_layer
from mpqdm.core.scheme import ConvSpec, random_args
from mpqdm.testing import harness
from mpqdm.testing.reference import qconv_int

from .test_qconv_kernel import random_layer

pytestmark = pytest.mark.usefixtures("parallel_small_layers")

FAST = [ConvSpec(1, 7, 5, 8, 24, 3, 3, 1, 1, ((8, 3), (16, 2)), 4),
        ConvSpec(1, 4, 12, 32, 24, 3, 3, 1, 1, ((8, 3), (16, 2)), 4)]      # an AMX group on a host that has it
SLOW = [ConvSpec(1, 9, 6, 8, 7, 3, 3, 2, 1, ((2, 1), (3, 5), (2, 7)), 4),
        ConvSpec(11, 1, 1, 24, 9, groups=((4, 8), (5, 4)), abits=8),
        ConvSpec(1, 5, 5, 16, 6, groups=((6, 6),), abits=8)]


def scheduled(spec: ConvSpec, board) -> tvm.IRModule:
    return schedule_qconv(spec, board, with_epilogue=False)   # parallel loops exercise our parallel launch


def check(board_name: str, spec: ConvSpec, tmp_path, seed: int) -> None:
    board = load_board(board_name)
    rng = np.random.default_rng(seed)
    rows, order, zw = random_layer(spec, rng)
    x = rng.integers(0, 1 << spec.abits, size=(spec.n, spec.h, spec.w, spec.c_in), dtype=np.uint8)
    za = int(rng.integers(0, 1 << spec.abits))
    w_orig = np.empty_like(rows)
    w_orig[order] = rows
    arrays = [x, pack_layer(rows, spec.groups).words, np.argsort(order).astype(np.int32),
              np.ones(spec.c_out, np.float32), zw, w_orig.astype(np.int64).sum(1).astype(np.int32),
              np.zeros(spec.c_out, np.float32), np.ones(1, np.float32), np.array([za], np.int32),
              np.zeros((spec.n, spec.ho, spec.wo, spec.c_out), np.int32)]
    obj = harness.compile_object(scheduled(spec, board), board, tmp_path / "k.o")
    if board_name in ("rpi4", "rpi5"):   # the Pi 4 build has no dot-product instruction, the Pi 5 build uses it
        dis = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(obj)], capture_output=True, text=True,
                             check=True).stdout
        assert any(f"\t{op}\t" in dis for op in ("sdot", "udot", "usdot")) == (board_name == "rpi5")
        if board_name == "rpi4" and dot_intrins(spec, board) is not None:   # the uint8 lane sums
            assert "\tuaddlp\t" in dis
    exe = harness.link([obj], board, "qconv", tmp_path / "harness")
    (y,) = harness.run(exe, board, arrays, {len(arrays) - 1}, tmp_path, threads=2)
    ref = qconv_int(x, rows, order, zw, za, spec.kh, spec.kw, spec.stride, spec.pad)
    assert np.array_equal(y.astype(np.int64), ref)


@pytest.mark.parametrize("board", ["host", "rpi4", "rpi5"])
def test_kernel_from_c_matches_reference(board, tmp_path):
    check(board, FAST[0], tmp_path, seed=11)


def test_amx_kernel_from_c_matches_reference(tmp_path):
    """The host's build from C (AMX tiles where the host has amx_int8: the runtime asks Linux for their state)."""
    check("host", FAST[1], tmp_path, seed=12)


def test_pi5_neon_path_beside_udot_matches_reference(tmp_path):
    """A Pi 5 layer with a group on the NEON path (profile times it beside udot) and one on udot, under qemu."""
    spec = replace(FAST[0], kernels=("neon", "udot"))
    assert [i for i, _ in dot_intrins(spec, load_board("rpi5"))] == ["mpq_dot8x8_neon", "mpq_dot8x4_udot"]
    check("rpi5", spec, tmp_path, seed=13)


@pytest.mark.slow
@pytest.mark.parametrize("board", ["host", "rpi4", "rpi5"])
@pytest.mark.parametrize("spec", SLOW, ids=lambda s: f"{s.kh}x{s.kw}-{s.groups}-a{s.abits}")
def test_kernel_from_c_matches_reference_all(board, spec, tmp_path):
    check(board, spec, tmp_path, seed=hash(spec) % 2**32)


# the Pi 4's uint8 lane sums (dot_intrin NEON): every quads-per-call, ragged channel tiles, odd c_in, stride 2
NEON_SPECS = [ConvSpec(1, 5, 6, 32, 19, 3, 3, 1, 1, ((11, 1), (8, 2)), 4),       # 8 and 4 quads a call
              ConvSpec(1, 7, 5, 5, 13, 3, 3, 2, 1, ((13, 4),), 4),                # 1 quad, c_in padded to 8
              ConvSpec(1, 6, 6, 24, 16, 3, 3, 1, 1, ((8, 3), (8, 2)), 4),         # 2 quads (W3A4), 2 (24 % 16)
              ConvSpec(9, 1, 1, 64, 20, groups=((20, 1),), abits=4),              # dense, W1A4: 8 quads
              ConvSpec(16, 1, 1, 32, 24, groups=((8, 3), (16, 2)), abits=4),     # dense in tiles of 8 rows
              ConvSpec(1, 9, 9, 64, 128, 3, 3, 1, 1, ((16, 3), (96, 2), (16, 1)), 4)]   # OMQ's split, 4 threads


@pytest.mark.parametrize("spec", NEON_SPECS, ids=lambda s: f"{s.kh}x{s.kw}s{s.stride}-{s.groups}-a{s.abits}")
def test_neon_uint8_lane_sums_match_reference_under_qemu(spec, tmp_path):
    from mpqdm.backend_tvm.kernels import dot_intrin

    assert all(i in dot_intrin.NEON.values() for i, _ in dot_intrins(spec, load_board("rpi4")))
    check("rpi4", spec, tmp_path, seed=hash(spec) % 2**32)


# the Pi 4's wide widths (u16 products): 4, 2 and 1 quads a call, ragged tiles, c_in padded, a dense
# layer, one output channel (conv_out), and a layer mixing both NEON paths
NEON16_SPECS = [ConvSpec(1, 6, 5, 32, 13, 3, 3, 1, 1, ((13, 8),), 8),
                ConvSpec(1, 5, 7, 24, 16, 3, 3, 2, 1, ((8, 8), (8, 5)), 4),
                ConvSpec(1, 7, 6, 3, 9, 3, 3, 1, 1, ((9, 8),), 8),
                ConvSpec(5, 1, 1, 48, 20, groups=((20, 8),), abits=8),
                ConvSpec(12, 1, 1, 48, 20, groups=((20, 8),), abits=8),         # dense in tiles of 4 rows
                ConvSpec(1, 8, 8, 32, 1, 3, 3, 1, 1, ((1, 8),), 8),
                ConvSpec(1, 6, 6, 16, 24, 3, 3, 1, 1, ((8, 6), (16, 2)), 4)]


@pytest.mark.parametrize("spec", NEON16_SPECS, ids=lambda s: f"{s.kh}x{s.kw}s{s.stride}-{s.groups}-a{s.abits}")
def test_neon_u16_products_match_reference_under_qemu(spec, tmp_path):
    from mpqdm.backend_tvm.kernels import dot_intrin

    assert any(i in dot_intrin.NEON16.values() for i, _ in dot_intrins(spec, load_board("rpi4")))
    check("rpi4", spec, tmp_path, seed=hash(spec) % 2**32)


@pytest.mark.parametrize("spec", NEON_SPECS, ids=lambda s: f"{s.kh}x{s.kw}s{s.stride}-{s.groups}-a{s.abits}")
def test_udot_by_element_matches_reference_under_qemu(spec, tmp_path):
    """The Pi 5's udot: 4 quads a call by element where c_in holds them (the same odd shapes)."""
    check("rpi5", spec, tmp_path, seed=hash(spec) % 2**32 + 1)


def test_neon_path_only_where_uint8_sums_stay_exact():
    from mpqdm.backend_tvm.kernels import dot_intrin

    pi4 = load_board("rpi4").cpu_features
    assert dot_intrin.dot_intrin(pi4, 4, 2, 64) == (dot_intrin.NEON[4], 4)      # 5 x 45 <= 255: 4 quads
    assert dot_intrin.dot_intrin(pi4, 4, 1, 64) == (dot_intrin.NEON[8], 8)      # 17 x 15
    assert dot_intrin.dot_intrin(pi4, 4, 4, 64) == (dot_intrin.NEON[1], 1)      # 225
    assert dot_intrin.dot_intrin(pi4, 4, 2, 24) == (dot_intrin.NEON[2], 2)      # c_in holds whole calls only
    assert dot_intrin.dot_intrin(pi4, 4, 5, 64) == (dot_intrin.NEON16[4], 4)    # 465 > 255: u16 products
    assert dot_intrin.dot_intrin(pi4, 8, 2, 64) == (dot_intrin.NEON16[4], 4)
    assert dot_intrin.dot_intrin(pi4, 8, 8, 24) == (dot_intrin.NEON16[2], 2)


def test_instruction_count_of_one_call_grows_with_the_work(tmp_path):
    """The qemu plugin counts one kernel call: a layer with twice the rows costs about twice as much."""
    board = load_board("rpi4")
    counts = []
    for h in (4, 8):
        spec = ConvSpec(1, h, 8, 8, 16, 3, 3, 1, 1, ((16, 2),), 4)
        work = tmp_path / f"h{h}"
        work.mkdir()
        exe = harness.link([harness.compile_object(schedule_qconv(spec), board, work / "k.o")], board, "qconv",
                           work / "harness")
        counts.append(harness.count_instructions(exe, board, random_args(spec, np.random.default_rng(h)).ordered(),
                                                 {9}, work))
    assert counts[0] > 10_000
    assert 1.5 < counts[1] / counts[0] < 2.7       # twice the rows, about twice the instructions


def test_per_block_counts_add_up_and_charge_the_kernel(tmp_path):
    """The plugin's per-block counts (tbs=) sum to its total, and by_symbol charges the kernel call's
    instructions to the kernel's functions: 8 calls of a layer cost it about 8 times one call's."""
    board = load_board("rpi4")
    spec = ConvSpec(1, 6, 8, 8, 16, 3, 3, 1, 1, ((16, 2),), 4)
    exe = harness.link([harness.compile_object(schedule_qconv(spec), board, tmp_path / "k.o")], board, "qconv",
                       tmp_path / "harness")
    harness.write_args(tmp_path / "args.bin", random_args(spec, np.random.default_rng(3)).ordered(), {9})
    plugin = harness.insn_plugin(tmp_path)
    per_call = {}
    for calls in (1, 9):
        blocks = tmp_path / f"blocks{calls}.txt"
        total = harness.counted([*board.qemu_command(exe), str(tmp_path / "args.bin"), str(tmp_path / "out.bin"),
                                 "1", str(calls)], plugin, blocks=blocks)["insns"]
        split = harness.by_symbol(blocks, exe)
        assert sum(split.values()) == total
        per_call[calls] = sum(v for k, v in split.items() if "qconv" in k)
    assert per_call[1] > 10_000
    assert 7.5 < per_call[9] / per_call[1] < 9.5
