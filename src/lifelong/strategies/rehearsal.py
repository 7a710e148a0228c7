"""The shared part of the reservoir-replay strategies (ER, ER-ACE, A-GEM, UER, DER, DER++): a memory
of ``buffer_size`` samples drawn by reservoir sampling with the strategy's generator, the replay
batch drawn from it, its size, and its checkpoint state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lifelong.data.streams import Batch
from lifelong.errors import ConfigError
from lifelong.strategies.base import Strategy, StrategyContext
from lifelong.strategies.parts.memory import (
    ReservoirBuffer,
    check_memory_keeps,
    memory_source,
)


@dataclass
class ReservoirReplay(Strategy):
    """Abstract: a strategy that keeps a reservoir memory of the stream (Vitter 1985; Chaudhry et al.
    2019). Concrete strategies say how the memory enters the loss in ``observe``.

    Data-parallel: each rank keeps a reservoir of its share of ``buffer_size`` over its own shard of
    the stream, so the union over ranks is a uniform sample of the stream of the configured size."""

    buffer_size: int = 200
    """Total number of samples kept (not per class)."""
    replay_batch_size: int = 0
    """Replayed samples per step; 0 means as many as the new batch holds."""
    memory_keeps: str = "samples"
    """``samples``, or ``positions`` in the lazy dataset the stream is read from (8 bytes a sample; each
    replay reads its samples again), for memories larger than the host's RAM."""
    buffer: ReservoirBuffer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.buffer_size < 0:
            raise ConfigError(f"strategy.buffer_size must be >= 0, got {self.buffer_size}")
        if self.replay_batch_size < 0:
            raise ConfigError(f"strategy.replay_batch_size must be >= 0, got {self.replay_batch_size}")
        check_memory_keeps(self.memory_keeps)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.buffer = ReservoirBuffer(self.world.share(self.buffer_size), self.local_generator,
                                      memory_source(self.memory_keeps, context.stream))

    def remember(self, batch: Batch, **extra: torch.Tensor) -> None:
        """Offer the new batch to the memory: its un-augmented inputs (or its positions in the dataset),
        labels, task ids and ``extra`` columns (DER's logits)."""
        inputs = batch.stored if self.buffer.source is None else batch.view
        assert inputs is not None, "a memory that keeps positions is only set up on a lazy stream"
        self.buffer.add(x=inputs, y=batch.y, task=batch.task, **extra)

    def replay(self, new_samples: int) -> dict[str, torch.Tensor]:
        """A batch from memory: ``replay_batch_size`` rows, or as many as the new batch holds, its inputs
        augmented as the run's training batches are (:meth:`Strategy.augment`)."""
        return self.as_replayed(self.buffer.sample(self.replay_batch_size or new_samples))

    def memory_size(self) -> int:
        return len(self.buffer)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.buffer.load_state_dict(state["buffer"])
