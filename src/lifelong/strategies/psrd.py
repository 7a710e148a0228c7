"""PSRD: supervised contrastive features, learned class prototypes and the distillation of their relations to
the new samples, without replay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge, Gt
from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.strategies.base import (
    Capabilities,
    ExperiencePlan,
    Strategy,
    StrategyContext,
)
from lifelong.strategies.parts.contrastive import (
    cosine_logits,
    relation_distillation,
    supervised_contrastive_loss,
    views,
)
from lifelong.strategies.parts.distillation import Teacher
from lifelong.strategies.parts.features import restrict_to_classes

PROTOTYPE_LOSSES = ("contrastive", "cosine")
"""How PSRD's prototypes learn (:attr:`PSRD.prototype_loss`)."""


@dataclass
class PSRD(Strategy):
    """Prototype-sample relation distillation (Asadi et al., ICML 2023, "Prototype-Sample Relation
    Distillation: Towards Replay-Free Continual Learning"). Features are learned with the supervised
    contrastive loss alone (:func:`~lifelong.strategies.parts.contrastive.supervised_contrastive_loss`),
    which forgets less than cross-entropy; a prototype per class (the rows of the model's linear head) is
    learned beside them from the detached features, among the current experience's classes only, so that
    new classes never push old prototypes; and from the second experience on the model that the previous
    experience left is the teacher of a relation distillation
    (:func:`~lifelong.strategies.parts.contrastive.relation_distillation`): on the new samples, the softmax of
    their similarities to each earlier task's prototypes must stay what the old features and prototypes gave,
    task by task. No sample is stored. Prediction is the nearest prototype in cosine among the classes
    trained so far.

    Departures from the authors' code (github.com/naderAsadi/Probing-Continual-Learning, ``methods/repe.py``):
    the supervised contrastive loss reads the backbone's features, not a projection head's (the model has
    none), and it has a second, augmented view of each sample only when the run augments replayed samples
    (``[augment]`` with ``replay = true``), where their code always contrasts two augmented views. The
    prototypes are the head's rows (its bias unused), trained at ``prototype_lr_scale`` times the run's
    learning rate with the run's optimizer (their separate group has no momentum or weight decay). The
    prototype loss is the paper's contrastive form by default (``prototype_loss = "contrastive"``: a softmax
    over the current classes' prototypes at ``temperature``); their code's ``1 - cos`` to the sample's own
    prototype is ``prototype_loss = "cosine"``. The distillation is a KL divergence (their cross-entropy,
    less the target's entropy, a constant: the same gradients). An earlier task is the group of classes
    first trained in one experience, so a blurry stream's returning classes stay in their first group."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    temperature: Annotated[float, Gt(0)] = 0.2
    """Temperature of the supervised contrastive loss and of the contrastive prototype loss (0.2, the
    authors' ``supcon_temperature``)."""
    prototype_weight: Annotated[float, Ge(0)] = 1.0
    """Weight of the prototype loss (``prototypes_coef``, 1)."""
    prototype_loss: str = "contrastive"
    """How prototypes learn from the detached features: ``contrastive``, the paper's cross-entropy of
    ``cos / temperature`` over the current experience's classes; ``cosine``, the authors' code's mean
    ``1 - cos`` to each sample's own prototype."""
    prototype_lr_scale: Annotated[float, Gt(0)] = 0.1
    """The prototypes' learning rate as a multiple of the run's (the authors use 0.01 with a learning rate
    of 0.1)."""
    distillation_weight: Annotated[float, Ge(0)] = 1.0
    """Weight of the relation distillation (``distill_coef``, 1)."""
    distillation_temperature: Annotated[float, Gt(0)] = 2.0
    """Softmax temperature of the relation distillation (``distill_temp``, 2)."""
    teacher: Teacher = field(init=False, repr=False)
    """The model as the previous experience left it, its head the old prototypes."""
    groups: list[list[int]] = field(default_factory=list, init=False, repr=False)
    """The classes first trained in each finished experience (an earlier task's), in order."""
    current: list[int] = field(default_factory=list, init=False, repr=False)
    """The current experience's classes, those whose prototypes learn."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prototype_loss not in PROTOTYPE_LOSSES:
            raise ConfigError(f"strategy.prototype_loss must be one of {', '.join(PROTOTYPE_LOSSES)}, got "
                              f"{self.prototype_loss!r}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.teacher = Teacher()
        self.groups, self.current = [], []

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The model's parameters, then the prototypes (the head's weight), each group at the scale
        :meth:`plan` declares."""
        prototypes = split_model(model)[1].weight
        rest = [p for p in model.parameters() if p.requires_grad and p is not prototypes]
        return [{"params": rest}, {"params": [prototypes]}]

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """Train on the experience, the prototypes at ``prototype_lr_scale`` times the run's learning rate."""
        return ExperiencePlan(train_size=len(experiences[index].train), lr_scales=(1.0, self.prototype_lr_scale))

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.current = sorted(experience.classes)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        backbone, head = split_model(model)
        x = views(batch.x, batch.stored, self.context.replay_augment)  # (V B, ...)
        y = batch.y.repeat(len(x) // len(batch.y))  # (V B,)
        features = backbone(x)  # (V B, D)
        loss = supervised_contrastive_loss(features, y, self.temperature)
        loss = loss + self.prototype_weight * self.prototype_term(features.detach(), head.weight, y)
        if self.teacher.model is not None and self.groups and self.distillation_weight:
            old_backbone, old_head = split_model(self.teacher.model)
            with torch.no_grad():
                old_features = old_backbone(x)
            groups = [self.class_index(classes, y.device) for classes in self.groups]
            loss = loss + self.distillation_weight * relation_distillation(
                features, head.weight, old_features, old_head.weight, groups, self.distillation_temperature)
        return loss

    def prototype_term(self, features: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The prototype loss of detached ``features`` (N, D) with ``labels`` (N,) against ``prototypes``
        (C, D), the current experience's classes competing (:attr:`prototype_loss`)."""
        cosines = F.normalize(features, dim=1) @ F.normalize(prototypes, dim=1).T  # (N, C)
        if self.prototype_loss == "cosine":
            return (1 - cosines.gather(1, labels.unsqueeze(1))).mean()
        return F.cross_entropy(restrict_to_classes(cosines / self.temperature, self.current), labels)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        known = {c for classes in self.groups for c in classes}
        new = sorted(set(experience.classes) - known)
        if new:
            self.groups.append(new)
        super().after_experience(model, experience)
        self.teacher.capture(model)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The class of the most similar prototype among the classes trained so far."""
        backbone, head = split_model(model)
        logits = self.mask_logits(cosine_logits(backbone(x), head, 1.0), task)
        return restrict_to_classes(logits, sorted(set(self.seen_classes) | set(self.current))).argmax(dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "old_model": self.teacher.state_dict(),
                "groups": [list(classes) for classes in self.groups], "current": list(self.current)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.teacher.load_state_dict(state["old_model"], model)
        self.groups = [list(classes) for classes in state["groups"]]
        self.current = list(state["current"])
