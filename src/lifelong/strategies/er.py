"""Experience replay with a reservoir memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.data.streams import Batch
from lifelong.strategies.base import BOTH_OBJECTIVES, Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.memory import (
    BufferSize,
    MemoryBudget,
    MemoryKeeps,
    ReplayBatchSize,
    ReservoirMemory,
    check_memory_keeps,
)


@dataclass
class ER(Strategy):
    """Experience replay (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning"):
    each new batch is concatenated with a batch drawn from a reservoir memory of the stream, and the
    model is trained with cross-entropy on both; the new samples are then offered to the reservoir."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(objectives=BOTH_OBJECTIVES, distributed=True, sharding=True)

    buffer_size: BufferSize = 200
    replay_batch_size: ReplayBatchSize = 0
    memory_keeps: MemoryKeeps = "samples"
    memory_budget_bytes: MemoryBudget = 0
    memory: ReservoirMemory = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_memory_keeps(self.memory_keeps)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.memory = ReservoirMemory(self, self.buffer_size, self.memory_keeps, self.memory_budget_bytes)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y, task = batch.x, batch.y, batch.task  # (B, ...), (B,), (B,)
        if len(self.memory):
            replay = self.memory.replay(self.replay_batch_size or len(y))  # (R, ...)
            x = torch.cat([x, replay["x"]])
            y = torch.cat([y, replay["y"]])
            task = torch.cat([task, replay["task"]])
        loss = self.loss(model, x, y, task)
        self.memory.remember(batch)
        return loss

    def memory_size(self) -> int:
        return len(self.memory)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.memory.load_state_dict(state["buffer"])
