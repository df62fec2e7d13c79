"""Named layer policies: which layers a plan keeps in floating point or at 8 bits."""

import torch

from mpqdm.core.bitplan import FloatLayer, LayerPlan
from mpqdm.frontend.model_io import load_scheduler, load_unet
from mpqdm.frontend.quant.calibrate import CalibConfig, calibrate
from mpqdm.frontend.quant.ptq import ptq_model, uniform_plan
from mpqdm.frontend.quant.swap import POLICIES


def test_shortcut_policy_puts_shortcut_and_downsample_convs_at_w8a8_and_runs(tiny_unet_dir):
    unet = load_unet(tiny_unet_dir).eval()
    moved = [n for n in uniform_plan(unet, "0" * 64, 2, 4, POLICIES["default"], True).layers
             if "conv_shortcut" in n or "downsamplers." in n]
    assert moved, "the tiny model has shortcut or downsample convs"
    default = uniform_plan(unet, "0" * 64, 2, 4, POLICIES["default"], True)
    w8 = uniform_plan(unet, "0" * 64, 2, 4, POLICIES["shortcuts-w8a8"], True)
    for name in moved:
        assert isinstance(default.layers[name], FloatLayer)
        plan = w8.layers[name]
        assert isinstance(plan, LayerPlan) and plan.abits == 8 and {g.wbits for g in plan.groups} == {8}
    # every other layer is planned the same way by both
    assert {n: p for n, p in default.layers.items() if n not in moved} == \
        {n: p for n, p in w8.layers.items() if n not in moved}
    calib = calibrate(unet, load_scheduler(tiny_unet_dir).alphas_cumprod, CalibConfig(samples=2, steps=3, batch=2),
                      progress=False)
    q = ptq_model(unet, w8, calib, "mse")
    c = unet.config
    x = torch.randn(1, c.in_channels, c.sample_size, c.sample_size)
    with torch.no_grad():
        assert torch.isfinite(q(x, torch.tensor([10])).sample).all()
