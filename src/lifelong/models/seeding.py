"""Initial weights drawn from a seed of their own, for model builders that take ``seed``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Draw initial weights from ``seed`` without touching the global random state, or (None) from the
    global state as any ``nn.Module`` does."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
