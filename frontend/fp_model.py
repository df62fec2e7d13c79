"""The default FP diffusion model: a small DDPM UNet2DModel for 32x32 MNIST, and its scheduler."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DModel

# Sized for ~1 GFLOP per call or less and two hours of training on 2 CPU cores.
DEFAULT_UNET = dict(
    sample_size=32,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 64, 128),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    attention_head_dim=32,
)

SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=1e-4,
    beta_end=0.02,
    prediction_type="epsilon",
    clip_sample=True,
)


def default_unet(**overrides) -> UNet2DModel:
    return UNet2DModel(**{**DEFAULT_UNET, **overrides})


def default_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULER)


# The public DDPM CIFAR-10 UNet configuration (google/ddpm-cifar10-32), for size and speed only:
# built with random weights, nothing downloaded.
DDPM_CIFAR10 = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None,
    downsample_padding=0, norm_num_groups=32, norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1,
)
DDPM_CIFAR10_PARAMS = 35_746_307


# Attention-heavy (speed only): the default UNet with attention at 16x16 as well as 8x8, 8-channel
# heads and two layers per block; most of a quantized step is attention here.
ATTENTION_HEAVY = dict(
    DEFAULT_UNET, layers_per_block=2, attention_head_dim=8,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
)


def ddpm_cifar10_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    net = UNet2DModel(**DDPM_CIFAR10)
    n = sum(p.numel() for p in net.parameters())
    assert n == DDPM_CIFAR10_PARAMS, f"DDPM CIFAR-10 UNet has {n} parameters, expected {DDPM_CIFAR10_PARAMS}"
    return net
