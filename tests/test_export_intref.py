import pytest
import torch

from mpqdm.core.bitplan import BitPlan
from mpqdm.core.errors import UserError
from mpqdm.frontend.quant.calibrate import CalibConfig
from mpqdm.frontend.quant.export import load_export
from mpqdm.frontend.quant.swap import dequantize_model, quant_layers, set_step
from mpqdm.testing.intref import IntRefLayer, integer_reference


def _capture(model):
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, a, y, n=n: seen.__setitem__(n, (a[0], y)))
             for n, m in quant_layers(model).items()]
    return seen, hooks


@torch.no_grad()
def test_each_layer_equals_fake_quant_given_the_same_input(export_dir):
    ref, fq = integer_reference(export_dir)
    refs = {n: m for n, m in ref.named_modules() if isinstance(m, IntRefLayer)}
    assert refs.keys() == quant_layers(fq).keys()
    seen, hooks = _capture(fq)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    for i in range(3):
        set_step(fq, i)
        set_step(ref, i)
        fq(x, torch.tensor([900, 900]))
        for name, (inp, out) in seen.items():
            layer = refs[name]
            torch.testing.assert_close(layer(inp), out, rtol=1e-5, atol=1e-5 * float(out.abs().max()))
            assert torch.equal(layer.last_codes, quant_layers(fq)[name].aq.codes(
                quant_layers(fq)[name].smoothed_input(inp)))
    for h in hooks:
        h.remove()


@torch.no_grad()
def test_whole_unet_matches_with_few_flipped_codes(export_dir):
    ref, fq = integer_reference(export_dir)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(6))
    set_step(fq, 1)
    set_step(ref, 1)
    a, b = ref(x, torch.tensor([500, 500])).sample, fq(x, torch.tensor([500, 500])).sample
    rel = float((a - b).norm() / b.norm())
    if rel > 1e-3:  # float rounding flipped codes at a boundary: count them (docs/ARCHITECTURE.md, numerics)
        seen, hooks = _capture(fq)
        fq(x, torch.tensor([500, 500]))
        flips = total = 0
        refs = {n: m for n, m in ref.named_modules() if isinstance(m, IntRefLayer)}
        ref(x, torch.tensor([500, 500]))
        for name, (inp, _) in seen.items():
            fq_codes = quant_layers(fq)[name].aq.codes(quant_layers(fq)[name].smoothed_input(inp))
            flips += int((fq_codes != refs[name].last_codes).sum())
            total += fq_codes.numel()
        for h in hooks:
            h.remove()
        # A random tiny UNet cascades each float-rounding flip through every later layer (its
        # GroupNorms amplify them): 0.5-7% of 8-bit codes flip depending on thread count. The
        # contract (< 0.1%) is checked on the trained default model in test_default_model_slow.py;
        # here: bounded, and each layer is exact given its input (test above).
        assert rel < 5e-2 and flips / total < 0.1, f"relative error {rel:.2e} with {flips}/{total} flipped codes"


def test_export_round_trip_and_reversible_swap(export_dir, tiny_unet_dir):
    from mpqdm.frontend.model_io import load_unet

    fq, plan, meta, tensors, _ = load_export(export_dir)
    assert plan == BitPlan.load(export_dir / "quant_plan.json")
    assert meta["n_steps"] == 3 and len(meta["timesteps"]) == 3
    for name, layer in quant_layers(fq).items():
        assert tensors[f"{name}.wcodes"].dtype == torch.uint8
        assert int(tensors[f"{name}.wcodes"].max()) <= 2 ** max(layer.wq.bits.tolist()) - 1
    fp = dequantize_model(fq)
    orig = load_unet(tiny_unet_dir)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fp(x, torch.tensor([10])).sample, orig(x, torch.tensor([10])).sample)


def test_tampered_export_is_refused(export_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(export_dir, bad)
    t = load_file(str(bad / "quant_params.safetensors"))
    name = next(k for k in t if k.endswith(".wstep"))
    t[name] = t[name] * 3
    save_file(t, str(bad / "quant_params.safetensors"))
    with pytest.raises(UserError, match="do not match"):
        load_export(bad)


def test_zero_calibration_steps_is_an_error():
    with pytest.raises(UserError, match="at least one sampling step"):
        CalibConfig(steps=0)
