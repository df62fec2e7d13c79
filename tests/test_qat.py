"""QAT: TRD gradient flow, the time window, resume == uninterrupted, bad input."""

import copy
import math

import pytest
import torch
from safetensors.torch import load_file

from mpqdm.core.errors import UserError
from mpqdm.frontend.qat.config import QATConfig, trainable
from mpqdm.frontend.qat.train import _trajectory, qat
from mpqdm.frontend.qat.trd import FeatureTap, last_decoder_block, trd_loss, window_mean
from mpqdm.frontend.quant.calibrate import CalibConfig
from mpqdm.frontend.quant.ptq import PTQConfig, prepare, quantize
from mpqdm.frontend.sampling import ddim_schedule

CALIB = CalibConfig(samples=4, steps=4, batch=4)
PTQ = PTQConfig(wbits=2, abits=4, calib=CALIB)
SMALL = dict(iterations=4, batch=2, ckpt_every=2)


@pytest.fixture(scope="module")
def start(tiny_unet_dir):
    p = prepare(tiny_unet_dir, PTQ, progress=False)
    from mpqdm.frontend.model_io import load_unet

    return p, load_unet(tiny_unet_dir).eval()


def test_trd_alone_trains_the_quantizers(start):
    p, teacher = start
    q = copy.deepcopy(p.qunet).train()
    opt = torch.optim.SGD(trainable(q, QATConfig()), lr=1.0)
    before = {k: v.clone() for k, v in q.state_dict().items() if "aq.step" in k or "wq.step" in k}
    taps = FeatureTap(last_decoder_block(teacher)), FeatureTap(last_decoder_block(q))
    x, t = torch.randn(2, 1, 32, 32), torch.full((2,), 500)
    f_fp, f_q = [], []
    for i in range(2):
        q.mpq_step_index.value = i
        with torch.no_grad():
            teacher(x, t)
        q(x, t)
        f_fp.append(taps[0].pop())
        f_q.append(taps[1].pop())
    loss = trd_loss(f_fp, f_q)
    assert loss > 0
    loss.backward()
    grads = [m.aq.step.grad for m in q.modules() if hasattr(m, "aq")]
    assert sum(int(g is not None and g.abs().sum() > 0) for g in grads) > len(grads) // 2
    opt.step()
    after = q.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_trd_equals_the_kl_of_the_relation_softmaxes_with_its_gradient():
    fp = [torch.randn(2, 4, 3, 5, dtype=torch.float64) for _ in range(2)]
    q = [torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True) for _ in range(2)]

    def literal(fp, q):   # the definition, with autograd's own gram backward
        rel = [torch.nn.functional.normalize(window_mean(w).flatten(2), dim=1) for w in (fp, q)]
        log_p, log_q = (torch.log_softmax(f.transpose(1, 2) @ f, -1) for f in rel)
        return (log_p.exp() * (log_p - log_q)).sum(-1).sum(1).mean()

    a = trd_loss(fp, q)
    ga = torch.autograd.grad(a, q)
    b = literal([f.float() for f in fp], [f.float() for f in q])
    gb = torch.autograd.grad(b, q)
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-5)
    for x, y in zip(ga, gb, strict=True):
        assert torch.allclose(x, y.to(x.dtype), rtol=1e-4, atol=1e-6)


def test_trd_is_zero_for_equal_features_and_uses_the_window_mean():
    a, b, c = (torch.randn(2, 4, 3, 5) for _ in range(3))
    assert trd_loss([a, b], [a, b]).abs() < 1e-5
    assert torch.allclose(trd_loss([a, b], [c, b]), trd_loss([(a + b) / 2], [(c + b) / 2]))
    assert torch.equal(window_mean([a, b]), (a + b) / 2)
    assert trd_loss([a, b], [c, b]) != trd_loss([a], [c])


class CountingOpt:
    def __init__(self):
        self.steps = 0

    def zero_grad(self, set_to_none=True):
        pass

    def step(self):
        self.steps += 1


@pytest.mark.parametrize("window,steps,expected", [(2, 4, 2), (3, 4, 2), (1, 4, 4), (4, 4, 1)])
def test_optimiser_steps_once_per_window(start, window, steps, expected):
    p, teacher = start
    q = copy.deepcopy(p.qunet).train()
    trainable(q, QATConfig())
    cfg = QATConfig(window=window, trd_weight=100.0)
    sched = ddim_schedule(p.scheduler.alphas_cumprod, steps)
    opt, lrs = CountingOpt(), CountingOpt()
    taps = FeatureTap(last_decoder_block(teacher)), FeatureTap(last_decoder_block(q))
    out, trd = _trajectory(teacher, q, q, taps, torch.randn(1, 1, 32, 32), sched, cfg, opt, lrs)
    assert opt.steps == expected == lrs.steps
    assert out > 0 and trd > 0


