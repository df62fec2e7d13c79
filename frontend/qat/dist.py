"""Data parallelism under torchrun: PyTorch's DDP, gloo on CPU, NCCL on CUDA."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def local_device(world: World, device: torch.device) -> torch.device:
    if world.size > 1 and device.type == "cuda":
        idx = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(idx)
        return torch.device("cuda", idx)
    return device


def wrap(world: World, module: torch.nn.Module) -> torch.nn.Module:
    """DDP around the trained model (it broadcasts rank 0's state and averages gradients); the
    several forwards of a TRD window before one backward are fine: each parameter's gradient
    reaches DDP's hook once per backward."""
    if world.size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module)


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
