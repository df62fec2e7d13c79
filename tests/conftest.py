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
    from frontend.fp_model import default_scheduler, default_unet

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_unet")
    default_unet(**TINY_UNET).save_pretrained(d)
    default_scheduler().save_pretrained(d)
    return d
