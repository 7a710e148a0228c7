"""Experience replay with a reservoir buffer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lifelong.data.streams import Batch
from lifelong.strategies.base import BOTH_OBJECTIVES, Capabilities
from lifelong.strategies.rehearsal import ReservoirReplay


@dataclass
class ER(ReservoirReplay):
    """Experience replay (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning"):
    each new batch is concatenated with a batch drawn from a reservoir memory of the stream, and the
    model is trained with cross-entropy on both; the new samples are then offered to the reservoir."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(objectives=BOTH_OBJECTIVES, distributed=True, sharding=True)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y, task = batch.x, batch.y, batch.task
        if len(self.buffer):
            replay = self.replay(len(y))
            x = torch.cat([x, replay["x"]])
            y = torch.cat([y, replay["y"]])
            task = torch.cat([task, replay["task"]])
        loss = self.loss(model, x, y, task)
        self.remember(batch)
        return loss
