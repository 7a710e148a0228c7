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


def normalized_logits(logits: torch.Tensor, groups: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """SLCA's logit normalization of the alignment (the reference's ``ca_with_logit_norm``): logits (N, K)
    divided, sample by sample, by the mean over the tasks of the L2 norm of each task's logits (``groups``:
    the columns of each task's classes), then by ``temperature``. The loss no longer depends on the
    head's scale, and no task's logits can outgrow the others' by their norm alone."""
    norms = torch.cat([logits[:, columns].norm(dim=1, keepdim=True) + 1e-7 for columns in groups], dim=1)  # (N, T)
    return logits / norms.mean(dim=1, keepdim=True) / temperature


def mean_scales(groups: int) -> torch.Tensor:
    """The factor (T,) of the class means of each task, in learning order, when ``groups`` tasks have been
    learned: ``0.9 + 0.1 (t + 1) / T``, 1 for the newest task's classes and down to ``0.9 + 0.1 / T`` for the
    first's (the reference code's ``decay``: the older a class's statistics, the more its sampled features
    are shrunk towards the origin)."""
    return 0.9 + 0.1 * torch.arange(1, groups + 1, dtype=torch.float64) / groups


@dataclass
class SLCA(Strategy):
    """Slow Learner with Classifier Alignment (Zhang et al., ICCV 2023, "SLCA: Slow Learner with Classifier
    Alignment for Continual Learning on a Pre-trained Model"), as its reference code (LAMDA-PILOT's
    ``slca``, from the authors' code) does it.

    Slow learner: the backbone trains at ``backbone_lr_scale`` times the head's learning rate, so the
    representation drifts little between experiences (the plan gives the two parameter groups their
    scales at every experience, so the slow rate holds whether or not the optimizer is rebuilt). The
    training loss is cross-entropy over the current experience's classes alone: the earlier classes' head
    rows get no gradient and stay as they are (the reference's frozen old heads), with a fresh optimizer
    at each experience, so no momentum of an earlier experience moves them.

    Classifier alignment: after each experience the mean and covariance of every class's features are
    updated (a class that returns adds its new samples to its one entry), and from the second experience
    on the head is refitted on ``samples_per_class`` features drawn from each seen class's Gaussian, which
    removes the bias of a head trained on the latest classes only. As in the reference, a class's mean is
    scaled by :func:`mean_scales` of the task that brought it, the logits are normalized
    (:func:`normalized_logits`, temperature ``logit_norm``), and the aligned head serves the evaluation
    only: the next experience trains from the head as it was before the alignment. No samples are stored,
    only per-class statistics.

    Departures from the reference: the refit is full-batch L-BFGS on one draw of the features
    (:func:`~lifelong.strategies.parts.features.fit_linear_head`), not 3 epochs of SGD on a fresh draw each;
    the head is the model's one linear layer, whose rows of the earlier classes are frozen by getting no
    gradient, so a weight decay of the run's optimizer (``optim.weight_decay``, 0 by default) still shrinks
    them, where the reference takes its old heads out of the optimizer; a class that returns (recurring and
    blurry streams) counts for normalization and mean scaling as a class of the task that first brought it;
    the backbone is the library's, not an ImageNet-pretrained ViT.

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
    0, a frozen backbone: ``benchmarks/strategy_defaults.py``). With 0 and no alignment the method is a
    linear probe of the frozen features trained on each experience's own classes."""
    adapt_experiences: Annotated[int, Ge(0)] = 1
    """First experiences trained at the full rate (first-session adaptation, Panos et al. 2023), standing
    in for the paper's pretraining on a backbone trained from scratch. Set 0 for a pretrained backbone
    (``model.weights`` or ``backbone_path``): the paper's slow learner from the first experience."""
    samples_per_class: Annotated[int, Ge(1)] = 256
    """Features sampled per class for the head refit (256 in the paper)."""
    classifier_alignment: bool = True
    """Refit the head on sampled features after each experience from the second on; False: the slow learner
    alone (the paper's ablation "SL")."""
    logit_norm: Annotated[float, Ge(0)] = 0.1
    """Temperature of the alignment's logit normalization (the reference's ``ca_with_logit_norm``, 0.1);
    0 aligns on the plain logits."""
    weight_decay: Annotated[float, Ge(0)] = 1e-4
    """L2 penalty of the head refit on plain logits (``logit_norm`` 0). Normalized logits do not depend on
    the head's scale, so a penalty would only shrink the head towards zero: none applies with them."""
    backbone_path: str = ""
    """A backbone state dict (``torch.save`` or ``.safetensors``, or a ``lifelong pretrain`` file) loaded before
    the first experience (:mod:`lifelong.models.weights`); empty: none."""
    statistics: ClassStatistics = field(default_factory=lambda: ClassStatistics(covariance=True), init=False,
                                        repr=False)
    experience_index: int = field(default=0, init=False, repr=False)
    tasks: list[list[int]] = field(default_factory=list, init=False, repr=False)
    """The classes each finished experience brought first, in order (empty for one that brought none)."""
    unaligned: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    """The head's ``weight`` and ``bias`` before the last alignment, put back before the next experience."""
    current_classes: list[int] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_backbone_path(self.backbone_path)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.statistics = ClassStatistics(covariance=True)
        self.experience_index, self.tasks, self.unaligned, self.current_classes = 0, [], {}, []

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """Backbone then head: the backbone at the full rate while adapting, then at ``backbone_lr_scale``;
        a fresh optimizer at each experience (the reference builds one per task)."""
        scale = 1.0 if index < self.adapt_experiences else self.backbone_lr_scale
        return ExperiencePlan(train_size=len(experiences[index].train), lr_scales=(scale, 1.0), reset_optimizer=True)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Load the pretrained backbone before the first experience; put the unaligned head back."""
        backbone, head = split_model(model)
        if self.experience_index == 0 and self.backbone_path:
            load_backbone(backbone, self.backbone_path)
        if self.unaligned:
            with torch.no_grad():
                head.weight.copy_(self.unaligned["weight"])
                head.bias.copy_(self.unaligned["bias"])
            self.unaligned = {}
        self.current_classes = sorted(experience.classes)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        backbone, head = split_model(model)
        return [{"params": [p for p in backbone.parameters() if p.requires_grad]},
                {"params": [p for p in head.parameters() if p.requires_grad]}]

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Cross-entropy over the current experience's classes (the reference's ``logits[:, known:]``)."""
        logits = restrict_to_classes(self.logits(model, batch.x, batch.task), self.current_classes)
        return F.cross_entropy(logits, batch.y)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.experience_index += 1
        backbone, head = split_model(model)
        part = experience.train.subset(self.world.portion(len(experience.train)))  # the ranks add up their parts
        features = extract_features(backbone, part.x)  # (n, D)
        present = sorted(set(experience.train.y.tolist()))
        known = {c for task in self.tasks for c in task}
        self.tasks.append([c for c in present if c not in known])
        self.statistics.update(features, part.y, present, self.world)
        if self.classifier_alignment and len(self.tasks) > 1:
            self.unaligned = {"weight": head.weight.detach().clone(), "bias": head.bias.detach().clone()}
            self.align(head, features.dtype, features.device)

    def align(self, head: nn.Linear, dtype: torch.dtype, device: torch.device) -> None:
        """Refit ``head`` on features drawn from every seen class's Gaussian, its mean scaled by its task's
        :func:`mean_scales`, with normalized logits unless ``logit_norm`` is 0."""
        classes = self.statistics.classes
        task_of = {c: t for t, task in enumerate(self.tasks) for c in task}
        scales = mean_scales(len(self.tasks))[[task_of[c] for c in classes]].to(dtype).unsqueeze(1)  # (K, 1)
        means = (self.statistics.means(dtype) * scales).to(device)  # (K, D)
        covariances = self.statistics.covariances(dtype).to(device)  # (K, D, D)
        sampled = torch.cat([sample_gaussian(mean, covariance, self.samples_per_class, self.generator)
                             for mean, covariance in zip(means, covariances, strict=True)])  # (K * n, D)
        labels = torch.tensor(classes, device=device).repeat_interleave(self.samples_per_class)
        if not self.logit_norm:
            fit_linear_head(head, sampled, labels, classes, weight_decay=self.weight_decay)
            return
        position = {c: i for i, c in enumerate(classes)}
        groups = [torch.tensor([position[c] for c in task], device=device) for task in self.tasks if task]
        fit_linear_head(head, sampled, labels, classes, weight_decay=0.0,
                        transform=lambda logits: normalized_logits(logits, groups, self.logit_norm))

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The (aligned) head's prediction among the classes it has statistics of."""
        return restrict_to_classes(self.logits(model, x, task), self.statistics.classes).argmax(dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "statistics": self.statistics.state_dict(),
                "experience_index": self.experience_index, "tasks": [list(t) for t in self.tasks],
                "unaligned": dict(self.unaligned), "current_classes": list(self.current_classes)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.statistics.load_state_dict(state["statistics"])
        self.experience_index = int(state["experience_index"])
        self.tasks = [list(t) for t in state["tasks"]]
        self.current_classes = list(state["current_classes"])
        device = next(model.parameters()).device  # a checkpoint is read onto the CPU
        self.unaligned = {name: t.to(device) for name, t in state["unaligned"].items()}
