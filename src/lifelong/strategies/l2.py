"""L2 regularisation towards the previous weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience, Stream
from lifelong.errors import ConfigError
from lifelong.strategies.base import Strategy
from lifelong.strategies.losses import quadratic_penalty


@dataclass
class L2(Strategy):
    """L2 to the previous weights: the loss adds ``lam / 2 * ||theta - theta*||^2`` where ``theta*`` are
    the weights after the last experience. EWC with every importance equal to one; Smith et al. 2023
    ("A Closer Look at Rehearsal-Free Continual Learning") find it beats EWC and feature distillation
    when the model starts from pretrained weights."""

    lam: float = 0.1
    """Strength of the penalty (chosen on a digits validation split, ``benchmarks/strategy_defaults.py``)."""
    anchor: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ConfigError(f"strategy.lam must be >= 0, got {self.lam}")

    def setup(self, stream: Stream, seed: int) -> None:
        super().setup(stream, seed)
        self.anchor = {}

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        loss = F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)
        if self.anchor:
            loss = loss + 0.5 * self.lam * quadratic_penalty(model, self.anchor)
        return loss

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.anchor = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.anchor = dict(state["anchor"])
