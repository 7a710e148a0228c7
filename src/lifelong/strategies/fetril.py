"""FeTrIL: a frozen extractor and a linear classifier trained on real and translated pseudo-features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.streams import Batch, Experience, TensorSet
from lifelong.models.nets import split_model
from lifelong.strategies.base import FEATURE_STATISTICS, Capabilities, ExperiencePlan, Strategy, StrategyContext
from lifelong.strategies.parts.adaptation import FirstSessionAdaptation, adaptation_capabilities
from lifelong.strategies.parts.backbones import check_backbone_path
from lifelong.strategies.parts.features import (
    ClassStatistics,
    class_statistics,
    extract_features,
    fit_linear_head,
    restrict_to_classes,
)


def translate(new_features: torch.Tensor, new_mean: torch.Tensor, old_mean: torch.Tensor) -> torch.Tensor:
    """Pseudo-features (N, D) of an old class: ``f_new - mu_new + mu_old`` for each new feature (N, D)."""
    return new_features - new_mean + old_mean


@dataclass
class FeTrIL(Strategy):
    """Feature Translation for exemplar-free class-incremental learning (Petit et al., WACV 2023).

    The extractor is frozen after the first experience. Each later experience fits the linear head on
    the real features of its classes plus pseudo-features of every class it does not hold, obtained by
    moving the features of its class whose centroid is nearest to the absent class's centroid (FeTrIL^1
    in the paper) onto that centroid. Only one centroid per class is stored; a class that returns
    (recurring and blurry streams) updates its centroid with the new samples and is learned from its
    real features. The paper fits a linear SVM; here the head is refitted by logistic regression, which
    keeps the network's own head and predictions.

    Data-parallel: every rank fits the head on the whole experience alike (the fit is deterministic)."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        distributed=True,
        averaging=frozenset({"interpolate", "merge"}),
        averaging_refusal=FEATURE_STATISTICS,
    )

    adapt_experiences: Annotated[int, Ge(0)] = 1
    """Experiences whose data train the backbone before it is frozen (first-session adaptation, merged
    into one session); 0 keeps the initial or loaded backbone as it is."""
    backbone_path: str = ""
    """A backbone state dict (``torch.save`` or ``.safetensors``, or a ``lifelong pretrain`` file) loaded before
    the first experience (:mod:`lifelong.models.weights`); empty: none."""
    weight_decay: Annotated[float, Ge(0)] = 1e-4
    """L2 penalty of the head refit (the SVM's regularisation in the paper)."""
    adaptation: FirstSessionAdaptation = field(init=False, repr=False)
    statistics: ClassStatistics = field(default_factory=ClassStatistics, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_backbone_path(self.backbone_path)

    @property
    def capabilities(self) -> Capabilities:
        return adaptation_capabilities(self.CAPABILITIES, self.adapt_experiences)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.adaptation = FirstSessionAdaptation(self.adapt_experiences, self.backbone_path)
        self.statistics = ClassStatistics()

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        return self.adaptation.plan(experiences, index)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.adaptation.before_experience(model)

    def training_set(self, experience: Experience) -> TensorSet:
        return self.adaptation.training_set(experience)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        data = self.adaptation.after_experience(experience)
        if data is not None:
            self.fit_classes(model, data)

    def fit_classes(self, model: nn.Module, data: TensorSet) -> None:
        """Refit the head on ``data``'s real features and the pseudo-features of the classes it lacks."""
        backbone, head = split_model(model)
        present = sorted(set(data.y.tolist()))
        features = extract_features(backbone, data.x)  # (N, D)
        present_means, _ = class_statistics(features, data.y, present)  # (K_present, D)
        absent = [c for c in self.statistics.classes if c not in present]
        stored = self.statistics.means(features.dtype)  # (K_stored, D), before this experience's update
        inputs, labels = [features], [data.y]
        for old_class in absent:
            old_mean = stored[self.statistics.classes.index(old_class)].to(features.device)  # (D,)
            source = int((present_means - old_mean).norm(dim=1).argmin())
            members = features[data.y == present[source]]
            inputs.append(translate(members, present_means[source], old_mean))
            labels.append(torch.full((len(members),), old_class, dtype=torch.long, device=data.y.device))
        self.statistics.update(features, data.y, present)
        fit_linear_head(head, torch.cat(inputs), torch.cat(labels), self.statistics.classes,
                        weight_decay=self.weight_decay)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The head's prediction among the classes it was fitted on (all classes before the first fit)."""
        return restrict_to_classes(self.logits(model, x, task), self.statistics.classes).argmax(dim=1)

    def memory_size(self) -> int:
        return self.adaptation.memory_size()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.adaptation.state_dict(), "statistics": self.statistics.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.adaptation.load_state_dict(state, self.context.stream)
        self.statistics.load_state_dict(state["statistics"])
