"""Nearest class mean on the features of a frozen backbone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lifelong.data.streams import Stream, TensorSet
from lifelong.models.nets import split_model
from lifelong.strategies.features import class_statistics, extract_features, nearest_mean
from lifelong.strategies.frozen import FrozenBackbone


@dataclass
class NCM(FrozenBackbone):
    """Nearest class mean (Mensink et al. 2013; the "simple baseline" of Janson et al. 2022): after the
    backbone is frozen, each class is its mean feature, computed once from its training data, and a
    sample gets the label of the nearest mean. No gradient step after the backbone is fixed; the memory
    is one vector per class. Until the backbone is frozen, predictions come from the linear head."""

    adapt_experiences: int = 2
    """Experiences that train the backbone before it is frozen (first-session adaptation)."""
    means: torch.Tensor = field(default_factory=lambda: torch.zeros(0), init=False, repr=False)
    mean_classes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long), init=False,
                                       repr=False)

    def setup(self, stream: Stream, seed: int) -> None:
        super().setup(stream, seed)
        self.means, self.mean_classes = torch.zeros(0), torch.zeros(0, dtype=torch.long)

    def fit_classes(self, model: nn.Module, data: TensorSet) -> None:
        classes = sorted(set(data.y.tolist()))
        features = extract_features(split_model(model)[0], data.x)  # (N, D)
        means, _ = class_statistics(features, data.y, classes)  # (K, D)
        self.means = torch.cat([self.means.reshape(-1, means.shape[1]), means])
        self.mean_classes = torch.cat([self.mean_classes, torch.tensor(classes, dtype=torch.long)])

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        if not len(self.mean_classes):
            return super().predict(model, x, task)
        allowed = None if self.task_mask is None else self.task_mask.to(x.device)[task]  # (B, C)
        features = extract_features(split_model(model)[0], x)  # (B, D)
        return nearest_mean(features, self.means.to(x.device), self.mean_classes.to(x.device), allowed)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "means": self.means, "mean_classes": self.mean_classes}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.means, self.mean_classes = state["means"], state["mean_classes"]
