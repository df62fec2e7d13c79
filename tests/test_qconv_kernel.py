"""Quantized conv / dense kernels (host build) against the NumPy integer reference: exact."""

from dataclasses import replace

import numpy as np
import pytest

from mpqdm.backend_tvm.kernels import dot_intrin as dot_intrin_mod
from mpqdm.backend_tvm.kernels import qconv_dot
from mpqdm.backend_tvm.kernels.dot_intrin import dot_intrin
from mpqdm.backend_tvm.kernels.qconv import qconv_func
from mpqdm.backend_tvm.kernels.qconv_schedule import dot_intrins, family, kernel_paths, schedule_qconv
from mpqdm.backend_tvm.tvm_compat import build, target, tensor, tvm
from mpqdm.boards.registry import load_board
from mpqdm.core.packing import pack_layer
from mpqdm.core.scheme import ConvSpec, weight_constants
from mpqdm.testing.reference import qconv_int

HOST = {"kind": "llvm"}


@pytest.fixture(autouse=True)
def _parallel(request):
    if request.node.name != "test_small_layers_run_on_one_thread":
        request.getfixturevalue("parallel_small_layers")


def random_layer(spec: ConvSpec, rng):
    rows = np.concatenate([rng.integers(0, 1 << b, size=(n, spec.k)) for n, b in spec.groups]).astype(np.uint8)
    # one group: the channels' own order (core/scheme.py: weight_constants makes it so)
    order = rng.permutation(spec.c_out) if len(spec.groups) > 1 else np.arange(spec.c_out)
    zw = np.concatenate([rng.integers(0, 1 << b, size=n) for n, b in spec.groups])[np.argsort(order)]
    return rows, order, zw.astype(np.int32)


HOST_BOARD = load_board("host")
# the host's own dot-product schedule, and on a host with VNNI also the AVX2 one it would otherwise get
AVX2_BOARD = replace(HOST_BOARD, cpu_features=tuple(f for f in HOST_BOARD.cpu_features if "vnni" not in f))
SCHEDULES = ["dot", "avx2", "portable", "plain"]
BOARDS = {"dot": HOST_BOARD, "avx2": AVX2_BOARD, "dot4": replace(HOST_BOARD, threads=4)}


def needs_dot(schedule: str) -> None:
    board = BOARDS.get(schedule)
    if board is not None and dot_intrins(ConvSpec(1, 1, 1, 4, 8, groups=((8, 2),), abits=4), board) is None:
        pytest.skip(f"this host has no dot-product instruction we use (features: {board.cpu_features})")
    if schedule == "avx2" and not set(HOST_BOARD.cpu_features) - set(AVX2_BOARD.cpu_features):
        pytest.skip("this host has no VNNI: its dot schedule is the AVX2 one, tested as 'dot'")


def run(spec: ConvSpec, rng, with_epilogue: bool, scheduled: str = "dot"):
    x = rng.integers(0, 1 << spec.abits, size=(spec.n, spec.h, spec.w, spec.c_in), dtype=np.uint8)
    rows, order, zw = random_layer(spec, rng)
    za = int(rng.integers(0, 1 << spec.abits))
    packed = pack_layer(rows, spec.groups)
    perm = np.argsort(order).astype(np.int32)                # original channel -> plan position
    w_orig = np.empty_like(rows)
    w_orig[order] = rows
    colsum = w_orig.astype(np.int64).sum(1).astype(np.int32)
    sw = rng.uniform(0.01, 0.1, spec.c_out).astype(np.float32)
    bias = rng.normal(size=spec.c_out).astype(np.float32)
    sa = np.array([0.05], np.float32)
    out_dtype = "float32" if with_epilogue else "int32"
    y = np.zeros((spec.n, spec.ho, spec.wo, spec.c_out), out_dtype)
    needs_dot(scheduled)
    if scheduled != "plain":   # our CPU schedules: tensorised for this machine's features, or portable
        board = BOARDS.get(scheduled)
        ex = tvm.compile(schedule_qconv(spec, board, with_epilogue=with_epilogue),
                         target=target(HOST_BOARD.tvm_target_dict()))
    else:                      # the plain loop nest
        ex = build(qconv_func(spec, with_epilogue), HOST, "qconv")
    args = [x, packed.words, perm, sw, zw, colsum, bias, sa, np.array([za], np.int32), y]
    targs = [tensor(a) for a in args]
    ex.mod["qconv"](*targs)
    ref = qconv_int(x, rows, order, zw, za, spec.kh, spec.kw, spec.stride, spec.pad)
    return targs[-1].numpy(), ref, sw, bias, sa


