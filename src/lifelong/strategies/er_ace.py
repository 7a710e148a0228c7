"""Experience replay with asymmetric cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch
from lifelong.errors import ConfigError
from lifelong.strategies.rehearsal import ReservoirReplay


def incoming_class_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logits (B, C) with every class absent from ``labels`` (B,) set to the lowest value."""
    present = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    present[labels] = True
    return logits.masked_fill(~present, torch.finfo(logits.dtype).min)


@dataclass
class ERACE(ReservoirReplay):
    """ER-ACE (Caccia et al., ICLR 2022, "New Insights on Reducing Abrupt Representation Change in
    Online Continual Learning"): the incoming batch's cross-entropy only competes among the classes
    present in that batch, so new classes do not push the logits of old classes down (the cause of
    the abrupt drift of old features); replayed samples use cross-entropy over all classes."""

    replay_batch_size: int = 0
    """Replayed samples per step; 0 means as many as the new batch holds."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.replay_batch_size < 0:
            raise ConfigError(f"strategy.replay_batch_size must be >= 0, got {self.replay_batch_size}")

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = incoming_class_logits(self.logits(model, batch.x, batch.task), batch.y)  # (B, C)
        loss = F.cross_entropy(logits, batch.y)
        if len(self.buffer):
            replay = self.buffer.sample(self.replay_batch_size or len(batch.y))
            loss = loss + F.cross_entropy(self.logits(model, replay["x"], replay["task"]), replay["y"])
        self.buffer.add(x=batch.x, y=batch.y, task=batch.task)
        return loss
