"""torchrun / DistributedDataParallel plumbing: rank info, process group, sharding without duplicates."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup(device_spec: str) -> torch.device:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA) and pick the device."""
    from visionlab.utils.runtime import select_device

    device = select_device(device_spec)
    if device.type == "cuda" and world_size() > 1:
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's value on every rank (e.g. the auto-incremented run folder)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list (rank order) on every rank."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_across_ranks(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def mean_across_ranks(value: float, device: torch.device) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item() / dist.get_world_size())


def all_ranks_true(flag: bool, device: torch.device) -> bool:
    """True only if ``flag`` is True on every rank (one tiny all-reduce; every rank must call it)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(t)
    return t.item() == 0


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (e.g. BatchNorm running statistics) on every rank."""
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class ShardSampler(Sampler[int]):
    """Every index exactly once across ranks (rank r takes r, r+W, ...): no padding duplicates, so
    metrics reduced across ranks equal the single-process ones. Used for evaluation and pseudo-labelling."""

    def __init__(self, length: int, num_replicas: int | None = None, rank_: int | None = None):
        self.length = length
        self.num_replicas = num_replicas if num_replicas is not None else world_size()
        self.rank = rank_ if rank_ is not None else rank()

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))


class FixedShardSampler(Sampler[int]):
    """Training under DDP: rank r always reads the same 1/W of the data (one seeded split, equal sizes),
    shuffled anew every epoch (``set_epoch``). So each rank decodes and caches only its own share, while
    the all-reduced gradient still covers every sample of an epoch."""

    def __init__(self, length: int, seed: int, num_replicas: int | None = None, rank_: int | None = None):
        replicas = num_replicas if num_replicas is not None else world_size()
        r = rank_ if rank_ is not None else rank()
        order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
        per_rank = length // replicas  # equal shares: every rank runs the same number of steps
        self.indices = order[r * per_rank:(r + 1) * per_rank]
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        return iter([self.indices[i] for i in torch.randperm(len(self.indices), generator=g).tolist()])

    def __len__(self) -> int:
        return len(self.indices)
