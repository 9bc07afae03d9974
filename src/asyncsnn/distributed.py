"""Data-parallel training under ``torchrun``: the process group, the sharding of each global
batch, and the reduction of sums over processes.

``torchrun --nproc-per-node N -m asyncsnn train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous in their environment; :func:`setup` joins
them into one process group (gloo on the CPU, NCCL on CUDA). Every process holds the whole
data set and walks the same shuffled order; each global batch of ``batch_size`` samples is
split between the processes as ``torch.utils.data.DistributedSampler`` splits a data set
(process ``r`` of ``N`` takes positions ``r, r + N, ...``), and every sample keeps the random
streams of its position in the global batch (:func:`shard`). With the loss weighted by each
process's share (:func:`loss_weight`) and the gradients averaged by
``DistributedDataParallel``, the same global batch gives the same update on 1 process or on N
(to float rounding). Only the process of rank 0 writes (checkpoints, metrics, plots).

Without ``torchrun`` (no ``WORLD_SIZE`` above 1), :func:`setup` returns the single-process
world and nothing here communicates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["World", "all_sum", "barrier", "loss_weight", "setup", "shard", "teardown", "world"]


@dataclass(frozen=True)
class World:
    """Who this process is: ``rank`` of ``size`` processes, ``local_rank`` on its machine,
    and the process group's ``backend`` (``None`` for a single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Whether this process writes (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


_WORLD = World()


def world() -> World:
    """The world this process joined (:func:`setup`), else the single process."""
    return _WORLD


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"the environment variable {name} must be an integer, got {value!r}"
        ) from None


def setup(device: str | torch.device = "cpu") -> tuple[World, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment; returns the
    world and this process's device (``cuda`` becomes ``cuda:LOCAL_RANK``).

    gloo serves CPU training and NCCL CUDA training. Called again, it returns the world
    already joined.
    """
    global _WORLD
    device = torch.device(device)
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return _WORLD, device
    import torch.distributed as dist

    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        device = torch.device("cuda", local if device.index is None else device.index)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _WORLD = World(rank=rank, size=size, local_rank=local, backend=dist.get_backend())
    return _WORLD, device


def teardown() -> None:
    """Leave the process group (at the end of a distributed command)."""
    global _WORLD
    if _WORLD.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _WORLD = World()


def barrier() -> None:
    """Wait for every process (nothing for a single process)."""
    if _WORLD.distributed:
        import torch.distributed as dist

        dist.barrier()


def shard(batch: int, w: World | None = None) -> torch.Tensor:
    """The positions of a global batch of ``batch`` samples this process takes:
    ``rank, rank + size, ...`` (DistributedSampler's split); all of them for one process."""
    w = w or _WORLD
    return torch.arange(w.rank, batch, w.size)


def loss_weight(local: int, batch: int, w: World | None = None) -> float:
    """The factor on this process's mean loss over its ``local`` samples that makes the
    average over processes (what DistributedDataParallel does to gradients) the mean over the
    whole global batch of ``batch`` samples: ``local * size / batch``."""
    w = w or _WORLD
    return local * w.size / batch


def all_sum(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """``values`` summed over the processes (in float64; integer counts stay exact)."""
    if not _WORLD.distributed:
        return dict(values)
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}
