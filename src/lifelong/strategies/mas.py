"""Memory aware synapses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.streams import Batch, Experience
from lifelong.strategies.base import Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.importance import output_sensitivity
from lifelong.strategies.parts.penalties import Anchor, importance_ceiling


@dataclass
class MAS(Strategy):
    """Memory Aware Synapses (Aljundi et al., ECCV 2018): the loss adds
    ``lam * sum_i Omega_i (theta_i - theta*_i)^2`` where ``Omega`` is the sensitivity of the squared
    norm of the network's output to each parameter, accumulated over experiences, and ``theta*`` are
    the weights after the last experience. Unlike EWC's Fisher it needs no labels.

    Departure: ``2 lam Omega_i`` is held at half the stiffness the run's SGD steps stably
    (:func:`~lifelong.strategies.parts.penalties.importance_ceiling`; none under adaptive optimizers): on the
    catalogue's ResNet the sensitivity of the first normalisation layer's scales passes it and the
    explicit step on the penalty diverged in 3 of 3 seeds.

    Data-parallel: each rank estimates the sensitivity on its part of the experience and the estimates
    are averaged."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    lam: Annotated[float, Ge(0)] = 0.1
    """Strength of the penalty (1 in the paper; 0.1 was best on a digits validation split and 1 diverges
    in class-incremental digits at the default learning rate, ``benchmarks/strategy_defaults.py``)."""
    anchor: Anchor = field(default_factory=Anchor, init=False, repr=False)
    """The weights ``theta*`` after the last experience and the accumulated sensitivity ``Omega``."""

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.anchor = Anchor()

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        loss = self.loss(model, batch.x, batch.y, batch.task)
        if self.anchor.is_set:
            loss = loss + self.lam * self.anchor.penalty(model)
        return loss

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Add the experience's output sensitivity to ``Omega`` and anchor at the current weights."""
        super().after_experience(model, experience)
        mask = None if self.task_mask is None else self.task_mask[experience.task_id]
        part = experience.train.subset(self.world.portion(len(experience.train)))
        sensitivity = output_sensitivity(model, part, class_mask=mask)
        self.anchor.update(model, self.world.average(sensitivity, weight=len(part)),
                           ceiling=importance_ceiling(self.context.stable_curvature, 2 * self.lam))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.anchor.state()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.anchor.load(state)
