"""Online elastic weight consolidation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience, Stream
from lifelong.errors import ConfigError
from lifelong.strategies.base import Strategy
from lifelong.strategies.importance import fisher_diagonal
from lifelong.strategies.losses import quadratic_penalty


@dataclass
class EWC(Strategy):
    """Online EWC (Kirkpatrick et al. 2017; the online form of Schwarz et al. 2018, "Progress &
    Compress"): the loss adds ``lam / 2 * sum_i F_i (theta_i - theta*_i)^2`` where ``theta*`` are the
    weights after the last experience and ``F`` the running Fisher, ``F <- decay * F + F_new``.

    Data-parallel: each rank estimates the Fisher on its part of the experience and the estimates are
    averaged, so every rank holds the same Fisher."""

    supports_distributed: ClassVar[bool] = True

    lam: float = 100.0
    """Strength of the quadratic penalty (lambda in the paper)."""
    decay: float = 1.0
    """Decay of the old Fisher (gamma in Schwarz et al.); 1 keeps it all."""
    fisher: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    anchor: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ConfigError(f"strategy.lam must be >= 0, got {self.lam}")
        if not 0.0 <= self.decay <= 1.0:
            raise ConfigError(f"strategy.decay must lie in [0, 1], got {self.decay}")

    def setup(self, stream: Stream, seed: int) -> None:
        super().setup(stream, seed)
        self.fisher, self.anchor = {}, {}

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        loss = F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)
        if self.anchor:
            loss = loss + 0.5 * self.lam * quadratic_penalty(model, self.anchor, self.fisher)
        return loss

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        mask = None if self.task_mask is None else self.task_mask[experience.task_id]
        part = experience.train.subset(self.world.portion(len(experience.train)))
        new = self.world.average(fisher_diagonal(model, part, class_mask=mask, generator=self.generator),
                                 weight=len(part))
        self.fisher = {k: self.decay * self.fisher[k] + v if k in self.fisher else v for k, v in new.items()}
        self.anchor = {k: v.detach().clone() for k, v in model.named_parameters() if k in new}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fisher": self.fisher, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.fisher, self.anchor = dict(state["fisher"]), dict(state["anchor"])
