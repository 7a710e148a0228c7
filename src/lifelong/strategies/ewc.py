"""Online elastic weight consolidation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from lifelong.data.streams import Experience
from lifelong.errors import ConfigError
from lifelong.strategies.anchoring import AnchoredPenalty
from lifelong.strategies.base import BOTH_OBJECTIVES, Capabilities
from lifelong.strategies.parts.importance import fisher_diagonal


@dataclass
class EWC(AnchoredPenalty):
    """Online EWC (Kirkpatrick et al. 2017; the online form of Schwarz et al. 2018, "Progress &
    Compress"): the loss adds ``lam / 2 * sum_i F_i (theta_i - theta*_i)^2`` where ``theta*`` are the
    weights after the last experience and ``F`` the running Fisher, ``F <- decay * F + F_new``.

    Data-parallel: each rank estimates the Fisher on its part of the experience and the estimates are
    averaged, so every rank holds the same Fisher."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(objectives=BOTH_OBJECTIVES, distributed=True)

    penalty_scale: ClassVar[float] = 0.5

    lam: float = 100.0
    """Strength of the quadratic penalty (lambda in the paper; chosen on a validation split of the
    training data, ``benchmarks/defaults.py``)."""
    decay: float = 1.0
    """Decay of the old Fisher (gamma in Schwarz et al.); 1 keeps it all."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.decay <= 1.0:
            raise ConfigError(f"strategy.decay must lie in [0, 1], got {self.decay}")

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        mask = None if self.task_mask is None else self.task_mask[experience.task_id]
        part = experience.train.subset(self.world.portion(len(experience.train)))
        new = self.world.average(fisher_diagonal(model, part, class_mask=mask, generator=self.generator,
                                                 language_model=self.language_model),
                                 weight=len(part))
        old = self.importance
        self.consolidate(model, {k: self.decay * old[k] + v if k in old else v for k, v in new.items()})
