"""Online elastic weight consolidation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Ge, Interval
from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.strategies.base import (
    BOTH_OBJECTIVES,
    Capabilities,
    Strategy,
    StrategyContext,
)
from lifelong.strategies.parts.importance import FISHER_LABELS, fisher_diagonal
from lifelong.strategies.parts.penalties import Anchor, importance_ceiling


@dataclass
class EWC(Strategy):
    """Online EWC (Kirkpatrick et al. 2017; the online form of Schwarz et al. 2018, "Progress &
    Compress"): the loss adds ``lam / 2 * sum_i F_i (theta_i - theta*_i)^2`` where ``theta*`` are the
    weights after the last experience and ``F`` the running Fisher, ``F <- decay * F + F_new``.

    Departure: ``lam * F_i`` is held at half the stiffness the run's SGD steps stably
    (:func:`~lifelong.strategies.parts.penalties.importance_ceiling`; none under adaptive optimizers), where
    the explicit step on the penalty would diverge.

    Data-parallel: each rank estimates the Fisher on its part of the experience and the estimates are
    averaged, so every rank holds the same Fisher."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(objectives=BOTH_OBJECTIVES, distributed=True)

    lam: Annotated[float, Ge(0)] = 100.0
    """Strength of the quadratic penalty (lambda in the paper; chosen on a validation split of the
    training data, ``benchmarks/defaults.py``)."""
    decay: Annotated[float, Interval(ge=0, le=1)] = 1.0
    """Decay of the old Fisher (gamma in Schwarz et al.); 1 keeps it all."""
    fisher_labels: str = "sampled"
    """The Fisher estimate's labels (:func:`~lifelong.strategies.parts.importance.fisher_diagonal`): ``sampled``
    from the model (the paper's Fisher), ``empirical`` (the true label) or ``weighted`` (the true label times
    ``p(y|x)``, DER's reference code, Mammoth's ``ewc_on``, whose ``e_lambda`` values assume it)."""
    anchor: Anchor = field(default_factory=Anchor, init=False, repr=False)
    """The weights ``theta*`` after the last experience and the running Fisher ``F`` (its importance)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fisher_labels not in FISHER_LABELS:
            raise ConfigError(f"strategy.fisher_labels must be one of {list(FISHER_LABELS)}, got "
                              f"{self.fisher_labels!r}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        if self.language_model and self.fisher_labels == "weighted":
            raise ConfigError("strategy.fisher_labels = 'weighted' weights a classifier's true label by p(y|x); "
                              "for a language model use 'sampled' or 'empirical'")
        self.anchor = Anchor()

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        loss = self.loss(model, batch.x, batch.y, batch.task)
        if self.anchor.is_set:
            loss = loss + self.lam / 2 * self.anchor.penalty(model)
        return loss

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Estimate the experience's Fisher on this rank's part (averaged over the ranks), add it to the
        decayed running Fisher and anchor at the current weights."""
        super().after_experience(model, experience)
        mask = None if self.task_mask is None else self.task_mask[experience.task_id]
        part = experience.train.subset(self.world.portion(len(experience.train)))
        fisher = fisher_diagonal(model, part, class_mask=mask, generator=self.generator, labels=self.fisher_labels,
                                 language_model=self.language_model)
        self.anchor.update(model, self.world.average(fisher, weight=len(part)), decay=self.decay,
                           ceiling=importance_ceiling(self.context.stable_curvature, self.lam))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.anchor.state()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.anchor.load(state)
