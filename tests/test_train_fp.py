import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file

from mpqdm.frontend.train_fp import TrainConfig, train_fp

from .conftest import TINY_UNET

CFG = TrainConfig(iters=6, batch=4, ckpt_every=4, warmup=2)


def test_train_saves_diffusers_folder(tmp_path):
    info = train_fp(tmp_path / "m", CFG, device="cpu", unet_overrides=TINY_UNET, progress=False)
    assert info["iters"] == 6 and info["train_seconds"] > 0
    unet = UNet2DModel.from_pretrained(tmp_path / "m")
    assert unet.config.in_channels == 1 and unet.config.sample_size == 32
    sched = DDPMScheduler.from_pretrained(tmp_path / "m")
    assert sched.config.num_train_timesteps == 1000 and sched.config.beta_schedule == "linear"
    assert sched.config.prediction_type == "epsilon"


def test_resume_gives_the_same_weights(tmp_path):
    train_fp(tmp_path / "a", CFG, device="cpu", unet_overrides=TINY_UNET, progress=False)
    assert train_fp(tmp_path / "b", CFG, device="cpu", unet_overrides=TINY_UNET, progress=False,
                    stop_after=3) is None
    assert not (tmp_path / "b").exists()
    train_fp(tmp_path / "b", CFG, device="cpu", unet_overrides=TINY_UNET, progress=False)
    wa = load_file(str(tmp_path / "a" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "diffusion_pytorch_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)


def test_extend_adds_a_phase_and_plain_rerun_with_new_options_is_refused(tmp_path):
    import pytest

    from mpqdm.core.errors import UserError

    train_fp(tmp_path / "m", CFG, device="cpu", unet_overrides=TINY_UNET, progress=False)
    longer = TrainConfig(iters=8, batch=4, ckpt_every=4, warmup=2, lr=3e-4)
    with pytest.raises(UserError, match="--extend"):
        train_fp(tmp_path / "m", longer, device="cpu", unet_overrides=TINY_UNET, progress=False)
    info = train_fp(tmp_path / "m", longer, device="cpu", unet_overrides=TINY_UNET, progress=False, extend=True)
    assert info["iters"] == 8
    assert [(p["start"], p["end"], p["lr"]) for p in info["phases"]] == [(0, 6, 1e-3), (6, 8, 3e-4)]
    with pytest.raises(UserError, match="another configuration"):
        train_fp(tmp_path / "m", TrainConfig(iters=8, batch=8, lr=3e-4), device="cpu", unet_overrides=TINY_UNET,
                 progress=False)
