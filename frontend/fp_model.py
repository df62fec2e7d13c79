"""The default FP diffusion model: a small DDPM UNet2DModel for 32x32 MNIST, and its scheduler."""

from __future__ import annotations

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
