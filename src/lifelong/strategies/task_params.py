"""The shared machinery of the parameter-isolation methods (BN-only, CLR, DST-CL): tensors kept per task
and selected, for each sample, by its task id.

The user's model class stays as it is. A strategy keeps, per task, its own copies of some of the model's
parameters and buffers (normalization affines and statistics, the head, ...) in a :class:`TaskTensors`,
and runs the model with :func:`torch.func.functional_call`, which substitutes those tensors for the
model's own for the duration of one call (a BatchNorm in training mode then updates the task's running
statistics in place, not the model's). A batch whose samples belong to several tasks (evaluation, a
mixed test set) is split by task id and each part runs with its task's tensors (:func:`by_task`).

The model's own tensors are never changed by a task's training unless the strategy trains them on
purpose (the anchor's first experience, DST's weights): what the model holds after a run is the shared
part, and predictions for a task go through the strategy. A task not trained yet (the accuracy matrix
tests every experience after each one) runs with the model's own tensors.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lifelong.data.streams import Batch, Experience
from lifelong.models.nets import split_model
from lifelong.models.norms import NORM_TYPES
from lifelong.strategies.base import ExperiencePlan, Strategy, StrategyContext


def prefix_of(model: nn.Module, module: nn.Module) -> str:
    """The qualified name of ``module`` inside ``model`` followed by a dot ('' for the model itself)."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return f"{name}." if name else ""
    raise ValueError("the module is not part of the model")


def head_names(model: nn.Module) -> list[str]:
    """Qualified names of the head's parameters (:func:`~lifelong.models.nets.split_model`)."""
    head = split_model(model)[1]
    prefix = prefix_of(model, head)
    return [prefix + name for name, _ in head.named_parameters()]


def norm_names(model: nn.Module) -> list[str]:
    """Qualified names of the parameters and buffers of the backbone's normalization layers."""
    backbone = split_model(model)[0]
    prefix = prefix_of(model, backbone)
    return [prefix + f"{module_name}.{name}".lstrip(".")
            for module_name, module in backbone.named_modules() if isinstance(module, NORM_TYPES)
            for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]]


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``model`` by qualified name."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def floating_numel(tensors: Iterable[torch.Tensor]) -> int:
    """Entries of the floating-point tensors (parameters, statistics); integer counters do not count."""
    return sum(t.numel() for t in tensors if t.is_floating_point())


class TaskTensors:
    """Named tensors kept per task id: ``of(task)`` is one task's ``{name: tensor}``. Entries flagged
    trainable are leaf tensors that require gradients (the optimizer's parameters while their task trains)."""

    def __init__(self) -> None:
        self.sets: dict[int, dict[str, torch.Tensor]] = {}

    def __contains__(self, task: int) -> bool:
        return task in self.sets

    def of(self, task: int) -> dict[str, torch.Tensor]:
        """The tensors of ``task``; empty for a task not created yet."""
        return self.sets.get(task, {})

    def create(self, task: int, source: dict[str, torch.Tensor], trainable: Callable[[str], bool]) -> None:
        """Give ``task`` its own copies of ``source``; ``trainable(name)`` says which require gradients."""
        self.sets[task] = {name: t.detach().clone().requires_grad_(trainable(name) and t.is_floating_point())
                           for name, t in source.items()}

    def first(self) -> int | None:
        """The task created first (None before any)."""
        return next(iter(self.sets), None)

    def trainable(self, task: int) -> list[torch.Tensor]:
        return [t for t in self.of(task).values() if t.requires_grad]

    def numel(self) -> int:
        """Floating-point entries over every task (see :func:`floating_numel`)."""
        return sum(floating_numel(tensors.values()) for tensors in self.sets.values())

    def state(self) -> dict[str, Any]:
        """The tasks (in the order they were created) and their tensors, as :meth:`load` takes them
        (``torch.load(weights_only=True)``)."""
        tasks = list(self.sets)
        return {"tasks": tasks, "tensors": [self.sets[task] for task in tasks]}

    @torch.no_grad()
    def load(self, state: dict[str, Any], trainable: Callable[[str], bool]) -> None:
        """Restore :meth:`state`. A task that already has tensors of the same names gets the saved values
        copied into them, so that an optimizer built over them (a checkpoint restored inside an
        experience) keeps stepping the tensors in use."""
        loaded: dict[int, dict[str, torch.Tensor]] = {}
        for task, saved in zip(state["tasks"], state["tensors"], strict=True):
            current = self.sets.get(int(task))
            if current is not None and current.keys() == saved.keys():
                for name, value in saved.items():
                    current[name].copy_(value)
                loaded[int(task)] = current
            else:
                self.create(int(task), saved, trainable)
                loaded[int(task)] = self.sets[int(task)]
        self.sets = loaded


