"""UER: cosine logits for new data, dot-product logits for replay."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Gt
from lifelong.data.streams import Batch
from lifelong.models.nets import split_model
from lifelong.strategies.base import Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.contrastive import cosine_logits
from lifelong.strategies.parts.memory import (
    BufferSize,
    MemoryBudget,
    MemoryKeeps,
    ReplayBatchSize,
    ReservoirMemory,
    check_memory_keeps,
)


@dataclass
class UER(Strategy):
    """Unbiased Experience Replay (Lin et al., ACM MM 2023, "UER: A Heuristic Bias Addressing Approach
    for Online Continual Learning"). A dot-product logit is a norm factor times an angle factor; the
    norms of the head's weights grow for the classes that dominate the current data, which biases
    predictions towards new classes. The new batch is therefore learned with the angle factor only
    (scaled cosine logits), while the batch replayed from a reservoir memory uses full dot-product
    logits, which keep the norms calibrated on the balanced memory. Prediction uses the dot-product
    logits."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    buffer_size: BufferSize = 200
    replay_batch_size: ReplayBatchSize = 0
    memory_keeps: MemoryKeeps = "samples"
    memory_budget_bytes: MemoryBudget = 0
    cosine_scale: Annotated[float, Gt(0)] = 16.0
    """Multiplier of the cosine logits (a temperature; cosines in [-1, 1] are too flat for softmax)."""
    memory: ReservoirMemory = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_memory_keeps(self.memory_keeps)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.memory = ReservoirMemory(self, self.buffer_size, self.memory_keeps, self.memory_budget_bytes)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        backbone, head = split_model(model)
        cosine = cosine_logits(backbone(batch.x), head, self.cosine_scale)  # (B, C)
        loss = F.cross_entropy(self.mask_logits(cosine, batch.task), batch.y)
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
