"""The shared part of the weight-anchoring regularisers (EWC, SI, MAS, L2): after each experience the
weights become an anchor ``theta*`` and each parameter gets an importance ``Omega``; training then pays
``scale * lam * sum_i Omega_i (theta_i - theta*_i)^2`` on top of cross-entropy. The methods differ only
in how ``Omega`` is estimated and accumulated (Smith et al. 2023, "A Closer Look at Rehearsal-Free
Continual Learning", compare them on that footing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.data.streams import Batch
from lifelong.errors import ConfigError
from lifelong.strategies.base import Strategy, StrategyContext
from lifelong.strategies.parts.penalties import QuadraticPenalty


def trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the trainable parameters, by name."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


@dataclass
class AnchoredPenalty(Strategy):
    """Abstract: cross-entropy plus the importance-weighted distance to the anchor weights.

    Concrete strategies call :meth:`consolidate` at the end of an experience with the importance they
    estimated; ``importance`` stays empty for a plain L2 penalty (every weight counts one).

    Data-parallel: the anchor is the weights, equal on every rank; an importance estimated from data
    is estimated on each rank's part and averaged over the ranks, and one built from the (averaged)
    gradients and the weights' moves (SI) is equal on every rank by construction."""


    #: Factor in front of ``lam`` (1/2 where the paper writes ``lam / 2``).
    penalty_scale: ClassVar[float] = 1.0

    lam: float = 1.0
    """Strength of the penalty."""
    importance: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    anchor: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    penalty: QuadraticPenalty | None = field(default=None, init=False, repr=False)
    """The penalty of the current anchor and importance (None before the first consolidation)."""

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ConfigError(f"strategy.lam must be >= 0, got {self.lam}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.importance, self.anchor, self.penalty = {}, {}, None

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        loss = self.loss(model, batch.x, batch.y, batch.task)
        if self.penalty is not None:
            loss = loss + self.penalty_scale * self.lam * self.penalty(model)
        return loss

    def consolidate(self, model: nn.Module, importance: dict[str, torch.Tensor]) -> None:
        """Take ``importance`` as the new ``Omega`` and the current weights as the anchor."""
        self._anchor_at(trainable(model), importance)

    def _anchor_at(self, anchor: dict[str, torch.Tensor], importance: dict[str, torch.Tensor]) -> None:
        """Build the penalty; ``anchor`` and ``importance`` become views of its flat vectors."""
        self.penalty = QuadraticPenalty(anchor, importance or None) if anchor else None
        self.anchor = self.penalty.anchor if self.penalty else {}
        self.importance = self.penalty.importance if self.penalty else {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "importance": self.importance, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self._anchor_at(dict(state["anchor"]), dict(state["importance"]))
