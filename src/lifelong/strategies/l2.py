"""L2 penalty to the previous weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from lifelong.data.streams import Experience
from lifelong.metrics.objectives import CLASSIFICATION, LANGUAGE_MODEL
from lifelong.strategies.anchoring import AnchoredPenalty


@dataclass
class L2(AnchoredPenalty):
    """L2 to the previous weights: the loss adds ``lam / 2 * ||theta - theta*||^2`` where ``theta*`` are
    the weights after the last experience. EWC with every importance equal to one; Smith et al. 2023
    ("A Closer Look at Rehearsal-Free Continual Learning") find it beats EWC and feature distillation
    when the model starts from pretrained weights."""

    penalty_scale: ClassVar[float] = 0.5
    objectives: ClassVar[frozenset[str]] = frozenset({CLASSIFICATION, LANGUAGE_MODEL})

    lam: float = 0.1
    """Strength of the penalty (chosen on a digits validation split, ``benchmarks/strategy_defaults.py``)."""

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.consolidate(model, {})
