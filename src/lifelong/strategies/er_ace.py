"""Experience replay with asymmetric cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch
from lifelong.strategies.base import Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.memory import (
    BufferSize,
    MemoryBudget,
    MemoryKeeps,
    ReplayBatchSize,
    ReservoirMemory,
    check_memory_keeps,
)


def incoming_class_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logits (B, C) with every class absent from ``labels`` (B,) set to the lowest value."""
    present = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    present[labels] = True
    return logits.masked_fill(~present, torch.finfo(logits.dtype).min)


@dataclass
class ERACE(Strategy):
    """ER-ACE (Caccia et al., ICLR 2022, "New Insights on Reducing Abrupt Representation Change in
    Online Continual Learning"): the incoming batch's cross-entropy only competes among the classes
    present in that batch, so new classes do not push the logits of old classes down (the cause of
    the abrupt drift of old features); replayed samples, drawn from a reservoir memory of the stream,
    use cross-entropy over all classes."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

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
        logits = incoming_class_logits(self.logits(model, batch.x, batch.task), batch.y)  # (B, C)
        loss = F.cross_entropy(logits, batch.y)
        if len(self.memory):
            replay = self.memory.replay(self.replay_batch_size or len(batch.y))
            loss = loss + F.cross_entropy(self.logits(model, replay["x"], replay["task"]), replay["y"])
        self.memory.remember(batch)
        return loss

    def memory_size(self) -> int:
        return len(self.memory)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.memory.load_state_dict(state["buffer"])
