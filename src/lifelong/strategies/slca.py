"""SLCA: slow learner with classifier alignment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge, Interval
from lifelong.data.streams import Batch, Experience
from lifelong.models.nets import split_model
from lifelong.strategies.base import (
    FEATURE_STATISTICS,
    Capabilities,
    ExperiencePlan,
    Strategy,
    StrategyContext,
)
from lifelong.strategies.parts.backbones import check_backbone_path, load_backbone
from lifelong.strategies.parts.features import (
    ClassStatistics,
    extract_features,
    fit_linear_head,
    restrict_to_classes,
    sample_gaussian,
)


@dataclass
class SLCA(Strategy):
    """Slow Learner with Classifier Alignment (Zhang et al., ICCV 2023).

    Slow learner: the backbone trains at ``backbone_lr_scale`` times the head's learning rate, so the
    representation drifts little between experiences (the plan gives the two parameter groups their
    scales at every experience, so the slow rate holds whether or not the optimizer is rebuilt).
    Classifier alignment: after each experience the mean and covariance of every class's features are
    updated (a class that returns adds its new samples to its one entry), and the head is refitted on
    ``samples_per_class`` features drawn from each seen class's Gaussian, which removes the bias of a
    head trained on the latest classes only. No samples are stored, only per-class statistics.

    Data-parallel: the ranks add their parts of the statistics, and draw the refit's features alike.
    """

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        distributed=True,
        averaging=frozenset({"interpolate", "merge"}),
        averaging_refusal=FEATURE_STATISTICS,
    )

    backbone_lr_scale: Annotated[float, Interval(ge=0, le=1)] = 0.01
    """Backbone learning rate as a fraction of the head's after adaptation (1/100 in the paper, made for a
    pretrained backbone; on digits with a backbone adapted on one experience, a validation split prefers
    0, a frozen backbone: ``benchmarks/strategy_defaults.py``)."""
    adapt_experiences: Annotated[int, Ge(0)] = 1
    """First experiences trained at the full rate (first-session adaptation, Panos et al. 2023), standing
    in for the paper's pretraining when no ``backbone_path`` is given; 0 makes the learner slow from the
    start."""
    samples_per_class: Annotated[int, Ge(1)] = 256
    """Features sampled per class for the head refit (256 in the paper)."""
    weight_decay: Annotated[float, Ge(0)] = 1e-4
    """L2 penalty of the head refit."""
    backbone_path: str = ""
    """A backbone state dict (``torch.save`` or ``.safetensors``, or a ``lifelong pretrain`` file) loaded before
    the first experience (:mod:`lifelong.models.weights`); empty: none."""
    statistics: ClassStatistics = field(default_factory=lambda: ClassStatistics(covariance=True), init=False,
                                        repr=False)
    experience_index: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_backbone_path(self.backbone_path)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.statistics = ClassStatistics(covariance=True)
        self.experience_index = 0

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """Backbone then head: the backbone at the full rate while adapting, then at ``backbone_lr_scale``."""
        scale = 1.0 if index < self.adapt_experiences else self.backbone_lr_scale
        return ExperiencePlan(train_size=len(experiences[index].train), lr_scales=(scale, 1.0))

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        if self.experience_index == 0 and self.backbone_path:
            load_backbone(split_model(model)[0], self.backbone_path)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        backbone, head = split_model(model)
        return [{"params": [p for p in backbone.parameters() if p.requires_grad]},
                {"params": [p for p in head.parameters() if p.requires_grad]}]

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.experience_index += 1
        backbone, head = split_model(model)
        part = experience.train.subset(self.world.portion(len(experience.train)))  # the ranks add up their parts
        features = extract_features(backbone, part.x)  # (n, D)
        self.statistics.update(features, part.y, sorted(set(experience.train.y.tolist())), self.world)
        means, covariances = self.statistics.means(features.dtype), self.statistics.covariances(features.dtype)
        sampled = torch.cat([sample_gaussian(mean, covariance, self.samples_per_class, self.generator)
                             for mean, covariance in zip(means.to(features.device), covariances.to(features.device),
                                                         strict=True)])
        labels = torch.tensor(self.statistics.classes, device=features.device).repeat_interleave(self.samples_per_class)
        fit_linear_head(head, sampled, labels, self.statistics.classes, weight_decay=self.weight_decay)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The aligned head's prediction among the classes it has statistics of."""
        return restrict_to_classes(self.logits(model, x, task), self.statistics.classes).argmax(dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "statistics": self.statistics.state_dict(),
                "experience_index": self.experience_index}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.statistics.load_state_dict(state["statistics"])
        self.experience_index = int(state["experience_index"])
