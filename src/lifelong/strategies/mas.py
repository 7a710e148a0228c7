"""Memory aware synapses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience, Stream
from lifelong.errors import ConfigError
from lifelong.strategies.base import Strategy
from lifelong.strategies.importance import output_sensitivity
from lifelong.strategies.losses import quadratic_penalty


@dataclass
class MAS(Strategy):
    """Memory Aware Synapses (Aljundi et al., ECCV 2018): the loss adds
    ``lam * sum_i Omega_i (theta_i - theta*_i)^2`` where ``Omega`` is the sensitivity of the squared
    norm of the network's output to each parameter, accumulated over experiences, and ``theta*`` are
    the weights after the last experience. Unlike EWC's Fisher it needs no labels."""

    lam: float = 0.1
    """Strength of the penalty (1 in the paper; 0.1 was best on a digits validation split and 1 diverges
    in class-incremental digits at the default learning rate, ``benchmarks/strategy_defaults.py``)."""
    importance: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    anchor: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ConfigError(f"strategy.lam must be >= 0, got {self.lam}")

    def setup(self, stream: Stream, seed: int) -> None:
        super().setup(stream, seed)
        self.importance, self.anchor = {}, {}

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        loss = F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)
        if self.anchor:
            loss = loss + self.lam * quadratic_penalty(model, self.anchor, self.importance)
        return loss

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        mask = None if self.task_mask is None else self.task_mask[experience.task_id]
        new = output_sensitivity(model, experience.train, class_mask=mask)
        self.importance = {k: self.importance[k] + v if k in self.importance else v for k, v in new.items()}
        self.anchor = {k: v.detach().clone() for k, v in model.named_parameters() if k in new}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "importance": self.importance, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.importance, self.anchor = dict(state["importance"]), dict(state["anchor"])
