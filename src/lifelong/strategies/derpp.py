"""Dark Experience Replay++."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch
from lifelong.errors import ConfigError
from lifelong.strategies.base import Capabilities
from lifelong.strategies.logit_replay import LogitReplay


@dataclass
class DERpp(LogitReplay):
    """DER++ (Buzzega et al., NeurIPS 2020): DER's logit matching plus ``beta`` times cross-entropy on
    the labels of a second, independently drawn replayed batch, which corrects stored logits that were
    recorded before their class was well learned."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    beta: float = 1.0
    """Weight of the replayed-label cross-entropy (1.0 for Seq-MNIST with a memory of 200 in the paper)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 0:
            raise ConfigError(f"strategy.beta must be >= 0, got {self.beta}")

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        if not len(self.buffer):
            return self.new_data_loss(model, batch)
        matching = self.logit_matching(model, len(batch.y))
        replay = self.replay(len(batch.y))
        labels = F.cross_entropy(self.logits(model, replay["x"], replay["task"]), replay["y"])
        return self.new_data_loss(model, batch) + matching + self.beta * labels
