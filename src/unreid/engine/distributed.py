"""DistributedDataParallel plumbing: process group, device, shards and collectives.

``torchrun --nproc_per_node=N -m unreid train ...`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` joins the group
(NCCL on CUDA, gloo on CPU). Without those variables everything here is a
no-op for one process, so the trainer has a single code path.

What the trainer does with it: every rank extracts the features of its own
contiguous shard of images and :func:`gather_shards` reassembles them in
dataset order; rank 0 clusters and :func:`broadcast_object` sends the labels;
:func:`all_gather_cat` feeds the cluster-memory update with every rank's batch;
only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

import unreid.io

__all__ = [
    "DistInfo",
    "all_gather_cat",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "cleanup_distributed",
    "gather_shards",
    "init_distributed",
    "resolve_device",
    "shard_bounds",
]


@dataclass(frozen=True)
class DistInfo:
    """Position of this process: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str, info: DistInfo) -> torch.device:
    """``run.device`` (auto | cpu | cuda | cuda:N) -> the device of this process.

    Under DDP on CUDA each process takes GPU ``LOCAL_RANK``; a CUDA device is made
    the process's current one (NCCL and ``torch.cuda`` defaults use it).
    """
    rank = info.local_rank if info.enabled else 0
    device = unreid.io.resolve_device(spec, rank, setting="run.device")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init_distributed(device_spec: str) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    The backend is NCCL when the run uses CUDA and gloo otherwise. Idempotent:
    an existing group (e.g. set up by a test) is reused.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _local_rank())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    use_cuda = torch.cuda.is_available() and str(device_spec) in ("auto", "cuda")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(_local_rank())
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), _local_rank())


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous shard of ``n`` items (sizes differ by at most 1)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_shards(shard: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """Concatenate every rank's shard (rank order) into the full (n, ...) tensor.

    Args:
        shard: (n_r, ...) rows ``shard_bounds(n, r, W)`` of the full tensor, on any device.
        n: total number of rows.
        device: device the collective runs on (CUDA for NCCL, CPU for gloo).

    Returns:
        (n, ...) on ``shard``'s original device.
    """
    if not _active():
        return shard
    world = dist.get_world_size()
    sizes = [b - a for a, b in (shard_bounds(n, r, world) for r in range(world))]
    biggest = max(sizes)
    padded = torch.zeros((biggest, *shard.shape[1:]), dtype=shard.dtype, device=device)
    padded[: shard.shape[0]] = shard.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).to(shard.device)


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) of every rank concatenated in rank order -> (W*B, ...); no gradient.

    All ranks must pass the same shape (P x K batches have a fixed size).
    """
    if not _active():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s Python object on every rank (the others pass anything, e.g. None)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (e.g. BN statistics
    before extracting features, which each rank updated with its own batches)."""
    if not _active():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=src)


def barrier() -> None:
    if _active():
        dist.barrier()