def by_task(x: torch.Tensor, task: torch.Tensor, forward: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """``forward(x_t, t)`` for the samples ``x_t`` of each task ``t`` in ``task`` (B,), gathered back
    into the batch's order (B, ...). One call when the batch holds one task (every training batch of a
    task-incremental stream)."""
    tasks = task.unique().tolist()
    if len(tasks) == 1:
        return forward(x, int(tasks[0]))
    out: torch.Tensor | None = None
    for t in tasks:
        rows = (task == t).nonzero().squeeze(1)
        part = forward(x.index_select(0, rows), int(t))
        if out is None:
            out = part.new_empty((len(x), *part.shape[1:]))
        out = out.index_copy(0, rows, part)
    assert out is not None, "an empty batch has no task"
    return out


@dataclass
class TaskIsolation(Strategy):
    """Abstract: each task trains and is predicted with its own tensors (:attr:`task_tensors`: copies of
    the model tensors named by :meth:`per_task_names`); the rest of the model is shared, frozen unless
    the concrete method trains it (:meth:`shared_values`).

    Every experience rebuilds the optimizer (``reset_optimizer`` in the plan): the new task's tensors are
    new parameters, and no momentum or moment estimate of an earlier task may move what it froze."""


    task_tensors: TaskTensors = field(default_factory=TaskTensors, init=False, repr=False)
    current: int = field(default=-1, init=False, repr=False)
    """Task id of the experience being trained (-1 before the first)."""
    parameter_names: frozenset[str] = field(default=frozenset(), init=False, repr=False)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.task_tensors, self.current, self.parameter_names = TaskTensors(), -1, frozenset()

    @abstractmethod
    def per_task_names(self, model: nn.Module) -> list[str]:
        """Qualified names of the model's parameters and buffers each task keeps its own copy of."""

    def shared_values(self, model: nn.Module, task: int) -> dict[str, torch.Tensor]:
        """The tensors a forward pass of ``task`` uses for the model's shared parameters; default: the
        model's own, detached (frozen: no gradient is computed for them)."""
        return {name: p.detach() for name, p in model.named_parameters()}

    def extra_trainable(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer groups beyond the current task's own tensors (a trained backbone); default none."""
        return []

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Create the experience's task's tensors: copies of the first task's (a task starts from the
        anchor's companions), or of the model's own for the first task."""
        self.current = experience.task_id
        self.parameter_names = frozenset(name for name, _ in model.named_parameters())
        if self.current in self.task_tensors:
            return
        names = self.per_task_names(model)
        first = self.task_tensors.first()
        source = model_tensors(model) if first is None else self.task_tensors.of(first)
        self.task_tensors.create(self.current, {name: source[name] for name in names},
                                 self.parameter_names.__contains__)

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        return ExperiencePlan(train_size=len(experiences[index].train), reset_optimizer=True)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"params": self.task_tensors.trainable(self.current)}, *self.extra_trainable(model)]

    def forward_task(self, model: nn.Module, x: torch.Tensor, task: int) -> torch.Tensor:
        """``model(x)`` with ``task``'s tensors in place of the model's own."""
        return functional_call(model, {**self.shared_values(model, task), **self.task_tensors.of(task)}, (x,))

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Each sample through the model with its task's tensors, masked to its task's classes."""
        return self.mask_logits(by_task(x, task, lambda part, t: self.forward_task(model, part, t)), task)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch.x, batch.task), batch.y)

    def extra_parameters(self) -> int:
        """Entries the method stores beyond the model: every task's floating-point tensors (parameters and
        normalization statistics; integer batch counters left out)."""
        return self.task_tensors.numel()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "task_tensors": self.task_tensors.state(), "current": self.current}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.parameter_names = frozenset(name for name, _ in model.named_parameters())
        self.task_tensors.load(state["task_tensors"], self.parameter_names.__contains__)
        self.current = int(state["current"])


@dataclass
class FrozenAnchor(TaskIsolation):
    """Abstract (BN-only, CLR): a backbone frozen after ``train_first`` (the anchor), per-task normalization
    layers and heads, and whatever else the concrete method adds per task.

    ``train_first``: the first experience also trains the whole backbone, which is then frozen (the
    anchor); off, the backbone stays at the values the model came with (random initial weights, or a
    pretrained backbone the user loaded)."""

    train_first: bool = True
    trains_backbone: bool = field(default=False, init=False, repr=False)
    """Whether the experience being trained trains the backbone: the first task's, with ``train_first``."""

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        super().before_experience(model, experience)
        self.trains_backbone = self.train_first and self.task_tensors.first() == self.current

    def per_task_names(self, model: nn.Module) -> list[str]:
        return norm_names(model) + head_names(model)

    def shared_values(self, model: nn.Module, task: int) -> dict[str, torch.Tensor]:
        return dict(model.named_parameters()) if self.trains_backbone else super().shared_values(model, task)

    def extra_trainable(self, model: nn.Module) -> list[dict[str, Any]]:
        own = self.task_tensors.of(self.current)
        shared = [p for name, p in model.named_parameters() if p.requires_grad and name not in own]
        return [{"params": shared}] if self.trains_backbone and shared else []

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.trains_backbone = self.train_first and self.task_tensors.first() == self.current

