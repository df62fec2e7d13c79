import os

import pytest
import torch

TINY_UNET = dict(
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
    attention_head_dim=8,
)


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(int(os.environ.get("MPQDM_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def tiny_unet_dir(tmp_path_factory):
    """A tiny random 1-channel 32x32 UNet2DModel saved as a diffusers folder with its scheduler."""
    from mpqdm.frontend.fp_model import default_scheduler, default_unet

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_unet")
    default_unet(**TINY_UNET).save_pretrained(d)
    default_scheduler().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_omq_export(tiny_unet_dir, tmp_path_factory):
    """PTQ export of the tiny UNet with OMQ's mixed 1/2/3-bit groups at A4 (3 calibrated steps)."""
    from mpqdm.frontend.quant.calibrate import CalibConfig
    from mpqdm.frontend.quant.ptq import PTQConfig, quantize

    out = tmp_path_factory.mktemp("exp") / "omq-w2a4"
    quantize(tiny_unet_dir, out, PTQConfig(plan="omq", wbits=2, abits=4, calib=CalibConfig(samples=4, steps=3, batch=4,
             keep_every=1), group=2), device="cpu", progress=False)
    return out


@pytest.fixture(scope="session", params=[("uniform", 4, 8), ("omq", 2, 4)], ids=["W4A8", "OMQ-W2A4"])
def export_dir(request, tiny_unet_dir, tmp_path_factory):
    """PTQ exports of the tiny UNet: uniform W4A8, and OMQ W2A4 with groups of 2 channels."""
    from mpqdm.frontend.quant.calibrate import CalibConfig
    from mpqdm.frontend.quant.ptq import PTQConfig, quantize

    plan, wb, ab = request.param
    out = tmp_path_factory.mktemp("exp") / plan
    quantize(tiny_unet_dir, out, PTQConfig(plan=plan, wbits=wb, abits=ab, group=2,
             calib=CalibConfig(samples=4, steps=3, batch=4, keep_every=1)), device="cpu", progress=False)
    return out
