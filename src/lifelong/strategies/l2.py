"""L2 penalty to the previous weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.streams import Batch, Experience
from lifelong.strategies.base import BOTH_OBJECTIVES, Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.penalties import Anchor


@dataclass
class L2(Strategy):
    """L2 to the previous weights: the loss adds ``lam / 2 * ||theta - theta*||^2`` where ``theta*`` are
    the weights after the last experience. EWC with every importance equal to one; Smith et al. 2023
    ("A Closer Look at Rehearsal-Free Continual Learning") find it beats EWC and feature distillation
    when the model starts from pretrained weights."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(objectives=BOTH_OBJECTIVES, distributed=True)

    lam: Annotated[float, Ge(0)] = 0.1
    """Strength of the penalty (chosen on a digits validation split, ``benchmarks/strategy_defaults.py``)."""
    anchor: Anchor = field(default_factory=Anchor, init=False, repr=False)
    """The weights ``theta*`` after the last experience (no importance: every weight counts one)."""

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.anchor = Anchor()

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        loss = self.loss(model, batch.x, batch.y, batch.task)
        if self.anchor.is_set:
            loss = loss + self.lam / 2 * self.anchor.penalty(model)
        return loss

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Anchor at the current weights."""
        super().after_experience(model, experience)
        self.anchor.update(model, {})

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.anchor.state()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.anchor.load(state)
