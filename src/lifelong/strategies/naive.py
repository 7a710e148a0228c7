"""Naive fine-tuning: the lower bound every continual-learning method is measured against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lifelong.data.streams import Batch
from lifelong.strategies.base import BOTH_OBJECTIVES, Capabilities, Strategy


@dataclass
class Naive(Strategy):
    """Train on each experience with plain cross-entropy and nothing else, so the model forgets
    (catastrophic forgetting: McCloskey & Cohen 1989; French 1999)."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(objectives=BOTH_OBJECTIVES, distributed=True, sharding=True)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch.x, batch.y, batch.task)
