"""A plan as the ILP may choose it: activation widths mixed over the layers (A4 and A8), each layer
with its own mix of weight widths in a shuffled channel order; it compiles, and the C runtime gives
the Python executor's noise prediction bit for bit."""

import numpy as np
import tvm

from mpqdm.backend_tvm.build import build
from mpqdm.backend_tvm.compile import compile_export
from mpqdm.backend_tvm.lower import lower_export
from mpqdm.boards.registry import load_board
from mpqdm.core.bitplan import Group, LayerPlan
from mpqdm.frontend.model_io import load_unet, model_fingerprint
from mpqdm.frontend.quant.calibrate import CalibConfig
from mpqdm.frontend.quant.ptq import PTQConfig, quantize, uniform_plan
from mpqdm.frontend.quant.swap import LayerPolicy
from mpqdm.testing.executor import Executor
from mpqdm.testing.runtime_check import run_binary


def mixed_plan(model_dir):
    unet = load_unet(model_dir)
    base = uniform_plan(unet, model_fingerprint(model_dir), 4, 4, LayerPolicy(), True, 2)
    rng = np.random.default_rng(0)
    layers, abits = {}, []
    for i, (name, lp) in enumerate(base.layers.items()):
        if not isinstance(lp, LayerPlan) or lp.groups[0].wbits == 8:
            layers[name] = lp
            continue
        c = lp.c_out
        cut = 2 * int(rng.integers(1, c // 2)) if c >= 4 else c
        groups = (Group(0, cut, 3),) + ((Group(cut, c, 2),) if cut < c else ())   # few kernels to build
        layers[name] = LayerPlan(tuple(int(j) for j in rng.permutation(c)), groups, 4 if i % 2 else 8)
        abits.append(layers[name].abits)
    assert {4, 8} <= set(abits)
    return base.__class__(base.model_sha256, base.model_class, 2, True, layers)


def test_mixed_activation_widths_compile_and_run_bit_exact(tiny_unet_dir, tmp_path):
    plan_file = tmp_path / "plan.json"
    mixed_plan(tiny_unet_dir).save(plan_file)
    exp = tmp_path / "exp"
    quantize(tiny_unet_dir, exp, PTQConfig(calib=CalibConfig(samples=4, steps=3, batch=4, keep_every=1)),
             plan_file=plan_file, device="cpu", progress=False)
    d = tmp_path / "host"
    compile_export(exp, "host", d)
    build(d, "host")
    plan, low = lower_export(exp, load_board("host"))
    ex = Executor(plan, tvm.runtime.load_module(str(d / "kernels.so")))
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 1)).astype(np.float32)
    for step in (0, plan.n_steps - 1):
        got = run_binary([str(d / "mpqdm-run")], d / "model.mpq", x, tmp_path / f"r{step}", "--unet-step", str(step))
        for i in range(2):
            assert np.array_equal(got[i: i + 1], ex.run(x[i: i + 1], float(low.schedule.timesteps[step]), step))
