"""What the parameter-isolation methods (BN-only, CLR, DST-CL) hold: tensors kept per task and selected, for
each sample, by its task id.

The user's model class stays as it is. A strategy keeps, per task, its own copies of some of the model's
parameters and buffers (normalization affines and statistics, the head, ...) in a :class:`TaskTable`
(over a :class:`TaskTensors`), and runs the model with :func:`torch.func.functional_call`, which
substitutes those tensors for the model's own for the duration of one call (a BatchNorm in training mode
then updates the task's running statistics in place, not the model's). A batch whose samples belong to
several tasks (evaluation, a mixed test set) is split by task id and each part runs with its task's tensors
(:func:`by_task`).

The model's own tensors are never changed by a task's training unless the strategy trains them on
purpose (the anchor's first experience, DST's weights): what the model holds after a run is the shared
part, and predictions for a task go through the strategy. A task not trained yet (the accuracy matrix
tests every experience after each one) runs with the model's own tensors.

A method holding a table rebuilds the optimizer at every experience (``reset_optimizer`` in its plan): the
new task's tensors are new parameters, and no momentum or moment estimate of an earlier task may move what
it froze.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from lifelong.models.nets import split_model
from lifelong.models.norms import NORM_TYPES


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


class TaskTable:
    """Per task, its own copies of some of the model's tensors (:attr:`tensors`), the task being trained
    (:attr:`current`, -1 before the first), and the forward pass with a task's copies in place of the model's
    own. The model's other parameters are shared and frozen, except, with ``train_first``, during the first
    task's experience, which trains them too (the anchor: CLR, BN-only's option) and leaves them frozen."""

    def __init__(self, train_first: bool = False) -> None:
        self.train_first = train_first
        self.tensors = TaskTensors()
        self.current = -1

    @property
    def trains_shared(self) -> bool:
        """Whether the experience being trained trains the model's shared parameters: the first task's, with
        ``train_first``."""
        return self.train_first and self.tensors.first() == self.current

    def begin(self, model: nn.Module, task: int, names: Sequence[str]) -> None:
        """Make ``task`` the one trained and give it, if it has none yet, its own copies of the model's
        tensors ``names``: copies of the first task's (a task starts from the anchor's companions), or of the
        model's own for the first task."""
        self.current = task
        if task in self.tensors:
            return
        first = self.tensors.first()
        source = model_tensors(model) if first is None else self.tensors.of(first)
        self.tensors.create(task, {name: source[name] for name in names}, parameter_names(model).__contains__)

    def shared(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's parameters as a forward pass uses them: with their graph while :attr:`trains_shared`,
        detached otherwise (frozen: no gradient is computed for them)."""
        if self.trains_shared:
            return dict(model.named_parameters())
        return {name: p.detach() for name, p in model.named_parameters()}

    def run(self, model: nn.Module, x: torch.Tensor, task: int, shared: dict[str, torch.Tensor]) -> torch.Tensor:
        """``model(x)`` with ``task``'s tensors in place of the model's own and ``shared`` for the others."""
        return functional_call(model, {**shared, **self.tensors.of(task)}, (x,))

    def parameter_groups(self, model: nn.Module, extra: Sequence[torch.Tensor] = ()) -> list[dict[str, Any]]:
        """The trained task's own tensors, with ``extra`` ones of the method's (CLR's maps), in one group;
        while :attr:`trains_shared`, the model's other trainable parameters in a second."""
        own = self.tensors.of(self.current)
        groups: list[dict[str, Any]] = [{"params": self.tensors.trainable(self.current) + list(extra)}]
        shared = [p for name, p in model.named_parameters() if p.requires_grad and name not in own]
        if self.trains_shared and shared:
            groups.append({"params": shared})
        return groups

    def state(self) -> dict[str, Any]:
        """Every task's tensors and the task being trained, as :meth:`load` takes them."""
        return {"task_tensors": self.tensors.state(), "current": self.current}

    def load(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore :meth:`state` (a strategy's state dict holding its keys) for ``model``, copying into the
        tensors an optimizer already steps (:meth:`TaskTensors.load`)."""
        self.tensors.load(state["task_tensors"], parameter_names(model).__contains__)
        self.current = int(state["current"])


def parameter_names(model: nn.Module) -> frozenset[str]:
    """The names of the model's parameters: a task's copies of these train, those of buffers do not."""
    return frozenset(name for name, _ in model.named_parameters())
