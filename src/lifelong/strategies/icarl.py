"""iCaRL: herding exemplars, distillation and a nearest-mean-of-exemplars classifier."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.lazy import inputs_from_state, inputs_state, inputs_tensor
from lifelong.data.streams import Batch, Experience, TensorSet
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.strategies.base import (
    Capabilities,
    ExperiencePlan,
    Strategy,
    StrategyContext,
)
from lifelong.strategies.parts.features import (
    class_statistics,
    extract_features,
    herding,
    nearest_mean,
)


def normalized_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Backbone features (N, D) scaled to unit length, the space iCaRL herds and classifies in."""
    return F.normalize(extract_features(backbone, x), dim=1)


def exemplar_counts(experiences: Sequence[Experience], buffer_size: int) -> list[dict[int, int]]:
    """Exemplars per class after each experience, as :meth:`ICaRL.after_experience` keeps them: after
    experience ``k`` each seen class may keep ``buffer_size // classes seen`` exemplars, herded from its
    old exemplars plus its new samples when the experience holds it, else its old ones cut down.
    Raises :class:`ConfigError` when the memory cannot hold one exemplar per class."""
    seen: set[int] = set()
    counts: dict[int, int] = {}
    history = []
    for index, experience in enumerate(experiences):
        seen |= set(experience.classes)
        per_class = buffer_size // len(seen)
        if per_class == 0:
            raise ConfigError(f"strategy.buffer_size={buffer_size} is smaller than the {len(seen)} classes seen "
                              f"after experience {index}; iCaRL needs at least one exemplar per class")
        arrived = Counter(experience.train.y.tolist())
        counts = {c: min(per_class, counts.get(c, 0) + arrived.get(c, 0)) for c in sorted(seen)}
        history.append(counts)
    return history


@dataclass
class ICaRL(Strategy):
    """iCaRL (Rebuffi et al., CVPR 2017, "iCaRL: Incremental Classifier and Representation Learning").

    Training on the new data plus the exemplars uses sigmoid cross-entropy over the classes seen so
    far and the experience's classes, with the previous model's sigmoid outputs as targets for the old
    classes the experience does not hold (distillation); a class that returns (recurring and blurry
    streams) is learned from its labels. After each experience every class keeps
    ``buffer_size // classes_seen`` exemplars: a class the experience holds is herded anew from its old
    exemplars and its new samples, the others keep their first ones (herding order is a priority), so
    a class never holds two sets. Classification is by the nearest mean of exemplars (NME) in the
    normalised feature space.

    Data-parallel: every rank herds alike from the whole experience, and rank 0's exemplars and means
    are broadcast, so the memory the runner shards is one memory."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    buffer_size: int = 200
    """Total number of exemplars kept (not per class)."""
    exemplars: TensorSet | None = field(default=None, init=False, repr=False)
    old_model: nn.Module | None = field(default=None, init=False, repr=False)
    active_classes: list[int] = field(default_factory=list, init=False, repr=False)
    """The classes the current experience's loss covers: those seen before and its own."""
    distilled_classes: list[int] = field(default_factory=list, init=False, repr=False)
    """The classes seen before that the current experience does not hold: their targets are the old
    model's outputs."""
    means: torch.Tensor = field(default_factory=lambda: torch.zeros(0), init=False, repr=False)
    mean_classes: list[int] = field(default_factory=list, init=False, repr=False)
    """The stream: exemplars of a lazy dataset are positions in it."""

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ConfigError(f"strategy.buffer_size must be >= 1, got {self.buffer_size}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.exemplars, self.old_model, self.means, self.mean_classes = None, None, torch.zeros(0), []
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
        return experience.train if self.exemplars is None else TensorSet.concat([experience.train, self.exemplars])

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        active = self.class_index(self.active_classes, batch.y.device)  # (K,)
        logits = model(batch.x).index_select(1, active)  # (B, K)
        targets = (batch.y.unsqueeze(1) == active).float()
        if self.old_model is not None and self.distilled_classes:
            columns = self.class_index([self.active_classes.index(c) for c in self.distilled_classes], batch.y.device)
            distilled = self.class_index(self.distilled_classes, batch.y.device)
            with torch.no_grad():
                old = self.old_model(batch.x).index_select(1, distilled)  # bf16 under mixed precision
                targets[:, columns] = torch.sigmoid(old).to(targets.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(dim=1).mean()

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.old_model = copy.deepcopy(model).eval().requires_grad_(False)
        backbone = split_model(model)[0]
        per_class = self.buffer_size // len(self.seen_classes)  # >= 1: the plan checked it
        arrived = set(experience.train.y.tolist())
        kept = []
        for c in self.seen_classes:
            old = None if self.exemplars is None else self.exemplars.subset(self.exemplars.y == c)
            if c in arrived:
                members = experience.train.subset(experience.train.y == c)
                candidates = members if old is None else TensorSet.concat([old, members])
                kept.append(candidates.subset(herding(normalized_features(backbone, candidates.x), per_class)))
            elif old is not None and len(old):
                kept.append(old.subset(torch.arange(min(per_class, len(old)))))
        exemplars = TensorSet.concat(kept)
        self.mean_classes = sorted(set(exemplars.y.tolist()))
        means, _ = class_statistics(normalized_features(backbone, exemplars.x), exemplars.y, self.mean_classes)
        means = F.normalize(means, dim=1)  # (K, D)
        self.world.broadcast([inputs_tensor(exemplars.x), exemplars.y, exemplars.task, means])
        self.exemplars, self.means = exemplars, means

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Nearest mean of exemplars; the network's logits before any exemplar exists."""
        if not len(self.means):
            return super().predict(model, x, task)
        allowed = None if self.task_mask is None else self.task_mask_on(x.device)[task]  # (B, C)
        classes = torch.tensor(self.mean_classes, device=x.device)
        return nearest_mean(normalized_features(split_model(model)[0], x), self.means.to(x.device), classes, allowed)

    def memory_size(self) -> int:
        return 0 if self.exemplars is None else len(self.exemplars)

    def state_dict(self) -> dict[str, Any]:
        exemplars = None if self.exemplars is None else {"x": inputs_state(self.exemplars.x), "y": self.exemplars.y,
                                                         "task": self.exemplars.task}
        old = None if self.old_model is None else self.old_model.state_dict()
        return {**super().state_dict(), "exemplars": exemplars, "old_model": old, "means": self.means,
                "mean_classes": list(self.mean_classes), "active_classes": list(self.active_classes),
                "distilled_classes": list(self.distilled_classes)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        kept = state["exemplars"]
        self.exemplars = None if kept is None else \
            TensorSet(inputs_from_state(kept["x"], self.context.stream[0].train.x), kept["y"], kept["task"])
        self.old_model = None
        if state["old_model"] is not None:
            self.old_model = copy.deepcopy(model).eval().requires_grad_(False)
            self.old_model.load_state_dict(state["old_model"])
        self.means, self.mean_classes = state["means"], list(state["mean_classes"])
        self.active_classes, self.distilled_classes = list(state["active_classes"]), list(state["distilled_classes"])
