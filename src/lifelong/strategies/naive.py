"""Naive fine-tuning: the lower bound every continual-learning method is measured against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lifelong.data.streams import Batch
from lifelong.metrics.objectives import CLASSIFICATION, LANGUAGE_MODEL
from lifelong.strategies.base import Strategy


@dataclass
class Naive(Strategy):
    """Train on each experience with plain cross-entropy and nothing else, so the model forgets
    (catastrophic forgetting: McCloskey & Cohen 1989; French 1999)."""

    supports_distributed: ClassVar[bool] = True
    objectives: ClassVar[frozenset[str]] = frozenset({CLASSIFICATION, LANGUAGE_MODEL})
    supports_sharding: ClassVar[bool] = True

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch.x, batch.y, batch.task)
