import numpy as np
import pytest
import scipy.stats
import torch

from mpqdm.core.bitplan import Group, LayerPlan
from mpqdm.core.errors import UserError
from mpqdm.frontend.quant.layers import QuantLayer
from mpqdm.frontend.quant.omq import kurtosis, omq_split
from mpqdm.frontend.quant.quantizer import ActQuantizer, StepIndex, WeightQuantizer


def test_weight_codes_round_trip_and_range():
    torch.manual_seed(0)
    w = torch.randn(5, 3, 3, 3)
    q = WeightQuantizer(torch.tensor([1, 2, 3, 4, 8]))
    q.init_range(w, "mse")
    codes = q.codes(w)
    for c, b in enumerate([1, 2, 3, 4, 8]):
        assert 0 <= codes[c].min() and codes[c].max() <= 2 ** b - 1
        assert codes[c].unique().numel() <= 2 ** b
    z = q.zero_points().view(-1, 1, 1, 1)
    deq = (codes - z).float() * q.step.detach().view(-1, 1, 1, 1)
    torch.testing.assert_close(q(w), deq, rtol=0, atol=1e-6)
    # more bits never hurt the MSE-searched quantizer on the same channel
    errs = []
    for b in range(1, 9):
        qb = WeightQuantizer(torch.full((5,), b))
        qb.init_range(w, "mse")
        errs.append(float((qb(w) - w).pow(2).sum().detach()))
    assert all(a > b for a, b in zip(errs, errs[1:], strict=False))


def test_weight_gradients_reach_step_zero_and_weight():
    torch.manual_seed(1)
    w = torch.randn(4, 64, requires_grad=True)
    q = WeightQuantizer(torch.tensor([2, 2, 3, 3]))
    q.init_range(w.detach(), "mse")  # clipped values: the zero point gets a gradient only through them
    (q(w) * torch.randn(4, 64)).sum().backward()
    assert q.step.grad.abs().sum() > 0 and q.zero.grad.abs().sum() > 0 and w.grad.abs().sum() > 0


def test_bits_outside_range_rejected():
    with pytest.raises(UserError, match="1..8"):
        WeightQuantizer(torch.tensor([2, 9]))
    with pytest.raises(UserError, match="1..8"):
        ActQuantizer(0, 4, StepIndex())


def test_activation_params_selected_by_step_index():
    idx = StepIndex()
    aq = ActQuantizer(4, 3, idx)
    for i, (lo, hi) in enumerate([(-1, 1), (-4, 4), (0, 0.5)]):
        aq.set_range(i, lo, hi)
    x = torch.linspace(-3, 3, 101)
    outs = []
    for i in range(3):
        idx.value = i
        s, z = aq.step[i].item(), round(aq.zero[i].item())
        ref = (torch.clamp(torch.round(x / s) + z, 0, 15) - z) * s
        outs.append(aq(x).detach())
        torch.testing.assert_close(outs[-1], ref)
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])
    idx.value = 3
    with pytest.raises(IndexError, match="outside the 3 calibrated steps"):
        aq(x)


def test_one_bit_and_three_bit_group_in_one_layer():
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(5, 6, 3, padding=1)
    plan = LayerPlan(order=(4, 0, 5, 1, 3, 2), groups=(Group(0, 2, 3), Group(2, 6, 1)), abits=8)
    bits = plan.bits_per_channel()
    assert bits == (3, 1, 1, 1, 3, 1)
    layer = QuantLayer(conv, torch.tensor(bits), 8, 1, StepIndex())
    layer.wq.init_range(layer.smoothed_weight(), "mse")
    codes = layer.wq.codes(layer.smoothed_weight())
    for c, b in enumerate(bits):
        assert codes[c].max() <= 2 ** b - 1
    assert codes[4].unique().numel() > 2 and codes[1].unique().numel() <= 2
    layer.aq.set_range(0, -3, 3)
    y = layer(torch.randn(2, 5, 7, 9))
    assert y.shape == (2, 6, 7, 9) and torch.isfinite(y).all()


def test_kurtosis_matches_scipy():
    torch.manual_seed(3)
    w = torch.randn(7, 4, 3, 3) * torch.rand(7, 1, 1, 1)
    w[2, 0, 0, 0] = 25.0  # an outlier channel
    ours = kurtosis(w).numpy()
    ref = scipy.stats.kurtosis(w.reshape(7, -1).double().numpy(), axis=1, fisher=False)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    assert ours.argmax() == 2


@pytest.mark.parametrize("n", [2, 3, 4])
def test_omq_rule_keeps_average_bits_and_ranks_by_kurtosis(n):
    rng = torch.Generator().manual_seed(n)
    c_out = 40
    kurt = torch.rand(c_out, generator=rng) * 10
    bits = [n - 1, n, n + 1]
    # costs that favour splitting: extra bits help the high-kurtosis channels a lot
    costs = torch.stack([torch.full((c_out,), 4.0 ** -(b - n)) * (1 + kurt) for b in bits]).double()
    plan = omq_split(kurt, costs, bits, n, 4, group=4)
    assert plan.avg_wbits == pytest.approx(n)
    assert len(plan.groups) == 3
    per = plan.bits_per_channel()
    top = int(kurt.argmax())
    low = int(kurt.argmin())
    assert per[top] == n + 1 and per[low] == n - 1
    assert list(plan.order) == torch.argsort(kurt, descending=True).tolist()
    # k = 0 when splitting does not pay
    flat = torch.stack([torch.full((c_out,), 1.0) * (2 if b != n else 1) for b in bits]).double()
    assert omq_split(kurt, flat, bits, n, 4, group=4).groups == (Group(0, c_out, n),)


def _round_ste(x):
    return (x.round() - x).detach() + x


def _literal_fake_quant(x, s, z, qmax):
    """The definition FakeQuant writes out: straight-through rounding by autograd."""
    z = _round_ste(z)
    q = torch.clamp(_round_ste(x / s) + z, torch.zeros_like(qmax), qmax)
    return (q - z) * s


@pytest.mark.parametrize("shape,param_shape",
                         [((3, 5, 7, 2), ()), ((4, 3, 5), (4, 1, 1)), ((6, 9, 3, 3), (6, 1, 1, 1))])
def test_fake_quant_matches_straight_through_rounding(shape, param_shape):
    from mpqdm.frontend.quant.quantizer import FakeQuant

    g = torch.Generator().manual_seed(3)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2)
    x.view(-1)[::7] = 0.5 * torch.arange(x.view(-1)[::7].numel(), dtype=torch.float64) % 5   # exact codes, ties
    s = (torch.rand(param_shape, generator=g, dtype=torch.float64) * 0.3 + 0.2).requires_grad_()
    z = (torch.rand(param_shape, generator=g, dtype=torch.float64) * 6).requires_grad_()
    qmax = torch.full(param_shape, 15.0, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = FakeQuant.apply(xa, s, z, qmax)
    b = _literal_fake_quant(xb, s, z, qmax)
    assert torch.equal(a, b)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    ga = torch.autograd.grad((a * w).sum(), (xa, s, z))
    gb = torch.autograd.grad((b * w).sum(), (xb, s, z))
    for u, v in zip(ga, gb, strict=True):
        assert torch.allclose(u, v, rtol=1e-12, atol=1e-12)
    assert bool((ga[0] == 0).any()) and bool((ga[0] != 0).any())    # both sides of the clamp were hit
