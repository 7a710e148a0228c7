"""Mini-batches from in-memory tensors by index slicing, in a seeded order.

The order of an epoch is a pure function of ``(seed, experience, epoch)``, so a resumed run draws the
same batches without saving any generator state.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from lifelong.data.streams import Batch, TensorSet


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (stable across processes and Python versions)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = ((value ^ (part & 0xFFFF_FFFF_FFFF_FFFF)) * 0x100000001B3) & 0xFFFF_FFFF_FFFF_FFFF
    return value >> 1


def epoch_generator(seed: int, experience: int, epoch: int) -> torch.Generator:
    """A generator seeded from (seed, experience, epoch) alone."""
    return torch.Generator().manual_seed(derive_seed(seed, experience, epoch))


def epoch_order(n: int, seed: int, experience: int, epoch: int) -> torch.Tensor:
    """The permutation of ``range(n)`` used for one epoch of one experience."""
    return torch.randperm(n, generator=epoch_generator(seed, experience, epoch))


def batches(data: TensorSet, order: torch.Tensor, batch_size: int, start: int = 0) -> Iterator[Batch]:
    """Yield batches of ``batch_size`` along ``order``, from batch number ``start`` on.

    The last batch may be smaller. ``order`` must live on the same device as ``data``.
    """
    x, y, task = data.x, data.y, data.task
    for begin in range(start * batch_size, len(order), batch_size):
        index = order[begin:begin + batch_size]
        yield Batch(x[index], y[index], task[index])
