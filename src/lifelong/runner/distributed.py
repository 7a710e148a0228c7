"""Data-parallel training on ``torch.distributed``: which process this is, its shard of the data, and
the collectives the runner and strategies need.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from lifelong.errors import ConfigError

if TYPE_CHECKING:
    from lifelong.config import OptimConfig
    from lifelong.strategies.base import Strategy


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` processes; ``World()`` is a single process."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the results store, checkpoints and progress output."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, total: int) -> int:
        """This rank's part of ``total`` (e.g. replay memory): the parts sum to ``total``."""
        return total // self.size + (1 if self.rank < total % self.size else 0)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's indices of an epoch order shared by every rank, as DistributedSampler deals them:
        the order is padded by wrapping around to a multiple of the world size, so every rank gets the
        same number of samples (and so of steps), then rank r takes positions r, r + size, ..."""
        if not self.distributed:
            return order
        padded = -len(order) % self.size
        if padded:
            order = torch.cat([order, order[:padded]])
        return order[self.rank::self.size]

    def shard_length(self, n: int) -> int:
        """Samples per rank of an epoch of ``n`` samples (after :meth:`shard`'s padding)."""
        return -(-n // self.size)

    def portion(self, n: int) -> torch.Tensor:
        """Indices ``rank, rank + size, ...`` of ``range(n)``, unpadded: this rank's part of a set for
        estimates that are then averaged with :meth:`average` (weighted by the part's size)."""
        return torch.arange(self.rank, n, self.size)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over every rank, in place, and return it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over ranks (one all-reduce of a flat buffer). A parameter
        without a gradient on this rank counts as a zero gradient, so every rank reduces the same
        buffer."""
        if not self.distributed:
            return
        params = [p for p in parameters if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.size
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    def average(self, values: Mapping[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
        """Weighted mean over ranks of per-rank estimates (e.g. a Fisher diagonal on each rank's shard,
        weighted by the shard's size): every rank gets the same values."""
        if not self.distributed:
            return dict(values)
        total = self.all_reduce_sum(torch.tensor([float(weight)], dtype=torch.float64))
        out = {}
        for key, value in values.items():
            summed = self.all_reduce_sum(value.detach().to(torch.float64) * weight)
            out[key] = (summed / total).to(value.dtype)
        return out

    def broadcast(self, tensors: Iterable[torch.Tensor]) -> None:
        """Copy rank 0's tensors to every rank (e.g. the initial model weights)."""
        if self.distributed:
            for tensor in tensors:
                dist.broadcast(tensor, src=0)


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
