"""The floating-point kernels (backend_tvm.kernels.fp / attention) against PyTorch / diffusers on the
host, their default schedules built for every aarch64 board, and two of them run from C under qemu."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding

from mpqdm.backend_tvm.kernels import fp
from mpqdm.backend_tvm.kernels.attention import AttentionSpec, attention_func, schedule_attention
from mpqdm.backend_tvm.tvm_compat import build, target, tensor, tvm
from mpqdm.boards.registry import load_board
from mpqdm.testing import harness

HOST = {"kind": "llvm"}
# float32 tolerance for every kernel, group norm and attention included (their errors measured at
# UNet sizes, GN 32x32x64 / 8 groups and attention l=256: below a third of it)
TOL = dict(rtol=1e-5, atol=1e-5)


def run_host(func_or_mod, inputs: list[np.ndarray], out_shape) -> np.ndarray:
    func = func_or_mod if isinstance(func_or_mod, tvm.tirx.PrimFunc) else next(iter(func_or_mod.functions.values()))
    ex = build(func, HOST, "k")
    args = [tensor(np.ascontiguousarray(a, np.float32)) for a in inputs] + [tensor(np.zeros(out_shape, np.float32))]
    ex.mod["k"](*args)
    return args[-1].numpy()


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2)


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def rand(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


SCHED = pytest.mark.parametrize("scheduled", [False, True], ids=["te", "sched"])


# -- against torch --------------------------------------------------------------------------------------

CONVS = [fp.Conv2dSpec(1, 7, 5, 12, 20, 3, 3, stride=2, pad=1),       # downsample, 4-lane channel vectors
         fp.Conv2dSpec(1, 9, 17, 8, 32, 3, 3, stride=2, pad=0),         # stride 2, 8-pixel tiles when wide
         fp.Conv2dSpec(2, 7, 5, 12, 17, 1, 1),                          # 1x1 shortcut, 17 outputs: scalar
         fp.Conv2dSpec(1, 6, 9, 5, 12, 3, 2, stride=1, pad=2)]          # uneven kernel, wide padding


def conv_case(s: fp.Conv2dSpec, rng) -> tuple[list[np.ndarray], np.ndarray]:
    x, w, b = rand(rng, s.n, s.h, s.w, s.c_in), rand(rng, s.c_out, s.c_in, s.kh, s.kw), rand(rng, s.c_out)
    want = F.conv2d(nchw(x), torch.from_numpy(w), torch.from_numpy(b), s.stride, s.pad)
    return [x, fp.conv2d_weight(s, w), b], nhwc(want)


@pytest.mark.parametrize("scheduled", [False, True, "wide", "lane"], ids=["te", "sched", "wide", "lane"])
@pytest.mark.parametrize("s", CONVS, ids=lambda s: f"{s.kh}x{s.kw}s{s.stride}p{s.pad}-{s.c_out}")
def test_conv2d(s, scheduled):
    inputs, want = conv_case(s, np.random.default_rng(1))
    mod = fp.schedule_conv2d(s, wide=scheduled == "wide", lane=scheduled == "lane") if scheduled else fp.conv2d_func(s)
    np.testing.assert_allclose(run_host(mod, inputs, want.shape), want, **TOL)


@SCHED
@pytest.mark.parametrize("s", [fp.DenseSpec(5, 12, 40), fp.DenseSpec(1, 33, 17), fp.DenseSpec(35, 24, 12),
                               fp.DenseSpec(1, 1, 1)],   # unit loops kept through compute_at
                         ids=lambda s: f"{s.m}x{s.k}x{s.n}")
def test_dense(s, scheduled):
    rng = np.random.default_rng(2)
    x, w, b = rand(rng, s.m, s.k), rand(rng, s.n, s.k), rand(rng, s.n)
    got = run_host(fp.schedule_dense(s) if scheduled else fp.dense_func(s), [x, w, b], (s.m, s.n))
    np.testing.assert_allclose(got, F.linear(*map(torch.from_numpy, (x, w, b))).numpy(), **TOL)


GROUP_NORMS = [fp.GroupNormSpec(2, 7, 5, 12, 3, silu=True),
               fp.GroupNormSpec(1, 7, 5, 12, 4, eps=1e-6),
               fp.GroupNormSpec(1, 3, 5, 40, 8, silu=True),           # 40 channels: 8-lane vectors
               fp.GroupNormSpec(2, 9, 31, 48, 6, silu=True),          # >= PARALLEL_MIN: channel vectors in parallel
               fp.GroupNormSpec(1, 12, 37, 40, 5, silu=True, parts=2),  # row blocks summed apart, in parallel
               fp.GroupNormSpec(1, 9, 61, 32, 4, parts=2)]              # rows do not divide: one block


@SCHED
@pytest.mark.parametrize("s", GROUP_NORMS, ids=lambda s: f"c{s.c}g{s.groups}{'-silu' * s.silu}")
def test_group_norm(s, scheduled):
    rng = np.random.default_rng(3)
    x = rand(rng, s.n, s.h, s.w, s.c) * 3 + 1          # an offset mean, as after a conv
    gamma, beta = rand(rng, s.c), rand(rng, s.c)
    got = run_host(fp.schedule_group_norm(s) if scheduled else fp.group_norm_func(s), [x, gamma, beta], x.shape)
    want = F.group_norm(nchw(x), s.groups, torch.from_numpy(gamma), torch.from_numpy(beta), s.eps)
    np.testing.assert_allclose(got, nhwc(F.silu(want) if s.silu else want), **TOL)


def test_group_norm_row_blocks():
    """parts=2 sums two row blocks apart where the rows divide, else one block."""
    assert fp.GroupNormSpec(1, 12, 37, 40, 5, parts=2).stats_parts == 2
    assert fp.GroupNormSpec(1, 9, 61, 32, 4, parts=2).stats_parts == 1
    assert repr(fp.GroupNormSpec(1, 4, 4, 8, 4, parts=2)) == repr(fp.GroupNormSpec(1, 4, 4, 8, 4))  # latency key
    script = fp.schedule_group_norm(fp.GroupNormSpec(1, 12, 37, 40, 5, parts=2)).script()
    assert "gn_csum_part" in script and "T.parallel(2)" in script


ELTWISE = [fp.EltwiseSpec(2, 7, 5, 12), fp.EltwiseSpec(1, 3, 5, 20), fp.EltwiseSpec(1, 35, 1, 17)]
ELT_IDS = lambda s: "x".join(map(str, s.shape))  # noqa: E731


@SCHED
@pytest.mark.parametrize("s", ELTWISE, ids=ELT_IDS)
def test_silu_add_upsample(s, scheduled):
    rng = np.random.default_rng(4)
    a, b = rand(rng, *s.shape) * 4, rand(rng, *s.shape)
    got = run_host(fp.schedule_silu(s) if scheduled else fp.silu_func(s), [a], s.shape)
    np.testing.assert_allclose(got, F.silu(torch.from_numpy(a)).numpy(), **TOL)
    got = run_host(fp.schedule_add(s) if scheduled else fp.add_func(s), [a, b], s.shape)
    np.testing.assert_allclose(got, a + b, **TOL)
    got = run_host(fp.schedule_upsample_nearest2x(s) if scheduled else fp.upsample_nearest2x_func(s), [a],
                   (s.n, 2 * s.h, 2 * s.w, s.c))
    np.testing.assert_array_equal(got, nhwc(F.interpolate(nchw(a), scale_factor=2.0, mode="nearest")))
    got = run_host(fp.schedule_pad_bottom_right(s) if scheduled else fp.pad_bottom_right_func(s), [a],
                   (s.n, s.h + 1, s.w + 1, s.c))
    np.testing.assert_array_equal(got, nhwc(F.pad(nchw(a), (0, 1, 0, 1))))


@SCHED
@pytest.mark.parametrize("s", [fp.ConcatSpec(2, 7, 5, 12, 20), fp.ConcatSpec(1, 3, 5, 3, 2)],
                         ids=lambda s: f"{s.c1}+{s.c2}")
def test_concat(s, scheduled):
    rng = np.random.default_rng(5)
    a, b = rand(rng, s.n, s.h, s.w, s.c1), rand(rng, s.n, s.h, s.w, s.c2)
    got = run_host(fp.schedule_concat(s) if scheduled else fp.concat_func(s), [a, b], (s.n, s.h, s.w, s.c1 + s.c2))
    np.testing.assert_array_equal(got, np.concatenate([a, b], axis=-1))


ATTENTIONS = [AttentionSpec(2, 35, 12, 3),         # d = 4: whole-head vectors
              AttentionSpec(1, 9, 40, 1),          # one head of 40: 8-lane vectors
              AttentionSpec(1, 21, 34, 2),         # d = 17: scalar output loop
              AttentionSpec(1, 1, 6, 6),           # l = 1, d = 1: unit loops
              AttentionSpec(2, 48, 16, 2),         # l = 48: 16 partial results a row
              AttentionSpec(1, 36, 24, 3)]         # l = 36: 4 partial results a row


def attention_ref(s: AttentionSpec, q, k, v) -> np.ndarray:
    def heads(a):
        return torch.from_numpy(a).reshape(s.n, s.l, s.heads, s.d).transpose(1, 2)
    o = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))      # diffusers' AttnProcessor2_0
    return o.transpose(1, 2).reshape(s.n, s.l, s.c).numpy()


@pytest.mark.parametrize("scheduled", [False, True, "lane", "wide"], ids=["te", "sched", "lane", "wide"])
@pytest.mark.parametrize("s", ATTENTIONS, ids=lambda s: f"l{s.l}c{s.c}h{s.heads}")
def test_attention(s, scheduled):
    rng = np.random.default_rng(6)
    q, k, v = (rand(rng, s.n, s.l, s.c) * 2 for _ in range(3))     # peaked softmax rows
    q[..., : s.l // 2, :] *= 3      # and some very peaked ones: weights below e^-60 flushed to 0
    mod = schedule_attention(s, lane=scheduled == "lane", wide=scheduled == "wide") if scheduled else attention_func(s)
    got = run_host(mod, [q, k, v], (s.n, s.l, s.c))
    np.testing.assert_allclose(got, attention_ref(s, q, k, v), **TOL)


TIMESTEPS = [fp.TimestepSpec(4, 32), fp.TimestepSpec(3, 9), fp.TimestepSpec(3, 10, flip_sin_to_cos=False, freq_shift=1)]


@SCHED
@pytest.mark.parametrize("s", TIMESTEPS, ids=lambda s: f"d{s.dim}-{s.flip_sin_to_cos}-{s.freq_shift}")
def test_timestep_embedding(s, scheduled):
    t = np.array([0, 999, 500.5, 17.25][: s.n], np.float32)
    got = run_host(fp.schedule_timestep_embedding(s) if scheduled else fp.timestep_embedding_func(s), [t],
                   (s.n, s.dim))
    want = get_timestep_embedding(torch.from_numpy(t), s.dim, s.flip_sin_to_cos, s.freq_shift).numpy()
    np.testing.assert_allclose(got, want, **TOL)


# -- parameters -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: fp.Conv2dSpec(1, 4, 4, 0, 3), "c_in must be >= 1, got 0"),
    (lambda: fp.Conv2dSpec(1, 4, 4, 2, 3, stride=2.0), "stride must be an int"),
    (lambda: fp.Conv2dSpec(1, 4, 4, 2, 3, pad=-1), "pad must be >= 0"),
    (lambda: fp.Conv2dSpec(1, 2, 2, 2, 3, 3, 3), "output is empty"),
    (lambda: fp.DenseSpec(3, 0, 2), "dense k must be >= 1"),
    (lambda: fp.GroupNormSpec(1, 4, 4, 12, 5), "groups=5 does not divide c=12"),
    (lambda: fp.GroupNormSpec(1, 4, 4, 12, 0), "groups must be >= 1"),
    (lambda: fp.GroupNormSpec(1, 4, 4, 12, 3, eps=0.0), "eps must be a float > 0"),
    (lambda: fp.GroupNormSpec(1, 4, 4, 12, 3, silu=1), "silu must be a bool"),
    (lambda: fp.EltwiseSpec(1, 4, True, 3), "w must be an int"),
    (lambda: fp.ConcatSpec(1, 4, 4, 3, 0), "c2 must be >= 1"),
    (lambda: AttentionSpec(1, 9, 12, 5), "heads=5 does not divide c=12"),
    (lambda: AttentionSpec(1, 0, 12, 3), "attention l must be >= 1"),
    (lambda: fp.TimestepSpec(1, 1), "dim must be >= 2"),
    (lambda: fp.TimestepSpec(1, 8, freq_shift=4), "freq_shift must be a number != dim // 2"),
])
def test_bad_parameters_name_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# -- boards ---------------------------------------------------------------------------------------------

ALL_SCHEDULES = [(fp.schedule_conv2d, CONVS[0]), (lambda s: fp.schedule_conv2d(s, lane=True), CONVS[1]),
                 (fp.schedule_dense, fp.DenseSpec(3, 12, 40)),
                 (fp.schedule_group_norm, GROUP_NORMS[2]), (fp.schedule_silu, ELTWISE[1]),
                 (fp.schedule_add, ELTWISE[1]), (fp.schedule_concat, fp.ConcatSpec(1, 3, 5, 12, 20)),
                 (fp.schedule_upsample_nearest2x, ELTWISE[1]), (fp.schedule_timestep_embedding, TIMESTEPS[0]),
                 (schedule_attention, ATTENTIONS[1]), (lambda s: schedule_attention(s, lane=True), ATTENTIONS[4])]


@pytest.mark.parametrize("board", ["rpi4", "rpi5", "jetson-orin-nano"])
def test_schedules_build_for_aarch64_boards(board):
    tgt = target(load_board(board).tvm_target_dict())
    for make, s in ALL_SCHEDULES:
        tvm.compile(make(s), target=tgt)


@pytest.mark.parametrize("kernel", ["group_norm_silu", "attention", "conv2d_lane"])
def test_from_c_under_qemu_rpi4(kernel, tmp_path):
    board = load_board("rpi4")
    rng = np.random.default_rng(7)
    if kernel == "group_norm_silu":
        s = fp.GroupNormSpec(1, 3, 5, 20, 4, silu=True)
        mod = fp.schedule_group_norm(s, name=kernel)
        x = rand(rng, s.n, s.h, s.w, s.c)
        inputs = [x, rand(rng, s.c), rand(rng, s.c)]
        t = [torch.from_numpy(a) for a in inputs]
        want = nhwc(F.silu(F.group_norm(nchw(x), s.groups, t[1], t[2], s.eps)))
    elif kernel == "conv2d_lane":      # inputs loaded 4 at a time, multiplied lane by lane (fmla by element)
        s = fp.Conv2dSpec(1, 9, 16, 24, 32, 3, 3, stride=1, pad=1)
        mod = fp.schedule_conv2d(s, name=kernel, lane=True)
        inputs, want = conv_case(s, rng)
    else:
        s = AttentionSpec(1, 132, 16, 2)       # per-task scratch over 1 KiB: from our workspace allocator
        mod = schedule_attention(s, name=kernel, lane=True)
        inputs = [rand(rng, s.n, s.l, s.c) for _ in range(3)]
        want = attention_ref(s, *inputs)
    obj = harness.compile_object(mod, board, tmp_path / "k.o")
    exe = harness.link([obj], board, kernel, tmp_path / "harness")
    arrays = [*inputs, np.zeros(want.shape, np.float32)]
    (got,) = harness.run(exe, board, arrays, {len(arrays) - 1}, tmp_path, threads=2)
    np.testing.assert_allclose(got, want, **TOL)
