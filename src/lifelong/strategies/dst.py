"""Dynamic sparse training for continual learning: each task trains a sparse subnetwork whose topology
changes while it trains, then freezes it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Ge, Interval
from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.models.nets import split_model
from lifelong.strategies.base import OWN_TENSORS_FREEZE, Capabilities, ExperiencePlan, Strategy, StrategyContext
from lifelong.strategies.parts.task_tables import TaskTable, TaskTensors, by_task, model_tensors, prefix_of

INITS = ("erk", "uniform")
GROWTHS = ("random", "gradient")


def layer_densities(shapes: Sequence[torch.Size], density: float, init: str) -> list[float]:
    """The fraction of each layer's weights a task's mask keeps, ``density`` over all of them together.

    ``uniform``: ``density`` in every layer. ``erk`` (Erdos-Renyi-Kernel, Evci et al. 2020, "Rigging the
    Lottery"): layer ``l`` keeps ``eps * sum(shape_l) / prod(shape_l)``, so small layers stay denser, with
    ``eps`` set to meet the overall density; a layer that would exceed 1 is dense and ``eps`` is solved
    again for the others."""
    if init == "uniform":
        return [density] * len(shapes)
    sizes = [math.prod(shape) for shape in shapes]
    raw = [sum(shape) / size for shape, size in zip(shapes, sizes, strict=True)]
    dense: set[int] = set()
    scale = 0.0
    while len(dense) < len(shapes):
        sparse = [i for i in range(len(shapes)) if i not in dense]
        scale = (density * sum(sizes) - sum(sizes[i] for i in dense)) / sum(raw[i] * sizes[i] for i in sparse)
        over = {i for i in sparse if scale * raw[i] > 1}
        if not over:
            break
        dense |= over
    return [1.0 if i in dense else scale * raw[i] for i in range(len(shapes))]


def cosine_fraction(start: float, end: float, progress: float) -> float:
    """The prune fraction ``progress`` (0 to 1, capped) of the way through an experience: ``start`` falling to
    ``end`` along a half cosine, as the reference's ``CosineDecay`` (PyTorch's cosine annealing)."""
    return end + (start - end) * (1 + math.cos(math.pi * min(progress, 1.0))) / 2


def masked_names(model: nn.Module) -> list[str]:
    """The backbone's weights that masks cover: its parameters of two or more dimensions (the weights of
    convolutions and linear layers)."""
    backbone = split_model(model)[0]
    prefix = prefix_of(model, backbone)
    return [prefix + name for name, p in backbone.named_parameters() if p.ndim >= 2]


@dataclass
class DST(Strategy):
    """Dynamic sparse training for continual learning (Yildirim, Gok Yildirim, Sokar, Mocanu & Vanschoren,
    CPAL 2024, "Continual Learning with Dynamic Sparse Training: Exploring Algorithms for Effective Model
    Updates"; reference code ``cl-dst``, over the ``sparselearning`` library). Each task gets a sparse mask
    over the backbone's weights, drawn at random with a per-layer density from ``init`` (ERK or uniform) at
    ``1 - sparsity`` overall. Every ``update_every`` steps the topology changes as in SET/RigL: per layer, a
    fraction of the task's free weights with the smallest magnitude leave the mask (and are zeroed), and as
    many free positions outside the mask join it, drawn at random (SET) or those of the largest dense
    gradient (RigL; ``growth = "gradient"``), starting at zero. The fraction decays along a half cosine from
    ``prune_fraction`` (0.5) to ``final_prune_fraction`` (0.005) over each experience, as the reference's
    ``CosineDecay`` over the task's ``len(train_loader) * epochs`` steps; the strategy does not see the
    runner's epochs, so the decay runs over ``decay_epochs`` passes over the experience's training set
    (counted in samples): set it to ``optim.epochs``.

    Isolation: a mask may include weights earlier tasks use (sharing, as in the paper, whose masks are
    drawn over the whole layer), but those stay frozen: their gradients are zeroed in
    :meth:`after_backward`, they get no weight decay and the optimizer restarts at each experience (no
    momentum carries an old update into them), so they never change. Only the task's free weights train,
    pruning picks among those only, and regrowth lands only on free positions (no other task's mask holds
    them), so the share of its mask a task can train never shrinks (growing onto other tasks' frozen
    weights would be a one-way ratchet: pruning never gives them back). After a task its mask never
    changes. At test time each sample runs with *its own task's mask* (the reference code's ``_set_mask``),
    not the union of the masks up to its task, so a task sees exactly the subnetwork it was trained with.

    Departures: biases, normalization layers and the head are kept per task (copies selected by task id)
    rather than shared (the reference code lets BatchNorm drift across tasks); masks cover the backbone's
    weights of two or more dimensions; the reference's choice of a mask by accuracy on a few test
    samples is replaced by the given task id; the topology keeps changing until the experience ends
    (no final fraction without updates); the decay's horizon is ``decay_epochs``, not the runner's own steps.

    Reported: :meth:`task_sparsity` per task. Kept per task: its mask (:attr:`masks`; one bit an entry in
    principle, a byte as stored, which :meth:`memory_bytes` counts) and its biases, normalization tensors and
    head (:attr:`own`)."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(task_ids=True, freeze=False, freeze_refusal=OWN_TENSORS_FREEZE)

    sparsity: Annotated[float, Interval(gt=0, lt=1)] = 0.8
    """Fraction of the backbone's masked weights outside each task's mask (80% in the paper's main runs)."""
    init: str = "erk"
    """Per-layer density of a new mask: ``erk`` or ``uniform``."""
    growth: str = "random"
    """How pruned weights are replaced: ``random`` (SET) or ``gradient`` (RigL, largest dense gradient)."""
    update_every: Annotated[int, Ge(1)] = 100
    """Steps between two prune/grow updates (400 batches in the paper's CIFAR runs)."""
    prune_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.5
    """Fraction of the task's free weights in a layer pruned (and regrown) at the first update of an experience
    (the reference's ``prune_rate``, 0.5)."""
    final_prune_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.005
    """The fraction at the end of the decay (the reference's ``eta_min``, 0.005)."""
    decay_epochs: Annotated[float, Ge(0)] = 5.0
    """Passes over an experience's training set over which the fraction decays, then stays at
    ``final_prune_fraction``: the run's ``optim.epochs`` (5 by default); 0 keeps ``prune_fraction`` throughout."""
    own: TaskTable = field(default_factory=TaskTable, init=False, repr=False)
    """Each task's tensors outside the masked weights: biases, normalization tensors, the head."""
    masks: TaskTensors = field(default_factory=TaskTensors, init=False, repr=False)
    """Each task's mask (bool, the weight's shape) per masked weight."""
    frozen: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    """Per masked weight, the union of the other tasks' masks: positions the current task may not train."""
    steps: int = field(default=0, init=False, repr=False)
    samples: int = field(default=0, init=False, repr=False)
    """Training samples drawn in the current experience (the decay's clock)."""
    train_size: int = field(default=0, init=False, repr=False)
    """The current experience's training samples (one pass of the decay)."""
    dense: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    """The masked weights of the last training forward pass, kept for their dense gradient (RigL growth)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in INITS:
            raise ConfigError(f"strategy.init must be one of {list(INITS)}, got {self.init!r}")
        if self.growth not in GROWTHS:
            raise ConfigError(f"strategy.growth must be one of {list(GROWTHS)}, got {self.growth!r}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.own, self.masks, self.frozen, self.steps, self.dense = TaskTable(), TaskTensors(), {}, 0, {}
        self.samples, self.train_size = 0, 0

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """Train on the experience with a new optimizer (:mod:`~lifelong.strategies.parts.task_tables`)."""
        return ExperiencePlan(train_size=len(experiences[index].train), reset_optimizer=True)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Give a new task its own biases, normalization tensors and head (copies of the first task's) and a
        new mask; freeze what the other tasks' masks hold."""
        masked = set(masked_names(model))
        self.own.begin(model, experience.task_id, [name for name in model_tensors(model) if name not in masked])
        self.steps, self.dense, self.samples, self.train_size = 0, {}, 0, len(experience.train)
        if self.own.current not in self.masks:
            self.masks.create(self.own.current, self.new_mask(model), lambda _: False)
        self.frozen = self.other_tasks(model)

    def new_mask(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A mask per masked weight, each layer's positions drawn at random at its density."""
        weights = {name: model.get_parameter(name) for name in masked_names(model)}
        densities = layer_densities([w.shape for w in weights.values()], 1 - self.sparsity, self.init)
        mask: dict[str, torch.Tensor] = {}
        for (name, weight), density in zip(weights.items(), densities, strict=True):
            keep = max(1, round(density * weight.numel()))
            chosen = torch.randperm(weight.numel(), generator=self.generator)[:keep].to(weight.device)
            flat = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
            mask[name] = flat.index_fill(0, chosen, True).view_as(weight)
        return mask

    def other_tasks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The union of the masks of every task but the current one, per masked weight."""
        frozen = {name: torch.zeros_like(model.get_parameter(name), dtype=torch.bool) for name in masked_names(model)}
        for task, mask in self.masks.sets.items():
            if task != self.own.current:
                for name, m in mask.items():
                    frozen[name] |= m
        return frozen

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The task's own tensors, and the masked weights without weight decay (decay would move the
        frozen ones)."""
        return [*self.own.parameter_groups(model),
                {"params": [model.get_parameter(name) for name in masked_names(model)], "weight_decay": 0.0}]

    def masked_weights(self, model: nn.Module, task: int) -> dict[str, torch.Tensor]:
        """The masked weights times ``task``'s mask (the model's own weights for a task without one)."""
        mask = self.masks.of(task)
        values = {name: model.get_parameter(name) * m for name, m in mask.items()}
        if self.growth == "gradient" and task == self.own.current and torch.is_grad_enabled() and model.training \
                and (self.steps + 1) % self.update_every == 0:
            for value in values.values():
                value.retain_grad()
            self.dense = values
        return values

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Each sample through its task's subnetwork and own tensors, masked to its task's classes."""
        return self.mask_logits(by_task(x, task, lambda part, t: self.own.run(model, part, t,
                                                                              self.masked_weights(model, t))), task)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        self.samples += len(batch.y)
        return self.loss(model, batch.x, batch.y, batch.task)

    def prune_rate(self) -> float:
        """The fraction pruned at an update now: the cosine decay over ``decay_epochs`` passes (the samples
        drawn so far, this one's included, over the experience's training set)."""
        if self.decay_epochs == 0:
            return self.prune_fraction
        return cosine_fraction(self.prune_fraction, self.final_prune_fraction,
                               self.samples / (self.decay_epochs * max(self.train_size, 1)))

    def after_backward(self, model: nn.Module) -> None:
        """Zero the gradients of frozen weights (and of those outside the mask); every ``update_every``
        steps, prune and grow the task's mask first."""
        mask = self.masks.of(self.own.current)
        if not mask:
            return
        self.steps += 1
        if self.steps % self.update_every == 0:
            self.update_mask(model, mask)
        for name, m in mask.items():
            grad = model.get_parameter(name).grad
            if grad is not None:
                grad.mul_(m & ~self.frozen[name])

    @torch.no_grad()
    def update_mask(self, model: nn.Module, mask: dict[str, torch.Tensor]) -> None:
        """Per layer: drop the smallest-magnitude :meth:`prune_rate` of the task's free weights (zeroing them),
        then add as many free positions from outside the mask (no other task's), at random or by dense
        gradient, starting at zero."""
        rate = self.prune_rate()
        for name, m in mask.items():
            weight, frozen = model.get_parameter(name), self.frozen[name]
            free = m & ~frozen
            count = int(rate * int(free.sum()))
            if count == 0:
                continue
            # positions in the tensors' logical order (reshape, not view: a channels-last weight is not flat)
            flat = m.reshape(-1).clone()
            magnitude = weight.abs().masked_fill(~free, math.inf).reshape(-1)
            pruned = magnitude.topk(count, largest=False).indices
            flat[pruned] = False
            dense = self.dense.get(name)
            if self.growth == "gradient" and dense is not None and dense.grad is not None:
                score = dense.grad.abs().reshape(-1)
            else:
                score = torch.rand(flat.numel(), generator=self.generator).to(flat.device)
            # free positions outside the mask, the ones just pruned among them: always at least ``count``
            grown = score.masked_fill(flat | frozen.reshape(-1), -math.inf).topk(count).indices
            flat[grown] = True
            m.copy_(flat.view(m.shape))
            zeroed = torch.zeros_like(flat)
            zeroed[torch.cat([pruned, grown])] = True
            weight.masked_fill_(zeroed.view(weight.shape), 0.0)
        self.dense = {}

    def task_sparsity(self) -> dict[int, float]:
        """Per task, the fraction of the masked weights outside its mask."""
        return {task: 1 - sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
                for task, mask in self.masks.sets.items()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.own.state(), "masks": self.masks.state(), "steps": self.steps,
                "samples": self.samples, "train_size": self.train_size}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.own.load(state, model)
        self.masks.load(state["masks"], lambda _: False)
        self.steps, self.samples, self.train_size = int(state["steps"]), int(state["samples"]), int(state["train_size"])
        self.frozen = self.other_tasks(model)
