"""Dark Experience Replay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lifelong.data.streams import Batch
from lifelong.strategies.base import Capabilities
from lifelong.strategies.logit_replay import LogitReplay


@dataclass
class DER(LogitReplay):
    """Dark Experience Replay (Buzzega et al., NeurIPS 2020): cross-entropy on the new batch plus
    ``alpha`` times the squared distance between the current and the stored logits of a replayed batch
    (the memory is a reservoir of samples with the logits they had when they arrived)."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        if not len(self.buffer):
            return self.new_data_loss(model, batch)
        matching = self.logit_matching(model, len(batch.y))  # drawn before the new batch enters the memory
        return self.new_data_loss(model, batch) + matching
