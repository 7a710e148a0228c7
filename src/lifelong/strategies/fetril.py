"""FeTrIL: a frozen extractor and a linear classifier trained on real and translated pseudo-features."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lifelong.data.streams import Stream, TensorSet
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.strategies.features import (
    class_statistics,
    extract_features,
    fit_linear_head,
    restrict_to_classes,
)
from lifelong.strategies.frozen import FrozenBackbone


def translate(new_features: torch.Tensor, new_mean: torch.Tensor, old_mean: torch.Tensor) -> torch.Tensor:
    """Pseudo-features (N, D) of an old class: ``f_new - mu_new + mu_old`` for each new feature (N, D)."""
    return new_features - new_mean + old_mean


@dataclass
class FeTrIL(FrozenBackbone):
    """Feature Translation for exemplar-free class-incremental learning (Petit et al., WACV 2023).

    The extractor is frozen after the first experience. Each later experience fits the linear head on
    the real features of its new classes plus pseudo-features of every old class, obtained by moving
    the features of the new class whose centroid is nearest to the old centroid (FeTrIL^1 in the paper)
    onto the old centroid. Only one centroid per class is stored. The paper fits a linear SVM; here the
    head is refitted by logistic regression, which keeps the network's own head and predictions."""

    weight_decay: float = 1e-4
    """L2 penalty of the head refit (the SVM's regularisation in the paper)."""
    means: torch.Tensor = field(default_factory=lambda: torch.zeros(0), init=False, repr=False)
    mean_classes: list[int] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight_decay < 0:
            raise ConfigError(f"strategy.weight_decay must be >= 0, got {self.weight_decay}")

    def setup(self, stream: Stream, seed: int) -> None:
        super().setup(stream, seed)
        self.means, self.mean_classes = torch.zeros(0), []

    def fit_classes(self, model: nn.Module, data: TensorSet) -> None:
        backbone, head = split_model(model)
        new_classes = sorted(set(data.y.tolist()))
        features = extract_features(backbone, data.x)  # (N, D)
        new_means, _ = class_statistics(features, data.y, new_classes)  # (K_new, D)
        inputs, labels = [features], [data.y]
        for position, old_class in enumerate(self.mean_classes):
            old_mean = self.means[position]  # (D,)
            source = int((new_means - old_mean).norm(dim=1).argmin())
            members = features[data.y == new_classes[source]]
            inputs.append(translate(members, new_means[source], old_mean))
            labels.append(torch.full((len(members),), old_class, dtype=torch.long))
        self.means = torch.cat([self.means.reshape(-1, features.shape[1]), new_means])
        self.mean_classes = self.mean_classes + new_classes
        fit_linear_head(head, torch.cat(inputs), torch.cat(labels), sorted(self.mean_classes),
                        weight_decay=self.weight_decay)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The head's prediction among the classes it was fitted on (all classes before the first fit)."""
        return restrict_to_classes(self.logits(model, x, task), self.mean_classes).argmax(dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "means": self.means, "mean_classes": list(self.mean_classes)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.means, self.mean_classes = state["means"], list(state["mean_classes"])
