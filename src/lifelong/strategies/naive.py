"""Naive fine-tuning: the lower bound every continual-learning method is measured against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch
from lifelong.strategies.base import Strategy


@dataclass
class Naive(Strategy):
    """Train on each experience with plain cross-entropy and nothing else, so the model forgets
    (catastrophic forgetting: McCloskey & Cohen 1989; French 1999)."""

    supports_distributed: ClassVar[bool] = True
    supports_sharding: ClassVar[bool] = True

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)
