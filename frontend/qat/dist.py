"""Data parallelism under torchrun: gloo on CPU, NCCL on CUDA; gradients averaged by hand
(DDP's reducer expects one forward per backward, a TRD window has several)."""

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


def broadcast_module(world: World, module: torch.nn.Module) -> None:
    if world.size > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, 0)


def average_grads(world: World, params) -> None:
    if world.size == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world.size


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
