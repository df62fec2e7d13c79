"""The input quantization kernel equals the frontend's codes exactly (same float32 operations)."""

import numpy as np
import pytest
import torch

from mpqdm.backend_tvm.kernels.quantize import schedule_quantize
from mpqdm.backend_tvm.tvm_compat import tensor, tvm
from mpqdm.testing.reference import quantize_input


@pytest.mark.parametrize("shape,abits", [((2, 7, 5, 12), 4), ((13, 33), 8), ((3, 5, 16), 4), ((130, 128), 8)])
def test_codes_match_the_frontend(shape, abits):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=shape) * 3).astype(np.float32)
    smooth = rng.uniform(0.3, 3.0, size=shape[-1]).astype(np.float32)
    step, zero = np.float32(0.37), 7
    x.flat[:4] = [0.5 * 0.37 * smooth[0], 1.5 * 0.37 * smooth[1], -1e4, 1e4]   # ties and clamps
    ex = tvm.compile(schedule_quantize(shape, abits), target={"kind": "llvm"})
    q = np.zeros(shape, np.uint8)
    args = [tensor(a) for a in (x, smooth, np.array([step], np.float32), np.array([zero], np.int32), q)]
    ex.mod["quantize"](*args)
    got = args[-1].numpy()
    assert np.array_equal(got, quantize_input(x, smooth, step, zero, abits))
    # the frontend's own formula (mpqdm/testing/intref.py, NHWC here)
    xs = torch.from_numpy(x) / torch.from_numpy(smooth)
    want = torch.clamp(torch.round(xs / torch.tensor(step)) + zero, 0, 2 ** abits - 1).to(torch.uint8).numpy()
    assert np.array_equal(got, want)
    assert got.max() == 2 ** abits - 1 and got.min() == 0


def test_bad_input():
    with pytest.raises(ValueError, match="4 or 8"):
        schedule_quantize((2, 3), 3)
    with pytest.raises(ValueError, match="positive"):
        schedule_quantize((0, 3), 4)


# GroupNorm (+ SiLU) with the consumer's quantizer fused in (kernels/fp.py GroupNormSpec.quantize):
# the same codes, bit for bit, as GroupNorm's float output through the quantize kernel, built for
# the host board's target (its FMA contraction included)
FUSED = [((2, 7, 5, 12, 3), True, 4), ((1, 3, 5, 40, 8), False, 8), ((1, 9, 31, 48, 6), True, 4),
         ((1, 1, 3, 6, 2), True, 8)]


@pytest.mark.parametrize("dims,silu,abits", FUSED, ids=lambda v: str(v))
def test_group_norm_with_the_quantizer_fused_equals_the_two_calls(dims, silu, abits):
    from mpqdm.backend_tvm.kernels import fp
    from mpqdm.boards.registry import load_board

    tgt = load_board("host").tvm_target_dict()
    plain, fused = fp.GroupNormSpec(*dims, silu=silu), fp.GroupNormSpec(*dims, silu=silu, quantize=True)
    rng = np.random.default_rng(11)
    shape = dims[:4]
    x = (rng.normal(size=shape) * 3 + 1).astype(np.float32)
    gamma, beta = (rng.normal(size=shape[-1]).astype(np.float32) for _ in range(2))
    smooth = rng.uniform(0.3, 3.0, size=shape[-1]).astype(np.float32)
    step, zero, qmax = np.float32(2.5 / 2 ** abits), 2 ** (abits - 2), 2 ** abits - 1
    y = np.zeros(shape, np.float32)
    gn = tvm.compile(fp.schedule_group_norm(plain), target=tgt)
    gn.mod["group_norm"](*[tensor(a) for a in (x, gamma, beta)], yt := tensor(y))
    q = tvm.compile(schedule_quantize(shape, abits), target=tgt)
    consts = [np.array([step], np.float32), np.array([zero], np.int32)]
    q.mod["quantize"](yt, *[tensor(a) for a in (smooth, *consts)], want := tensor(np.zeros(shape, np.uint8)))
    both = tvm.compile(fp.schedule_group_norm(fused), target=tgt)
    args = [tensor(a) for a in (x, gamma, beta, smooth, *consts, np.array([qmax], np.float32))]
    both.mod["group_norm"](*args, got := tensor(np.zeros(shape, np.uint8)))
    assert np.array_equal(got.numpy(), want.numpy())
    codes = got.numpy()
    assert len(np.unique(codes)) >= min(codes.size, qmax) // 2       # spread over the codes, not clamped
