"""Experience replay with asymmetric cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch
from lifelong.strategies.base import Capabilities
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

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = incoming_class_logits(self.logits(model, batch.x, batch.task), batch.y)  # (B, C)
        loss = F.cross_entropy(logits, batch.y)
        if len(self.buffer):
            replay = self.replay(len(batch.y))
            loss = loss + F.cross_entropy(self.logits(model, replay["x"], replay["task"]), replay["y"])
        self.remember(batch)
        return loss
