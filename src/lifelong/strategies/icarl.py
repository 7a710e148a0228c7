"""iCaRL: herding exemplars, distillation and a nearest-mean-of-exemplars classifier."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience, Stream, TensorSet
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.strategies.base import Strategy
from lifelong.strategies.features import class_statistics, extract_features, herding, nearest_mean


def normalized_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Backbone features (N, D) scaled to unit length, the space iCaRL herds and classifies in."""
    return F.normalize(extract_features(backbone, x), dim=1)


@dataclass
class ICaRL(Strategy):
    """iCaRL (Rebuffi et al., CVPR 2017, "iCaRL: Incremental Classifier and Representation Learning").

    Training on the new data plus the exemplars uses sigmoid cross-entropy over the classes seen so
    far, with the previous model's sigmoid outputs as targets for the old classes (distillation). After
    each experience every class keeps ``buffer_size // classes_seen`` exemplars chosen by herding
    (old sets are cut to their first ones), and classification is by the nearest mean of exemplars
    (NME) in the normalised feature space."""

    buffer_size: int = 200
    """Total number of exemplars kept (not per class)."""
    exemplars: TensorSet | None = field(default=None, init=False, repr=False)
    old_model: nn.Module | None = field(default=None, init=False, repr=False)
    active_classes: list[int] = field(default_factory=list, init=False, repr=False)
    means: torch.Tensor = field(default_factory=lambda: torch.zeros(0), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ConfigError(f"strategy.buffer_size must be >= 1, got {self.buffer_size}")

    def setup(self, stream: Stream, seed: int) -> None:
        super().setup(stream, seed)
        self.exemplars, self.old_model, self.active_classes, self.means = None, None, [], torch.zeros(0)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.active_classes = sorted(set(self.seen_classes) | set(experience.classes))

    def training_set(self, experience: Experience) -> TensorSet:
        return experience.train if self.exemplars is None else TensorSet.concat([experience.train, self.exemplars])

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = model(batch.x)[:, self.active_classes]  # (B, K)
        targets = (batch.y.unsqueeze(1) == torch.tensor(self.active_classes, device=batch.y.device)).float()
        if self.old_model is not None:
            columns = [self.active_classes.index(c) for c in self.seen_classes]
            with torch.no_grad():
                targets[:, columns] = torch.sigmoid(self.old_model(batch.x)[:, self.seen_classes])
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(dim=1).mean()

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.old_model = copy.deepcopy(model).eval().requires_grad_(False)
        backbone = split_model(model)[0]
        per_class = self.buffer_size // len(self.seen_classes)
        if per_class == 0:
            raise ConfigError(f"strategy.buffer_size={self.buffer_size} is smaller than the {len(self.seen_classes)} "
                              "classes seen; iCaRL needs at least one exemplar per class")
        kept = [] if self.exemplars is None else [self.exemplars.subset(
            torch.cat([(self.exemplars.y == c).nonzero().flatten()[:per_class] for c in self.exemplars.y.unique()]))]
        for c in experience.classes:
            members = experience.train.subset(experience.train.y == c)
            kept.append(members.subset(herding(normalized_features(backbone, members.x), per_class)))
        self.exemplars = TensorSet.concat(kept)
        features = normalized_features(backbone, self.exemplars.x)  # (M, D)
        means, _ = class_statistics(features, self.exemplars.y, self.seen_classes)
        self.means = F.normalize(means, dim=1)  # (K, D), the seen classes in order

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Nearest mean of exemplars; the network's logits before any exemplar exists."""
        if not len(self.means):
            return super().predict(model, x, task)
        allowed = None if self.task_mask is None else self.task_mask.to(x.device)[task]  # (B, C)
        classes = torch.tensor(self.seen_classes, device=x.device)
        return nearest_mean(normalized_features(split_model(model)[0], x), self.means.to(x.device), classes, allowed)

    def memory_size(self) -> int:
        return 0 if self.exemplars is None else len(self.exemplars)

    def state_dict(self) -> dict[str, Any]:
        exemplars = None if self.exemplars is None else {"x": self.exemplars.x, "y": self.exemplars.y,
                                                         "task": self.exemplars.task}
        old = None if self.old_model is None else self.old_model.state_dict()
        return {**super().state_dict(), "exemplars": exemplars, "old_model": old, "means": self.means,
                "active_classes": list(self.active_classes)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        kept = state["exemplars"]
        self.exemplars = None if kept is None else TensorSet(kept["x"], kept["y"], kept["task"])
        self.old_model = None
        if state["old_model"] is not None:
            self.old_model = copy.deepcopy(model).eval().requires_grad_(False)
            self.old_model.load_state_dict(state["old_model"])
        self.means, self.active_classes = state["means"], list(state["active_classes"])
