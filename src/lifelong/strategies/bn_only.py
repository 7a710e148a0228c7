"""Task-specific normalization: per task, only the normalization layers' affine parameters (optionally the
head too) train, the rest of the network stays frozen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.strategies.base import OWN_TENSORS_FREEZE, Capabilities, ExperiencePlan, Strategy, StrategyContext
from lifelong.strategies.parts.task_tables import TaskTable, by_task, head_names, norm_names


@dataclass
class BNOnly(Strategy):
    """Training BatchNorm and only BatchNorm (Frankle, Schwab & Morcos, ICLR 2021, "Training BatchNorm and Only
    BatchNorm: On the Expressive Power of Random Features in CNNs"): a network whose weights stay at their
    random initial values reaches far-above-chance accuracy when only the normalization layers' affine
    parameters (gamma, beta) train, every other parameter frozen (the output layer included, as in the
    paper's main experiments). Applied per task, as the continual-learning work on task-specific
    normalization does: every task keeps its own copy of each normalization layer's affine parameters *and*
    running statistics, selected by the task id of each sample; the shared weights never change after the
    first experience, so no task forgets (the stream must give task ids, the runner refuses one that does
    not).

    The head: by default (``train_head = False``) the output layer stays frozen at its initial values and
    is shared, as in the paper; ``train_head = True`` gives each task its own head too (the paper's variant
    that also trains the output layer, a common choice in task-specific normalization).

    Frozen values: by default (``train_first = False``) the weights stay at their initial (random, or
    loaded) values, as in the paper; with ``train_first`` the first experience trains the whole network
    and its weights are then frozen (a first-task anchor, as in CLR). A new task's normalization layers
    (and head) start as copies of the first task's.

    Departures: any normalization layer of the backbone counts (BatchNorm, GroupNorm, LayerNorm, the
    library's BCN and AdaB2N), not only BatchNorm; a model without one is refused. The head is one
    linear layer over all classes, masked to each task's classes; the paper studies one task at a time.

    Kept per task (:attr:`own`): the affine parameters and running statistics of every normalization layer,
    with ``train_head`` the head's weight and bias too."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(task_ids=True, freeze=False, freeze_refusal=OWN_TENSORS_FREEZE)

    train_first: bool = False
    """Train the whole network in the first experience, then freeze its weights (a first-task anchor)."""
    train_head: bool = False
    """Give each task its own trained head; off (the paper's setting), the head stays frozen and shared."""
    own: TaskTable = field(init=False, repr=False)
    """Each task's normalization layers, and heads with ``train_head`` (made at :meth:`setup`)."""

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.own = TaskTable(self.train_first)

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        """Train on the experience with a new optimizer (:mod:`~lifelong.strategies.parts.task_tables`)."""
        return ExperiencePlan(train_size=len(experiences[index].train), reset_optimizer=True)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Give a new task its own normalization layers, and with ``train_head`` its head (copies of the first
        task's)."""
        names = norm_names(model)
        if not names:
            raise ConfigError("strategy 'bn_only' trains the backbone's normalization layers and this model has "
                              "none; build it with model.norm = 'batch' (or another norm)")
        self.own.begin(model, experience.task_id, names + (head_names(model) if self.train_head else []))

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return self.own.parameter_groups(model)

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Each sample through the frozen weights and its task's normalization layers (and head), masked to its
        task's classes."""
        return self.mask_logits(by_task(x, task, lambda part, t: self.own.run(model, part, t, self.own.shared(model))),
                                task)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch.x, batch.y, batch.task)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.own.state()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.own.load(state, model)