def _export_tensors(path):
    return load_file(str(path / "quant_params.safetensors"))


def test_resume_equals_uninterrupted_run(tiny_unet_dir, tmp_path):
    cfg = QATConfig(**SMALL)
    full = qat(tiny_unet_dir, tmp_path / "full", cfg, PTQ, progress=False)
    assert full["iterations"] == 4 and (tmp_path / "full.qat" / "loss_curve.png").is_file()
    part = qat(tiny_unet_dir, tmp_path / "part", cfg, PTQ, progress=False, stop_after=3)
    assert part == {"iterations": 3, "stopped": True} and not (tmp_path / "part").exists()
    with pytest.raises(UserError, match="--resume"):
        qat(tiny_unet_dir, tmp_path / "part", cfg, PTQ, progress=False)
    with pytest.raises(UserError, match="other settings.*trd_weight"):
        qat(tiny_unet_dir, tmp_path / "part", QATConfig(**SMALL, trd_weight=1.0), PTQ, resume=True, progress=False)
    qat(tiny_unet_dir, tmp_path / "part", cfg, PTQ, resume=True, progress=False)
    a, b = _export_tensors(tmp_path / "full"), _export_tensors(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6), k
    # training moved the model away from its PTQ initialisation
    ptq_dir = quantize(tiny_unet_dir, tmp_path / "ptq", PTQ, progress=False)["out"]
    c = _export_tensors(tmp_path / "ptq")
    assert any(not torch.equal(a[k], c[k]) for k in a if k.endswith((".wcodes", ".astep")))
    assert ptq_dir


def test_lora_trains_and_merges_into_the_export(tiny_unet_dir, tmp_path):
    info = qat(tiny_unet_dir, tmp_path / "lora", QATConfig(iterations=2, batch=2, lora_rank=4,
                                                           weight_lr_scale=1.0), PTQ, progress=False)
    from mpqdm.frontend.quant.export import load_export
    from mpqdm.frontend.quant.swap import quant_layers

    unet, *_ = load_export(info["out"])          # raises if the codes and the merged weights disagree
    assert all(layer.lora is None for layer in quant_layers(unet).values())
    assert math.isfinite(info["final"]["out"])


def test_bad_input(tiny_unet_dir, tmp_path):
    cfg = QATConfig(iterations=1, batch=2)
    with pytest.raises(UserError, match="does not exist"):
        qat(tmp_path / "missing", tmp_path / "o1", cfg, PTQ, progress=False)
    with pytest.raises(UserError, match="must be >= 1"):
        QATConfig(iterations=0)
    with pytest.raises(UserError, match="leave out --compile"):      # torch.compile drops gradients
        qat(tiny_unet_dir, tmp_path / "o0", cfg, PTQ, compile_=True, progress=False)
    assert not (tmp_path / "o0").exists()
    # a plan for another model
    from mpqdm.core.bitplan import BitPlan

    ptq = tmp_path / "ptq"
    quantize(tiny_unet_dir, ptq, PTQ, progress=False)
    plan = BitPlan.load(ptq / "quant_plan.json").to_json()
    plan["model"]["sha256"] = "0" * 64
    import json

    (tmp_path / "other.json").write_text(json.dumps(plan))
    with pytest.raises(UserError, match="not this model"):
        qat(tiny_unet_dir, tmp_path / "o2", cfg, PTQ, plan_file=tmp_path / "other.json", progress=False)
    # an export with a teacher that is not its source
    other = tmp_path / "other_model"
    from mpqdm.frontend.fp_model import default_scheduler, default_unet
    from tests.conftest import TINY_UNET

    torch.manual_seed(1)
    default_unet(**TINY_UNET).save_pretrained(other)
    default_scheduler().save_pretrained(other)
    with pytest.raises(UserError, match="not the model"):
        qat(ptq, tmp_path / "o3", cfg, PTQ, teacher_dir=other, progress=False)
    # a QAT export needs its teacher named
    qat(ptq, tmp_path / "q1", cfg, PTQ, progress=False)
    with pytest.raises(UserError, match="--teacher"):
        qat(tmp_path / "q1", tmp_path / "o4", cfg, PTQ, progress=False)
    qat(tmp_path / "q1", tmp_path / "q2", cfg, PTQ, teacher_dir=tiny_unet_dir, progress=False)
    assert (tmp_path / "q2" / "quant_export.json").is_file()


def test_steps_stay_positive_after_an_optimiser_step(start):
    from mpqdm.frontend.qat.config import keep_steps_positive
    from mpqdm.frontend.quant.swap import quant_layers

    q = copy.deepcopy(start[0].qunet)
    layer = next(iter(quant_layers(q).values()))
    with torch.no_grad():
        layer.aq.step[0] = -0.01
        layer.wq.step[1] = -0.02
    keep_steps_positive(q)
    assert layer.aq.step.min() > 0 and layer.wq.step.min() > 0
