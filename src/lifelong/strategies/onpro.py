"""OnPro: online prototypes of each batch and feedback from them to what is replayed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.bounds import Annotated, Ge, Gt, Interval, check_ordered
from lifelong.data.streams import Batch
from lifelong.models.nets import split_model
from lifelong.strategies.base import Strategy, StrategyContext
from lifelong.strategies.parts.contrastive import (
    batch_prototypes,
    pair_probabilities,
    prototype_equilibrium_loss,
    views,
)
from lifelong.strategies.parts.memory import (
    BufferSize,
    MemoryBudget,
    MemoryKeeps,
    ReplayBatchSize,
    ReservoirMemory,
    check_memory_keeps,
)


@dataclass
class OnPro(Strategy):
    """Online prototype learning (Wei et al., ICCV 2023, "Online Prototype Learning for Online Continual
    Learning"). Each step computes online prototypes, the mean normalized feature of each class in the new
    batch and in the replayed batch (a reservoir memory), and the online prototype equilibrium loss contrasts
    them across two views (:func:`~lifelong.strategies.parts.contrastive.prototype_equilibrium_loss`), so
    that new and old classes stay apart without either dominating the features. Adaptive prototypical
    feedback then chooses part of what is replayed: pairs of classes whose replayed prototypes are closest
    (the classes the model confuses) are drawn with probability ``softmax(1 / distance)``
    (:func:`~lifelong.strategies.parts.contrastive.pair_probabilities`), a sample of each class of a pair is
    mixed up, and the replayed batch is learned with the mixed labels' cross-entropy; the rest of it is drawn
    uniformly and mixed up within itself. The new batch is learned with cross-entropy too.

    Departures from the authors' code (github.com/weilllllls/OnPro): it builds on OCM (Guo et al., ICML
    2022), whose instance-wise contrastive loss over rotated copies, and the projection head it reads, are
    left out: the prototypes are the backbone's own normalized features. The second view exists only when
    the run augments replayed samples (``[augment]`` with ``replay = true``: its crops and flips, not their
    flips, greyscale and resized crops); without it both views are the same samples. The new batch's
    cross-entropy applies in every experience (their code uses it in the first and then learns new classes
    through OCM's loss and the memory); the replayed batch is mixed up and learned from the first experience
    on. Both parts of the replayed batch mix with a coefficient drawn uniformly from ``[mixup_min,
    mixup_max]`` with probability ``mixup_probability`` (their feedback pairs use Beta(0.4, 0.4)); the pairs
    are drawn at random with the feedback's probabilities (theirs round each pair's expected count). The
    feedback reads the prototypes of the previous step's replayed batch, as theirs does."""

    buffer_size: BufferSize = 200
    replay_batch_size: ReplayBatchSize = 0
    memory_keeps: MemoryKeeps = "samples"
    memory_budget_bytes: MemoryBudget = 0
    prototype_temperature: Annotated[float, Gt(0)] = 0.5
    """Temperature of the prototype equilibrium loss (0.5 in the paper and the authors' code)."""
    uniform_share: Annotated[float, Interval(ge=0, le=1)] = 0.75
    """Share of the replayed batch drawn uniformly (``mixup_base_rate``, 0.75); the rest is drawn by the
    feedback's class pairs."""
    mixup_probability: Annotated[float, Interval(ge=0, le=1)] = 0.6
    """Probability that a replayed sample is mixed with its partner (0.6)."""
    mixup_min: Annotated[float, Ge(0)] = 0.0
    """Lowest weight of the partner in a mixed sample (0)."""
    mixup_max: Annotated[float, Interval(ge=0, le=1)] = 0.6
    """Highest weight of the partner in a mixed sample (0.6)."""
    memory: ReservoirMemory = field(init=False, repr=False)
    prototypes: torch.Tensor | None = field(default=None, init=False, repr=False)
    """The last replayed batch's prototypes (C, D), the mean of its two views', None before any replay."""
    present: torch.Tensor | None = field(default=None, init=False, repr=False)
    """Which classes (C,) the last replayed batch held."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_memory_keeps(self.memory_keeps)
        check_ordered("strategy", self, "mixup_min", "mixup_max")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.memory = ReservoirMemory(self, self.buffer_size, self.memory_keeps, self.memory_budget_bytes)
        self.prototypes = self.present = None

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        backbone, head = split_model(model)
        augment = self.context.replay_augment
        x = views(batch.x, batch.stored, augment)  # (V B, ...): the new samples, in one or two views
        new = len(x)
        replay = self.memory.sample(self.replay_batch_size or len(batch.y)) if len(self.memory) else None
        if replay is not None:
            first = self.as_replayed(replay)["x"]  # (R, ...)
            x = torch.cat([x, views(first, replay["x"], augment)])  # one pass for the new and the replayed
        features = backbone(x)  # (N, D)
        loss = F.cross_entropy(self.mask_logits(head(features[: len(batch.y)]), batch.task), batch.y)
        loss = loss + self.equilibrium(features[:new], batch.y)
        if replay is not None:
            loss = loss + self.equilibrium(features[new:], replay["y"]) + self.mixed_replay(model, first, replay)
            prototypes = [batch_prototypes(view, replay["y"], self.n_classes) for view in self.views_of(
                features[new:].detach())]
            self.prototypes = torch.stack([means for means, _ in prototypes]).mean(dim=0)
            self.present = prototypes[0][1]
        self.memory.remember(batch)
        return loss

    def views_of(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views' features (B, D) each of features (V B, D): the halves, or the same twice."""
        if self.context.replay_augment is None:
            return features, features
        first, second = features.chunk(2)
        return first, second

    def equilibrium(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The prototype equilibrium loss of one batch's features (V B, D) with labels (B,)."""
        return prototype_equilibrium_loss(*self.views_of(features), labels, self.n_classes, self.prototype_temperature)

    def mixed_replay(self, model: nn.Module, first: torch.Tensor, replay: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the replayed batch mixed up: its uniform share (``first``, the replayed inputs as they
        enter training, with ``replay``'s labels) mixed within itself, the rest pairs drawn by the feedback."""
        count, device = len(replay["y"]), replay["y"].device
        confusable = self.present is not None and int(self.present.sum()) >= 2
        feedback = count - int(count * self.uniform_share) if confusable else 0
        uniform = count - feedback
        partner = torch.randperm(uniform, generator=self.generator).to(device)
        x_a, y_a, task = first[:uniform], replay["y"][:uniform], replay["task"][:uniform]
        x_b, y_b = x_a[partner], y_a[partner]
        if feedback:
            assert self.prototypes is not None and self.present is not None
            pairs, probabilities = pair_probabilities(self.prototypes, self.present)  # (P, 2), (P,)
            draws = torch.rand(3, feedback, generator=self.generator).to(device)
            picked = torch.searchsorted(probabilities.cumsum(0), draws[0] * probabilities.sum(), right=True)
            chosen = pairs[picked.clamp(max=len(pairs) - 1)]  # (F, 2): a pair of classes per sample
            a, b = (self.memory.replay_slots(self.slots_of(chosen[:, k], draws[k + 1])) for k in (0, 1))
            x_a, y_a, task = torch.cat([x_a, a["x"]]), torch.cat([y_a, a["y"]]), torch.cat([task, a["task"]])
            x_b, y_b = torch.cat([x_b, b["x"]]), torch.cat([y_b, b["y"]])
        draws = torch.rand(2, count, generator=self.generator).to(device)
        weight = torch.where(draws[0] < self.mixup_probability,
                             self.mixup_min + (self.mixup_max - self.mixup_min) * draws[1], 0.0)  # (R,)
        shape = (-1,) + (1,) * (x_a.ndim - 1)
        logits = self.logits(model, (1 - weight.view(shape)) * x_a + weight.view(shape) * x_b, task)
        return ((1 - weight) * F.cross_entropy(logits, y_a, reduction="none")
                + weight * F.cross_entropy(logits, y_b, reduction="none")).mean()

    def slots_of(self, classes: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """A memory slot (F,) holding a sample of each of ``classes`` (F,), uniformly among that class's, from
        uniform ``draws`` (F,) in [0, 1) (slot 0 for a class the memory no longer holds)."""
        members = self.memory.contents()["y"].unsqueeze(0) == classes.unsqueeze(1)  # (F, M)
        rank = (draws * members.sum(dim=1)).long()  # (F,): which of the class's samples
        return (members.cumsum(dim=1) > rank.unsqueeze(1)).int().argmax(dim=1)

    def memory_size(self) -> int:
        return len(self.memory)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.memory.state_dict(), "prototypes": self.prototypes,
                "present": self.present}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.memory.load_state_dict(state["buffer"])
        self.prototypes, self.present = state["prototypes"], state["present"]