SHAPES = [
    ConvSpec(1, 7, 5, 3, 5, 3, 3, 1, 1, ((5, 2),), 4),                    # odd sizes, one group
    ConvSpec(2, 9, 6, 8, 7, 3, 3, 2, 1, ((2, 3), (3, 2), (2, 1)), 4),     # stride 2, three groups
    ConvSpec(1, 5, 5, 16, 6, 1, 1, 1, 0, ((3, 8), (3, 7)), 8),            # 1x1, straddling 7-bit codes
    ConvSpec(13, 1, 1, 33, 9, 1, 1, 1, 0, ((4, 5), (5, 6)), 8),           # dense [M, C] as 1x1 on 1x1 pixels
    ConvSpec(1, 6, 7, 24, 24, 3, 3, 1, 1, ((8, 3), (16, 2)), 4),          # vectorised groups, ragged pixel tile
    ConvSpec(10, 1, 1, 40, 16, groups=((16, 4),), abits=8),               # vectorised dense, ragged row tile
    ConvSpec(24, 1, 1, 36, 40, groups=((8, 3), (32, 2)), abits=4),        # dense in tiles of 8 rows, in row chunks
    ConvSpec(12, 1, 1, 20, 19, groups=((19, 4),), abits=8),               # dense in tiles of 4 rows, ragged lanes
    ConvSpec(1, 6, 5, 32, 16, 3, 3, 2, 1, ((8, 4), (8, 1)), 8),           # AVX2: 16-deep int16 pair sums at A8
    ConvSpec(1, 5, 6, 16, 16, 3, 3, 1, 1, ((8, 3), (8, 2)), 4),           # AVX2: 16-deep, pixel tile of 2
    ConvSpec(1, 16, 5, 8, 20, 3, 3, 1, 1, ((4, 3), (16, 2)), 4),          # few channel tiles: rows split in chunks
    ConvSpec(1, 5, 7, 20, 37, 3, 3, 1, 1, ((21, 2), (16, 8)), 8),         # 16-lane tiles (AVX512-VNNI), ragged
    ConvSpec(1, 16, 16, 32, 64, 3, 3, 1, 1, ((8, 3), (48, 2), (8, 1)), 4),  # OMQ split: launches merged or not
    ConvSpec(1, 4, 5, 12, 19, 3, 3, 1, 1, ((5, 5), (6, 6), (8, 4)), 4),  # quad unpacking at 5 and 6 bits
    # AMX tiles where the host has them (else the schedules above): a ragged 48-channel tile of 3
    # accumulator tiles, 16-byte k steps, 10-pixel rows, 8-bit weights (offset 128)
    ConvSpec(1, 6, 10, 48, 37, 3, 3, 1, 1, ((37, 8),), 8),
    ConvSpec(32, 1, 1, 64, 80, groups=((16, 3), (64, 2)), abits=4),      # dense in 16-row tiles, 64-byte k
    ConvSpec(1, 5, 8, 96, 20, 1, 1, 1, 0, ((4, 2), (16, 1)), 4),          # 1x1: a VNNI group beside an AMX one
]


@pytest.mark.parametrize("scheduled", SCHEDULES)
@pytest.mark.parametrize("spec", SHAPES, ids=lambda s: f"{s.kh}x{s.kw}s{s.stride}-{s.groups}-a{s.abits}")
def test_integer_accumulators_exact(spec, scheduled):
    got, ref, *_ = run(spec, np.random.default_rng(hash(spec) % 2**32), False, scheduled)
    assert np.array_equal(got.astype(np.int64), ref)


