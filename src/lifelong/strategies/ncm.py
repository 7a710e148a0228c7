"""Nearest class mean on the features of a frozen backbone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.data.streams import TensorSet
from lifelong.models.nets import split_model
from lifelong.strategies.base import FEATURE_STATISTICS, Capabilities, StrategyContext
from lifelong.strategies.frozen import FrozenBackbone
from lifelong.strategies.parts.features import (
    ClassStatistics,
    extract_features,
    nearest_mean,
)


@dataclass
class NCM(FrozenBackbone):
    """Nearest class mean (Mensink et al. 2013; the "simple baseline" of Janson et al. 2022): after the
    backbone is frozen, each class is its mean feature over every training sample of it seen so far (a
    class that returns updates its mean), and a sample gets the label of the nearest mean. No gradient
    step after the backbone is fixed; the memory is one vector per class. Until the backbone is frozen,
    predictions come from the linear head."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        distributed=True,
        averaging=frozenset({"interpolate", "merge"}),
        averaging_refusal=FEATURE_STATISTICS,
    )

    adapt_experiences: int = 2
    """Experiences that train the backbone before it is frozen (first-session adaptation)."""
    statistics: ClassStatistics = field(default_factory=ClassStatistics, init=False, repr=False)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.statistics = ClassStatistics()

    def fit_classes(self, model: nn.Module, data: TensorSet) -> None:
        part = data.subset(self.world.portion(len(data)))  # the ranks add up their parts
        features = extract_features(split_model(model)[0], part.x)  # (n, D)
        self.statistics.update(features, part.y, sorted(set(data.y.tolist())), self.world)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        if not len(self.statistics):
            return super().predict(model, x, task)
        allowed = None if self.task_mask is None else self.task_mask_on(x.device)[task]  # (B, C)
        features = extract_features(split_model(model)[0], x)  # (B, D)
        classes = torch.tensor(self.statistics.classes, device=x.device)
        return nearest_mean(features, self.statistics.means(features.dtype).to(x.device), classes, allowed)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "statistics": self.statistics.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.statistics.load_state_dict(state["statistics"])
