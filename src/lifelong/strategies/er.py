"""Experience replay with a reservoir buffer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Stream
from lifelong.errors import ConfigError
from lifelong.strategies.base import Strategy
from lifelong.strategies.buffers import ReservoirBuffer


@dataclass
class ER(Strategy):
    """Experience replay (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning"):
    each new batch is concatenated with a batch drawn from a reservoir memory of the stream, and the
    model is trained with cross-entropy on both; the new samples are then offered to the reservoir.

    Data-parallel: each rank keeps a reservoir of its share of ``buffer_size`` over its own shard of
    the stream, so the union over ranks is a uniform sample of the stream of the configured size."""

    supports_distributed: ClassVar[bool] = True

    buffer_size: int = 200
    """Total number of samples kept (not per class)."""
    replay_batch_size: int = 0
    """Replayed samples per step; 0 means as many as the new batch holds."""
    buffer: ReservoirBuffer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.buffer_size < 0:
            raise ConfigError(f"strategy.buffer_size must be >= 0, got {self.buffer_size}")
        if self.replay_batch_size < 0:
            raise ConfigError(f"strategy.replay_batch_size must be >= 0, got {self.replay_batch_size}")

    def setup(self, stream: Stream, seed: int) -> None:
        super().setup(stream, seed)
        self.buffer = ReservoirBuffer(self.world.share(self.buffer_size), self.generator)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y, task = batch
        if len(self.buffer):
            replay = self.buffer.sample(self.replay_batch_size or len(y))
            x = torch.cat([x, replay["x"]])
            y = torch.cat([y, replay["y"]])
            task = torch.cat([task, replay["task"]])
        loss = F.cross_entropy(self.logits(model, x, task), y)
        self.buffer.add(x=batch.x, y=batch.y, task=batch.task)
        return loss

    def memory_size(self) -> int:
        return len(self.buffer)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.buffer.load_state_dict(state["buffer"])
