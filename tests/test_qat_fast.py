"""QAT's fast path (frontend.qat.fast): the plain path's loss and gradients, the shared teacher cache."""

import copy

import pytest
import torch

from mpqdm.core.errors import UserError
from mpqdm.frontend.model_io import load_unet
from mpqdm.frontend.qat.config import QATConfig, trainable
from mpqdm.frontend.qat.fast import FastLoop
from mpqdm.frontend.qat.teacher import run_teacher
from mpqdm.frontend.qat.train import _trajectory, qat
from mpqdm.frontend.qat.trd import FeatureTap, last_decoder_block
from mpqdm.frontend.quant.calibrate import CalibConfig
from mpqdm.frontend.quant.ptq import PTQConfig, prepare
from mpqdm.frontend.quant.swap import set_step
from mpqdm.frontend.sampling import ddim_schedule

PTQ = PTQConfig(wbits=2, abits=4, calib=CalibConfig(samples=4, steps=4, batch=4))


@pytest.fixture(scope="module")
def start(tiny_unet_dir):
    return prepare(tiny_unet_dir, PTQ, progress=False), load_unet(tiny_unet_dir).eval().requires_grad_(False)


def _run(path, p, teacher, cfg, sched, noises):
    """Two iterations by one path in float64 (so that no activation sits within rounding noise of a
    quantization boundary); returns the losses and the trained state."""
    q, t = copy.deepcopy(p.qunet).double().train(), copy.deepcopy(teacher).double()
    if path == "fast":
        q.to(memory_format=torch.channels_last)
        t.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(trainable(q, cfg), fused=path == "fast" or None)
    lrs = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / 10)
    taps = FeatureTap(last_decoder_block(t)), FeatureTap(last_decoder_block(q))
    losses = []
    for x in noises:
        if path == "plain":
            losses.append(_trajectory(t, q, q, taps, x, sched, cfg, opt, lrs))
        else:
            steps = run_teacher(t, x, sched, taps[0])
            losses.append(FastLoop(q, q, taps[1], cfg, compile_=False).trajectory(steps, sched, opt, lrs))
    return losses, q.state_dict()


@pytest.mark.parametrize("window", [2, 3])
def test_fast_path_gives_the_plain_paths_losses_and_weights(start, window):
    p, teacher = start
    cfg = QATConfig(batch=2, window=window, trd_weight=100.0)
    sched = ddim_schedule(p.scheduler.alphas_cumprod, 4, p.scheduler.config.num_train_timesteps)
    noises = [torch.randn(2, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
              for s in (1, 2)]
    plain, a = _run("plain", p, teacher, cfg, sched, noises)
    fast, b = _run("fast", p, teacher, cfg, sched, noises)
    assert plain[0][0] > 0 and plain[0][1] > 0
    for (o1, r1), (o2, r2) in zip(plain, fast, strict=True):
        assert o2 == pytest.approx(o1, rel=1e-9) and r2 == pytest.approx(r1, rel=1e-9)
    moved = [k for k in a if not torch.equal(a[k], p.qunet.state_dict()[k].double())]
    assert moved, "training changed nothing"
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-8, atol=1e-12), k


def test_per_sample_steps_equal_one_step_at_a_time(start):
    p, _ = start
    q = copy.deepcopy(p.qunet).double().eval()
    x = torch.randn(4, 1, 32, 32, dtype=torch.float64)
    t = torch.tensor([900, 900, 400, 400])
    with torch.no_grad():
        set_step(q, torch.tensor([0, 0, 2, 2]))
        both = q(x, t).sample
        set_step(q, 0)
        first = q(x[:2], t[:2]).sample
        set_step(q, 2)
        second = q(x[2:], t[2:]).sample
    assert torch.allclose(both, torch.cat([first, second]), rtol=1e-10, atol=1e-12)
    set_step(q, 1)
    assert not torch.allclose(q(x[2:], t[2:]).sample, second)    # the step index matters


def test_teacher_cache_is_shared_and_keyed(tiny_unet_dir, tmp_path, monkeypatch):
    cfg = QATConfig(iterations=2, batch=2, ckpt_every=2, trd_weight=10.0)
    cache = tmp_path / "teacher"
    base = qat(tiny_unet_dir, tmp_path / "a", cfg, PTQ, progress=False)
    first = qat(tiny_unet_dir, tmp_path / "b", cfg, PTQ, progress=False, teacher_cache=cache)
    (folder,) = cache.iterdir()
    assert sorted(f.name for f in folder.iterdir()) == ["000000.feats.pt", "000000.pt", "000001.feats.pt",
                                                         "000001.pt", "key.json"]
    import mpqdm.frontend.qat.train as train

    def no_teacher(*a, **k):
        raise AssertionError("the teacher ran although its trajectories are cached")

    monkeypatch.setattr(train, "run_teacher", no_teacher)
    second = qat(tiny_unet_dir, tmp_path / "c", cfg, PTQ, progress=False, teacher_cache=cache)
    assert base["final"] == first["final"] == second["final"]
    # another seed is another folder; a folder whose key was changed is refused
    monkeypatch.undo()
    qat(tiny_unet_dir, tmp_path / "d", QATConfig(iterations=1, batch=2, seed=1), PTQ, progress=False,
        teacher_cache=cache)
    assert len(list(cache.iterdir())) == 2
    (folder / "key.json").write_text('{"version": 0}')
    with pytest.raises(UserError, match="another key"):
        qat(tiny_unet_dir, tmp_path / "e", cfg, PTQ, progress=False, teacher_cache=cache)
