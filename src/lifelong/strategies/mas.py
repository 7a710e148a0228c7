"""Memory aware synapses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from lifelong.data.streams import Experience
from lifelong.strategies.anchoring import AnchoredPenalty
from lifelong.strategies.base import Capabilities
from lifelong.strategies.parts.importance import output_sensitivity


@dataclass
class MAS(AnchoredPenalty):
    """Memory Aware Synapses (Aljundi et al., ECCV 2018): the loss adds
    ``lam * sum_i Omega_i (theta_i - theta*_i)^2`` where ``Omega`` is the sensitivity of the squared
    norm of the network's output to each parameter, accumulated over experiences, and ``theta*`` are
    the weights after the last experience. Unlike EWC's Fisher it needs no labels."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    lam: float = 0.1
    """Strength of the penalty (1 in the paper; 0.1 was best on a digits validation split and 1 diverges
    in class-incremental digits at the default learning rate, ``benchmarks/strategy_defaults.py``)."""

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        mask = None if self.task_mask is None else self.task_mask[experience.task_id]
        part = experience.train.subset(self.world.portion(len(experience.train)))
        new = self.world.average(output_sensitivity(model, part, class_mask=mask), weight=len(part))
        old = self.importance
        self.consolidate(model, {k: old[k] + v if k in old else v for k, v in new.items()})
