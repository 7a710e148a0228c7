"""Joint training: the offline upper bound."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lifelong.data.streams import Batch
from lifelong.strategies.base import BOTH_OBJECTIVES, Capabilities, Strategy


@dataclass
class Joint(Strategy):
    """One i.i.d. training on the union of all experiences, evaluated on every test set: what the
    model could reach without the stream's order (the "offline" reference in e.g. Lopez-Paz &
    Ranzato 2017). The accuracy matrix has a single row."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        objectives=BOTH_OBJECTIVES,
        joint=True,
        distributed=True,
        sharding=True,
    )

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch.x, batch.y, batch.task)