def random_spec(rng) -> ConvSpec:
    """A stride-1 layer whose c_in holds whole 16-byte k steps (AMX-eligible where the host has it):
    random groups, widths, rows and batch, dense or a 1x1 / 3x3 conv."""
    c_in, groups, left = int(rng.choice([16, 48, 80, 96])), [], int(rng.integers(8, 70))
    c_out = left
    while left > 0:
        n_g = int(min(left, rng.integers(1, 40)))
        groups.append((n_g, int(rng.choice([1, 2, 3, 4, 5, 8]))))
        left -= n_g
    abits = int(rng.choice([4, 8]))
    if rng.random() < 0.3:
        return ConvSpec(int(rng.integers(4, 40)), 1, 1, c_in, c_out, groups=tuple(groups), abits=abits)
    k = int(rng.choice([1, 3]))
    return ConvSpec(int(rng.integers(1, 3)), int(rng.integers(3, 20)), int(rng.integers(3, 34)), c_in, c_out,
                    k, k, 1, k // 2, tuple(groups), abits)


@pytest.mark.parametrize("seed", range(4))
def test_random_layers_exact(seed):
    """Random shapes and plans (see random_spec), this host's dot schedule against the integer reference."""
    rng = np.random.default_rng(1000 + seed)
    spec = random_spec(rng)
    got, ref, *_ = run(spec, rng, False, "dot")
    assert np.array_equal(got.astype(np.int64), ref), spec


@pytest.mark.parametrize("spec", [
    ConvSpec(1, 6, 7, 32, 24, 3, 3, 1, 1, ((8, 3), (16, 2)), 4),          # 3x3, two groups
    ConvSpec(20, 1, 1, 48, 40, groups=((24, 1), (16, 8)), abits=8),       # dense, 1 and 8 bits
    ConvSpec(1, 9, 6, 16, 16, 3, 3, 2, 1, ((16, 4),), 4),                 # stride 2 (no AMX)
], ids=lambda s: f"{s.kh}x{s.kw}s{s.stride}-{s.groups}")
def test_every_kernel_path_exact(spec):
    """Each path `mpqdm profile` times on this host (ConvSpec.kernels), all groups on it and the first
    group on the best path beside the rest on the last: the kernel compile may build is exact."""
    paths = kernel_paths(spec, HOST_BOARD)
    if not paths:
        pytest.skip(f"this host has no dot-product instruction we use (features: {HOST_BOARD.cpu_features})")
    mixed = (paths[0],) + (paths[-1],) * (len(spec.groups) - 1)
    for i, kernels in enumerate([(p,) * len(spec.groups) for p in paths] + [mixed]):
        chosen = replace(spec, kernels=kernels)
        assert [family(k) for k, _ in dot_intrins(chosen, HOST_BOARD)] == list(kernels)
        got, ref, *_ = run(chosen, np.random.default_rng(i), False, "dot")
        assert np.array_equal(got.astype(np.int64), ref), kernels


def test_four_threads_with_two_tile_groups_split_in_row_chunks():
    """OMQ's 16/96/16 split on a 4-thread board (a Pi): the 2-tile groups' tasks are row chunks that a
    merged launch would slice inside a tile, which TVM cannot tensorize; they get their own launch."""
    spec = ConvSpec(1, 8, 8, 64, 128, 3, 3, 1, 1, ((16, 3), (96, 2), (16, 1)), 4)
    got, ref, *_ = run(spec, np.random.default_rng(4), False, "dot4")
    assert np.array_equal(got.astype(np.int64), ref)


def test_small_layers_run_on_one_thread():
    """No parallel launch in a layer below qconv_dot.serial's size; every launch kept above it."""
    proj = ConvSpec(64, 1, 1, 128, 128, groups=((16, 3), (96, 2), (16, 1)), abits=4)     # an attention projection
    conv_out = ConvSpec(1, 32, 32, 32, 1, 3, 3, 1, 1, ((1, 2),), 4)                       # 32K input codes
    assert qconv_dot.serial(proj, [dot_intrin_mod.AMX] * 3)
    assert not qconv_dot.serial(proj, [dot_intrin_mod.AMX, "mpq_dot16x4_vnni", dot_intrin_mod.AMX])   # 1M: not on AMX
    assert not qconv_dot.serial(conv_out, [dot_intrin_mod.AMX])
    needs_dot("dot4")
    board = BOARDS["dot4"]
    on_amx = dot_intrins(proj, board)[0][0] == dot_intrin_mod.AMX
    assert ("T.parallel" in schedule_qconv(proj, board).script()) != on_amx
    assert "T.parallel" not in schedule_qconv(ConvSpec(1, 1, 1, 128, 128, groups=((128, 2),), abits=4), board).script()
    assert "T.parallel" in schedule_qconv(conv_out, board).script()


@pytest.mark.parametrize("scheduled", SCHEDULES[:3])
@pytest.mark.parametrize("abits", [4, 8])
@pytest.mark.parametrize("bits", range(1, 9))
def test_every_weight_width(bits, abits, scheduled):
    spec = ConvSpec(1, 4, 3, 5, 19, 3, 3, 1, 1, ((19, bits),), abits)     # 19: a ragged 16- or 8-lane tile
    got, ref, *_ = run(spec, np.random.default_rng(bits * 10 + abits), False, scheduled)
    assert np.array_equal(got.astype(np.int64), ref)


def test_dot_intrinsic_choice_keeps_int16_sums_exact():
    """The deepest int16 accumulation whose worst case fits: q quads x 2 (2^a - 1) max|w| <= 32767."""
    avx2 = ("avx2", "fma")
    assert dot_intrin(avx2, 4, 2, 64) == (dot_intrin_mod.DEEP[4], 4)
    assert dot_intrin(avx2, 8, 4, 64) == (dot_intrin_mod.DEEP[4], 4)      # 4 * 2 * 255 * 15 = 30600
    assert dot_intrin(avx2, 8, 5, 64) == (dot_intrin_mod.DEEP[2], 2)      # 2 * 2 * 255 * 31 = 31620
    assert dot_intrin(avx2, 8, 6, 64) == (dot_intrin_mod.AVX2, 1)         # 2 * 255 * 63 = 32130
    assert dot_intrin(avx2, 8, 8, 64) == (dot_intrin_mod.AVX2_SPLIT, 1)   # pairs would saturate
    assert dot_intrin(avx2, 4, 2, 24) == (dot_intrin_mod.DEEP[2], 2)      # c_in holds whole calls only
    assert dot_intrin((*avx2, "avx512f", "avx_vnni"), 8, 8, 64) == (dot_intrin_mod.VNNI, 1)  # int32 sums
    vnni512 = (*avx2, "avx512f", "avx512bw", "avx512vnni", "avx_vnni")
    assert dot_intrin(vnni512, 4, 2, 64, 16) == (dot_intrin_mod.VNNI512, 1)   # 16 channels a call
    assert dot_intrin(vnni512, 4, 2, 64, 12) == (dot_intrin_mod.VNNI, 1)      # a small group: 8-lane tiles
    assert dot_intrin(("neon", "dotprod"), 8, 8, 64) == (dot_intrin_mod.UDOT4, 4)   # 4 quads, by element
    assert dot_intrin(("neon", "dotprod"), 8, 8, 24) == (dot_intrin_mod.UDOT, 1)


def test_float_epilogue():
    spec = SHAPES[1]
    got, ref, sw, bias, sa = run(spec, np.random.default_rng(7), with_epilogue=True)
    want = ref * (sa[0].astype(np.float64) * sw.astype(np.float64)) + bias
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_bad_specs_name_the_problem():
    with pytest.raises(ValueError, match="cover 4 channels"):
        ConvSpec(1, 4, 4, 2, 5, groups=((4, 2),))
    with pytest.raises(ValueError, match="activation bits"):
        ConvSpec(1, 4, 4, 2, 4, groups=((4, 2),), abits=3)
    with pytest.raises(ValueError, match="1..8"):
        ConvSpec(1, 4, 4, 2, 4, groups=((4, 9),))
    with pytest.raises(ValueError, match="empty"):
        ConvSpec(1, 2, 2, 2, 4, 3, 3, groups=((4, 2),))


def test_unknown_target_names_the_supported_ones():
    with pytest.raises(ValueError, match="supported: llvm, cuda, c"):
        target({"kind": "vulkan"})


@pytest.mark.parametrize("groups", [((12, 2),), ((4, 3), (8, 2))], ids=["one-width", "two-widths"])
def test_weight_constants_plan_order(groups):
    """One width: the channels' own order (perm the identity, rows and per-channel terms moved back),
    so the CPU kernels may skip the gather; several: perm maps each channel to its plan position."""
    spec = ConvSpec(1, 3, 3, 4, 12, 1, 1, 1, 0, groups, 4)
    rng = np.random.default_rng(3)
    rows, order = rng.integers(0, 4, size=(12, spec.k), dtype=np.uint8), rng.permutation(12)     # plan order
    wstep = rng.uniform(0.1, 1, 12).astype(np.float32)
    wc = weight_constants(spec, rows, order, wstep, np.arange(12))
    original = np.empty_like(rows)
    original[order] = rows
    if len(groups) == 1:
        assert np.array_equal(wc["perm"], np.arange(12))
        assert np.array_equal(wc["wp"], pack_layer(original, groups).words)
    else:
        assert np.array_equal(order[wc["perm"]], np.arange(12))
        assert np.array_equal(wc["wp"], pack_layer(rows, groups).words)
    assert np.array_equal(wc["sw"][order], wstep) and np.array_equal(wc["zw"][order], np.arange(12))
    assert np.array_equal(wc["colsum"], original.astype(np.int64).sum(1))
