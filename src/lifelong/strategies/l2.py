"""L2 penalty to the previous weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from lifelong.data.streams import Experience
from lifelong.strategies.anchoring import AnchoredPenalty
from lifelong.strategies.base import BOTH_OBJECTIVES, Capabilities


@dataclass
class L2(AnchoredPenalty):
    """L2 to the previous weights: the loss adds ``lam / 2 * ||theta - theta*||^2`` where ``theta*`` are
    the weights after the last experience. EWC with every importance equal to one; Smith et al. 2023
    ("A Closer Look at Rehearsal-Free Continual Learning") find it beats EWC and feature distillation
    when the model starts from pretrained weights."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(objectives=BOTH_OBJECTIVES, distributed=True)

    penalty_scale: ClassVar[float] = 0.5

    lam: float = 0.1
    """Strength of the penalty (chosen on a digits validation split, ``benchmarks/strategy_defaults.py``)."""

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.consolidate(model, {})
