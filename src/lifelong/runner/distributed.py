"""Data-parallel training on ``torch.distributed``: the checks a data-parallel run must pass, the
process group torchrun describes, and each process's device. Which process this is, its shard of the
data and the collectives the runner and strategies need are :class:`lifelong.world.World`.

Launched with ``torchrun --nproc_per_node=N -m lifelong run ...`` (multi-node with torchrun's usual
``--nnodes``/``--rdzv_*`` arguments), each process trains the same model on its own shard of every
experience. Gradients are averaged over processes after every backward pass with one all-reduce of a
flat buffer, which is the arithmetic DistributedDataParallel performs; the runner does it itself so
that strategies keep seeing the plain model (DDP's wrapper renames every parameter ``module.*`` and
requires each forward pass to go through it, which the regularisers that index parameters by name,
and the feature methods that call ``model.backbone`` directly, would silently break).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from lifelong.errors import ConfigError
from lifelong.world import World

if TYPE_CHECKING:
    from lifelong.config import OptimConfig
    from lifelong.strategies.base import Strategy


def check_distributed(strategy: Strategy, optim: OptimConfig, resume_run: int | None) -> None:
    """Refuse, before training, what would run wrong or hang when data-parallel: a strategy whose state
    is not kept consistent across ranks, and settings that let ranks take different numbers of steps."""
    name = type(strategy).__name__
    if not strategy.supports_distributed:
        raise ConfigError(f"strategy {name!r} cannot run data-parallel yet (its memory or statistics are not "
                          "shared across ranks); run it in one process")
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
