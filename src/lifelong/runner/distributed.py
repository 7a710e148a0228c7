"""Data-parallel training on ``torch.distributed``: the checks a data-parallel run must pass, the
process group torchrun describes, and each process's device. Which process this is, its shard of the
data and the collectives the runner and strategies need are :class:`lifelong.world.World`.

Launched with ``torchrun --nproc_per_node=N -m lifelong run ...`` (multi-node with torchrun's usual
``--nnodes``/``--rdzv_*`` arguments), each process trains the same model on its own shard of every
experience. Gradients are averaged over processes during every backward pass, by bucketed
all-reduces that overlap it, or after it with one all-reduce (:mod:`lifelong.runner.gradsync`, which
says why the runner does it itself rather than through DistributedDataParallel); or the model's blocks
are sharded with FSDP2 (:mod:`lifelong.runner.sharding`). :class:`Parallelism` holds these settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from lifelong.errors import ConfigError
from lifelong.world import World

if TYPE_CHECKING:
    from lifelong.config import OptimConfig


SHARDING = ("none", "fsdp")
"""Values of ``run.shard``."""


@dataclass(frozen=True)
class Parallelism:
    """How a data-parallel run communicates (``run.overlap_grad_sync``, ``run.bucket_mb``, ``run.shard``)."""

    overlap_grad_sync: bool = True
    """Start each bucket's all-reduce during backward
    (:class:`~lifelong.runner.gradsync.OverlappedAllReduce`); False: one all-reduce after backward."""
    bucket_mb: float = 25.0
    """Megabytes of gradients per bucket of the overlapped all-reduce."""
    shard: str = "none"
    """``fsdp``: shard the model's blocks over the ranks with FSDP2 (:mod:`lifelong.runner.sharding`)."""

    def __post_init__(self) -> None:
        if not self.bucket_mb > 0:
            raise ConfigError(f"run.bucket_mb must be a positive number of megabytes, got {self.bucket_mb!r}")
        if self.shard not in SHARDING:
            raise ConfigError(f"run.shard must be one of {', '.join(SHARDING)}, got {self.shard!r}")


def check_distributed(optim: OptimConfig, resume_run: int | None) -> None:
    """Refuse, before training, settings that would let data-parallel ranks take different numbers of
    steps (a strategy whose state is not kept consistent across ranks is refused by its capabilities,
    :func:`lifelong.runner.validation.check_capabilities`)."""
    if optim.batch_size_test != "none":
        raise ConfigError("optim.batch_size_test (adaptive batch size) is not supported in data-parallel runs: "
                          "ranks would choose different batch sizes; remove it or run in one process")
    if optim.max_seconds is not None:
        raise ConfigError("optim.max_seconds is not supported in data-parallel runs: ranks would stop at "
                          "different steps; use optim.max_steps or optim.max_samples")
    if resume_run is not None:
        raise ConfigError("--resume is not supported for data-parallel runs yet; resume in one process")


def init_from_environment(device: torch.device) -> World:
    """The world torchrun describes in ``RANK``/``WORLD_SIZE`` (a single process when absent), with the
    process group initialised: gloo on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK``)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank = int(os.environ.get("RANK", "0"))
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank=rank, size=size)


def local_device(device: torch.device) -> torch.device:
    """Under torchrun on CUDA, the GPU of this process (``LOCAL_RANK``); otherwise ``device``."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ and device.index is None:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device
