"""iCaRL: herding exemplars, distillation and a nearest-mean-of-exemplars classifier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge
from lifelong.data.lazy import inputs_tensor
from lifelong.data.streams import Batch, Experience, TensorSet
from lifelong.models.nets import split_model
from lifelong.strategies.base import (
    Capabilities,
    ExperiencePlan,
    Strategy,
    StrategyContext,
)
from lifelong.strategies.parts.distillation import Teacher
from lifelong.strategies.parts.exemplars import HerdedExemplars, exemplar_counts
from lifelong.strategies.parts.features import (
    class_statistics,
    extract_features,
    nearest_mean,
)


def normalized_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Backbone features (N, D) scaled to unit length, the space iCaRL herds and classifies in."""
    return F.normalize(extract_features(backbone, x), dim=1)


@dataclass
class ICaRL(Strategy):
    """iCaRL (Rebuffi et al., CVPR 2017, "iCaRL: Incremental Classifier and Representation Learning").

    Training on the new data plus the exemplars uses sigmoid cross-entropy over the classes seen so
    far and the experience's classes, with the previous model's sigmoid outputs as targets for the old
    classes the experience does not hold (distillation); a class that returns (recurring and blurry
    streams) is learned from its labels. After each experience every class keeps
    ``buffer_size // classes_seen`` exemplars, herded in the normalised feature space
    (:class:`~lifelong.strategies.parts.exemplars.HerdedExemplars`). Classification is by the nearest mean
    of exemplars (NME) in that space.

    Data-parallel: every rank herds alike from the whole experience, and rank 0's exemplars and means
    are broadcast, so the memory the runner shards is one memory."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    buffer_size: Annotated[int, Ge(1)] = 200
    """Total number of exemplars kept (not per class)."""
    memory: HerdedExemplars = field(init=False, repr=False)
    teacher: Teacher = field(init=False, repr=False)
    """The model as the previous experience left it."""
    active_classes: list[int] = field(default_factory=list, init=False, repr=False)
    """The classes the current experience's loss covers: those seen before and its own."""
    distilled_classes: list[int] = field(default_factory=list, init=False, repr=False)
    """The classes seen before that the current experience does not hold: their targets are the old
    model's outputs."""
    means: torch.Tensor = field(default_factory=lambda: torch.zeros(0), init=False, repr=False)
    """The normalised mean feature (K, D) of each class's exemplars."""
    mean_classes: list[int] = field(default_factory=list, init=False, repr=False)
    """The classes (K) of ``means``."""

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.memory, self.teacher = HerdedExemplars(self.buffer_size), Teacher()
        self.means, self.mean_classes = torch.zeros(0), []
        self.active_classes, self.distilled_classes = [], []

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """The experience's data plus the exemplars kept after the experience before."""
        counts = exemplar_counts(experiences[: index + 1], self.buffer_size)
        kept = sum(counts[index - 1].values()) if index else 0
        return ExperiencePlan(train_size=len(experiences[index].train) + kept)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.active_classes = sorted(set(self.seen_classes) | set(experience.classes))
        self.distilled_classes = [c for c in self.seen_classes if c not in experience.classes]

    def training_set(self, experience: Experience) -> TensorSet:
        exemplars = self.memory.exemplars
        return experience.train if exemplars is None else TensorSet.concat([experience.train, exemplars])

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        active = self.class_index(self.active_classes, batch.y.device)  # (K,)
        logits = model(batch.x).index_select(1, active)  # (B, K)
        targets = (batch.y.unsqueeze(1) == active).float()
        if self.teacher.model is not None and self.distilled_classes:
            columns = self.class_index([self.active_classes.index(c) for c in self.distilled_classes], batch.y.device)
            distilled = self.class_index(self.distilled_classes, batch.y.device)
            old = self.teacher(batch.x).index_select(1, distilled)  # bf16 under mixed precision
            targets[:, columns] = torch.sigmoid(old).to(targets.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(dim=1).mean()

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.teacher.capture(model)
        backbone = split_model(model)[0]
        exemplars = self.memory.update(experience, self.seen_classes, lambda x: normalized_features(backbone, x))
        self.mean_classes = sorted(set(exemplars.y.tolist()))
        means, _ = class_statistics(normalized_features(backbone, exemplars.x), exemplars.y, self.mean_classes)
        means = F.normalize(means, dim=1)  # (K, D)
        self.world.broadcast([inputs_tensor(exemplars.x), exemplars.y, exemplars.task, means])  # in place
        self.means = means

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Nearest mean of exemplars; the network's logits before any exemplar exists."""
        if not len(self.means):
            return super().predict(model, x, task)
        allowed = None if self.task_mask is None else self.task_mask_on(x.device)[task]  # (B, C)
        classes = torch.tensor(self.mean_classes, device=x.device)
        return nearest_mean(normalized_features(split_model(model)[0], x), self.means.to(x.device), classes, allowed)

    def memory_size(self) -> int:
        return len(self.memory)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "exemplars": self.memory.state_dict(), "old_model": self.teacher.state_dict(),
                "means": self.means, "mean_classes": list(self.mean_classes),
                "active_classes": list(self.active_classes), "distilled_classes": list(self.distilled_classes)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.memory.load_state_dict(state["exemplars"], like=self.context.stream[0].train.x)
        self.teacher.load_state_dict(state["old_model"], model)
        self.means, self.mean_classes = state["means"], list(state["mean_classes"])
        self.active_classes, self.distilled_classes = list(state["active_classes"]), list(state["distilled_classes"])
