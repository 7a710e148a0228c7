"""Nearest class mean on the features of a frozen backbone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.streams import Batch, Experience, TensorSet
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.strategies.base import FEATURE_STATISTICS, Capabilities, ExperiencePlan, Strategy, StrategyContext
from lifelong.strategies.parts.adaptation import FirstSessionAdaptation, adaptation_capabilities
from lifelong.strategies.parts.backbones import check_backbone_path
from lifelong.strategies.parts.features import METRICS, ClassStatistics, extract_features, nearest_mean


@dataclass
class NCM(Strategy):
    """Nearest class mean (Mensink et al. 2013; the "simple baseline" of Janson et al. 2022): after the
    backbone is frozen, each class is its mean feature over every training sample of it seen so far (a
    class that returns updates its mean), and a sample gets the label of the nearest mean. No gradient
    step after the backbone is fixed; the memory is one vector per class. Until the backbone is frozen,
    predictions come from the linear head.

    SimpleCIL (Zhou et al., IJCV 2024, "Revisiting Class-Incremental Learning with Pre-Trained Models:
    Generalizability and Adaptivity are All You Need") is this method with ``metric = "cosine"`` and
    ``adapt_experiences = 0`` on a pretrained backbone: its reference code (LAMDA-PILOT's ``simplecil``)
    puts the class means into a cosine classifier and takes no gradient step (the classifier's scale
    ``sigma`` stays 1 there, and would not change the prediction anyway). Departure from it: the backbone is
    the library's (``model.weights`` or ``backbone_path``), not an ImageNet-pretrained ViT.

    Data-parallel: the ranks add up the class statistics of their parts of each experience."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        distributed=True,
        averaging=frozenset({"interpolate", "merge"}),
        averaging_refusal=FEATURE_STATISTICS,
    )

    adapt_experiences: Annotated[int, Ge(0)] = 2
    """Experiences whose data train the backbone before it is frozen (first-session adaptation, merged
    into one session); 0 keeps the initial or loaded backbone as it is."""
    backbone_path: str = ""
    """A backbone state dict (``torch.save`` or ``.safetensors``, or a ``lifelong pretrain`` file) loaded before
    the first experience (:mod:`lifelong.models.weights`); empty: none."""
    metric: str = "euclidean"
    """The distance to the class means: ``euclidean`` (Mensink et al., Janson et al.) or ``cosine``
    (SimpleCIL's cosine classifier)."""
    adaptation: FirstSessionAdaptation = field(init=False, repr=False)
    statistics: ClassStatistics = field(default_factory=ClassStatistics, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_backbone_path(self.backbone_path)
        if self.metric not in METRICS:
            raise ConfigError(f"strategy.metric must be one of {', '.join(METRICS)}, got {self.metric!r}")

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
        means = self.statistics.means(features.dtype).to(x.device)  # (K, D)
        return nearest_mean(features, means, classes, allowed, self.metric)

    def memory_size(self) -> int:
        return self.adaptation.memory_size()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.adaptation.state_dict(), "statistics": self.statistics.state_dict()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.adaptation.load_state_dict(state, self.context.stream)
        self.statistics.load_state_dict(state["statistics"])
