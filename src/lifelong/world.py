"""This process's place among the data-parallel ranks: :class:`World`, with its shard of the data and
the collectives (all-reduce, broadcast) the runner and the strategies need.

It lives in the bottom layer, beside ``config`` and ``metrics``, because two layers share it: every
strategy carries a ``world`` (``strategies``) and the runner builds one from torchrun's environment
(``runner``, see :mod:`lifelong.runner.distributed`). Anything two layers share lives in the lower
one, so it depends on torch alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
