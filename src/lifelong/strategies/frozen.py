"""The shared life of a frozen-feature method (NCM, FeTrIL): adapt the backbone, then freeze it.

The backbone is either trained with cross-entropy on the first ``adapt_experiences`` experiences,
merged into one session ("first-session adaptation", Panos et al. 2023), or loaded from a pretrained
file (``backbone_path``), or both. Afterwards it is never trained again: the plan of every later
experience declares no training, so the runner takes no gradient step (and builds no optimizer,
sampler order or schedule for it), and the concrete method only fits its classifier on features in
:meth:`FrozenBackbone.fit_classes`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.streams import Batch, Experience, TensorSet
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.strategies.base import Capabilities, ExperiencePlan, Strategy, StrategyContext
from lifelong.strategies.parts.backbones import check_backbone_path, load_backbone


@dataclass
class FrozenBackbone(Strategy):
    """Abstract: adaptation on the first experiences, then a frozen backbone and a fitted classifier.

    Data-parallel: adaptation trains on the same merged session on every rank (the runner shards it);
    the classifier's statistics are added over the ranks or computed alike on each."""


    adapt_experiences: int = 1
    """Experiences whose data train the backbone (cross-entropy, merged into one session); 0 keeps the
    initial or loaded backbone as it is."""
    backbone_path: str = ""
    """A backbone state dict (``torch.save`` or ``.safetensors``, or a ``lifelong pretrain`` file) loaded before
    the first experience (:mod:`lifelong.models.weights`); empty: none."""
    experience_index: int = field(default=0, init=False, repr=False)
    adaptation_data: list[TensorSet] = field(default_factory=list, init=False, repr=False)

    @property
    def capabilities(self) -> Capabilities:
        """A backbone adapted on the first experiences cannot be frozen by ``model.freeze``."""
        if self.adapt_experiences == 0:
            return self.CAPABILITIES
        return self.CAPABILITIES.with_(freeze=False, freeze_refusal=(
            f"contradicts strategy.adapt_experiences={self.adapt_experiences} ({{name}} trains its backbone on its "
            "first experiences); set strategy.adapt_experiences=0 to keep the loaded backbone as it is"))

    def __post_init__(self) -> None:
        if self.adapt_experiences < 0:
            raise ConfigError(f"strategy.adapt_experiences must be >= 0, got {self.adapt_experiences}")
        check_backbone_path(self.backbone_path)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.experience_index, self.adaptation_data = 0, []

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        if self.experience_index == 0 and self.backbone_path:
            load_backbone(split_model(model)[0], self.backbone_path)

    def adapting(self) -> bool:
        """True while the current experience still trains the backbone."""
        return self.experience_index < self.adapt_experiences

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """The first ``adapt_experiences`` experiences train on everything seen so far (one merged
        session); the later ones take no gradient step."""
        if index >= self.adapt_experiences:
            return ExperiencePlan(train_size=0)
        return ExperiencePlan(train_size=sum(len(e.train) for e in experiences[: index + 1]))

    def training_set(self, experience: Experience) -> TensorSet:
        # one set per finished experience; a checkpoint taken inside this one already holds it as well
        del self.adaptation_data[self.experience_index:]
        self.adaptation_data.append(experience.train)
        return TensorSet.concat(self.adaptation_data)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.experience_index += 1
        if self.experience_index == self.adapt_experiences and self.adaptation_data:
            self.fit_classes(model, TensorSet.concat(self.adaptation_data))  # the backbone is final now
            self.adaptation_data = []
        elif self.experience_index > self.adapt_experiences:
            self.fit_classes(model, experience.train)

    @abstractmethod
    def fit_classes(self, model: nn.Module, data: TensorSet) -> None:
        """Update the classifier with ``data``'s classes, whose features come from the frozen backbone."""

    def memory_size(self) -> int:
        return sum(len(data) for data in self.adaptation_data)

    def state_dict(self) -> dict[str, Any]:
        """The number of adaptation experiences held: their data is the stream's, so a checkpoint need
        not copy it."""
        return {**super().state_dict(), "experience_index": self.experience_index,
                "adaptation_experiences": len(self.adaptation_data)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.experience_index = int(state["experience_index"])
        adapted = self.context.stream.experiences[: int(state["adaptation_experiences"])]
        self.adaptation_data = [e.train for e in adapted]
