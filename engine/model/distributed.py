"""PyTorch DDP under torchrun: joining the job, and the few collective steps training needs.

    torchrun --nproc_per_node 4 -m engine.cli train DATASET --out RUN     # one process per GPU
    d = init_distributed("auto")      # Dist(rank, world, local_rank, active); rank 0 of 1 without torchrun

Without torchrun (WORLD_SIZE unset or 1) every helper here is a no-op, so the training loop reads
the same either way. nccl on GPUs, gloo on CPUs (the tests run two gloo processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    """Where this process stands in a torchrun job (rank 0 of 1 when not distributed)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False          # True when we initialised a process group (DDP)


def init_distributed(device: str) -> Dist:
    """Join the torchrun job if there is one (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = str(device) == "cuda" or (str(device) == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank=rank, world=world, local_rank=local_rank, active=True)


def shutdown(d: Dist) -> None:
    """Leave the job (the process group we initialised)."""
    if d.active:
        import torch.distributed as dist
        dist.destroy_process_group()


def shared_random_seed(d: Dist) -> int:
    """A fresh random seed, the same on every rank (rank 0's): the data order depends on it."""
    seed = torch.tensor([int.from_bytes(os.urandom(4), "little")], dtype=torch.int64)
    if d.active:
        import torch.distributed as dist
        if dist.get_backend() == "nccl":
            seed = seed.cuda()
        dist.broadcast(seed, src=0)
    return int(seed.item())


def barrier(d: Dist) -> None:
    """Wait for every rank (rank 0 writes checkpoints while the others wait)."""
    if d.active:
        import torch.distributed as dist
        dist.barrier()


def mean_over_ranks(values: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean of `values` over all ranks, in place (every rank must call it)."""
    if d.active:
        import torch.distributed as dist
        dist.all_reduce(values)                              # SUM: gloo has no AVG
        values /= d.world
    return values


def wrap(module: torch.nn.Module, device: torch.device, d: Dist) -> torch.nn.Module:
    """`module` in DistributedDataParallel when in a job (gradients all-reduced), else itself."""
    if not d.active:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
