"""Single-process or ``torchrun`` multi-process training: rank, device and process group.

Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set) the process
group is initialised with NCCL on CUDA GPUs (one per local rank) and gloo on CPU. Only rank 0
logs, validates and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed", "shutdown_distributed"]


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_distributed(device: str = "auto") -> DistributedContext:
    """Read the torchrun environment and start the process group when there is more than one
    process. ``device``: ``auto`` (CUDA if present), ``cuda`` or ``cpu``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, target)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
