"""UER: cosine logits for new data, dot-product logits for replay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.strategies.base import Capabilities
from lifelong.strategies.rehearsal import ReservoirReplay


def cosine_logits(features: torch.Tensor, head: nn.Linear, scale: float) -> torch.Tensor:
    """``scale * cos(f, w_c)`` (B, C) for features (B, D) and the head's class weights (C, D): the angle
    factor of the dot-product logit ``|w_c| |f| cos``, without the norms that carry the class bias."""
    return scale * F.normalize(features, dim=1) @ F.normalize(head.weight, dim=1).T


@dataclass
class UER(ReservoirReplay):
    """Unbiased Experience Replay (Lin et al., ACM MM 2023, "UER: A Heuristic Bias Addressing Approach
    for Online Continual Learning"). A dot-product logit is a norm factor times an angle factor; the
    norms of the head's weights grow for the classes that dominate the current data, which biases
    predictions towards new classes. The new batch is therefore learned with the angle factor only
    (scaled cosine logits), while the replayed batch uses full dot-product logits, which keep the
    norms calibrated on the balanced memory. Prediction uses the dot-product logits."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    cosine_scale: float = 16.0
    """Multiplier of the cosine logits (a temperature; cosines in [-1, 1] are too flat for softmax)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cosine_scale <= 0:
            raise ConfigError(f"strategy.cosine_scale must be > 0, got {self.cosine_scale}")

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        backbone, head = split_model(model)
        cosine = cosine_logits(backbone(batch.x), head, self.cosine_scale)  # (B, C)
        loss = F.cross_entropy(self.mask_logits(cosine, batch.task), batch.y)
        if len(self.buffer):
            replay = self.replay(len(batch.y))
            loss = loss + F.cross_entropy(self.logits(model, replay["x"], replay["task"]), replay["y"])
        self.remember(batch)
        return loss
