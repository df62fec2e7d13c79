"""The call-free float32 exp, sigmoid and SiLU (backend_tvm/kernels/vmath.py) against NumPy, built
vectorised for the host on fresh random data, the clamped ends and an odd length."""

import numpy as np
import pytest

from mpqdm.backend_tvm.kernels import vmath
from mpqdm.backend_tvm.kernels.fp import lanes, module
from mpqdm.backend_tvm.tvm_compat import Schedule, te, tensor, tvm

HOST = {"kind": "llvm"}


def run(fn, x: np.ndarray) -> np.ndarray:
    a = te.placeholder(x.shape, "float32", name="A")
    y = te.compute(x.shape, lambda i: fn(a[i]), name="Y")
    sch = Schedule(module(te.create_prim_func([a, y]), "k"))
    (i,) = sch.get_loops(sch.get_sblock("Y", func_name="k"))
    v = lanes(x.shape[0])
    if 1 < v < x.shape[0]:
        _, i = sch.split(i, [None, v])
    sch.vectorize(i)
    ex = tvm.compile(sch.mod, target=tvm.target.Target(HOST))
    out = tensor(np.zeros_like(x))
    ex.mod["k"](tensor(x), out)
    return out.numpy()


@pytest.mark.parametrize("n", [1000, 4096 + 7])
def test_exp_within_a_few_ulp(n):
    x = np.random.default_rng(n).uniform(-87.0, 88.0, n).astype(np.float32)
    x[:4] = [0.0, -0.0, 1e-8, -1e-8]
    got = run(vmath.exp, x)
    want = np.exp(x.astype(np.float64))
    assert np.all(np.abs(got / want - 1) < 4 * 2.0**-23), np.max(np.abs(got / want - 1))


def test_exp_clamps_instead_of_inf_or_nan():
    x = np.array([-1e4, -100.0, 100.0, 1e4, -np.inf, np.inf] + [0.0] * 10, np.float32)
    got = run(vmath.exp, x)
    assert np.all(np.isfinite(got))
    assert got[0] == got[1] == got[4] > 0 and got[0] < 1e-37
    assert got[2] == got[3] == got[5] > 2e38      # e^88.37


def test_sigmoid_and_silu():
    x = np.random.default_rng(1).standard_normal(1031).astype(np.float32) * 10
    x[:4] = [-200.0, 200.0, 0.0, -30.0]
    sig = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(run(vmath.sigmoid, x), sig, rtol=1e-6, atol=1e-37)
    got = run(vmath.silu, x)
    assert not np.any(np.isnan(got))
    np.testing.assert_allclose(got, x * sig, rtol=1e-6, atol=1e-30)


def test_softmax_exp_is_zero_below_the_flush_and_exp_above():
    below, above = np.linspace(-200, vmath.FLUSH - 1e-3, 500), np.linspace(vmath.FLUSH, 0, 524)
    x = np.concatenate([below, above]).astype(np.float32)
    got = run(vmath.softmax_exp, x)
    assert np.all(got[:500] == 0)           # never a denormal: x86 multiplies those through a slow assist
    np.testing.assert_array_equal(got[500:], run(vmath.exp, x[500:]))
    assert np.all(got[500:] >= np.float32(2.0**-126))
