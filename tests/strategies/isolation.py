"""Helpers shared by the parameter-isolation tests (DST, CLR, BN-only)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from lifelong import OptimConfig, domain_incremental, mlp, task_incremental, train
from lifelong.data import Dataset
from lifelong.runner.observers import Observer, TrainState
from lifelong.strategies import Strategy

MOMENTUM = OptimConfig(lr=0.05, epochs=2, batch_size=16, momentum=0.9, weight_decay=1e-3)
"""Momentum and weight decay: both would move a frozen weight if the method did not keep them off it."""


class Snapshots(Observer):
    """Copies of the model's tensors and of the strategy's state at the start of each experience (after
    ``before_experience``), by experience index."""

    def __init__(self, model: nn.Module, strategy: Strategy) -> None:
        self.model, self.strategy = model, strategy
        self.models: list[dict[str, torch.Tensor]] = []
        self.states: list[dict] = []

    def on_experience_start(self, state: TrainState) -> None:
        self.models.append(copy.deepcopy(self.model.state_dict()))
        self.states.append(copy.deepcopy(self.strategy.state_dict()))


def run_tasks(data: Dataset, strategy: Strategy, norm: str = "batch", optim: OptimConfig = MOMENTUM):
    """Trains a small MLP on a 3-task stream of ``data``; returns the model, the snapshots, the result."""
    model = mlp(data.input_shape, data.n_classes, hidden=(16,), norm=norm, seed=0)
    snapshots = Snapshots(model, strategy)
    result = train(task_incremental(data, 3), model, strategy, optim, seed=0, observers=[snapshots])
    return model, snapshots, result


def task_tensors(state: dict, key: str = "task_tensors") -> dict[int, dict[str, torch.Tensor]]:
    """A state dict's per-task tensors (of ``key``) by task."""
    return dict(zip(state[key]["tasks"], state[key]["tensors"], strict=True))


def stored_floats(state: dict, key: str = "task_tensors") -> int:
    """Floating-point entries of every task's tensors (of ``key``) in a state dict: parameters and running
    statistics, without the integer batch counters."""
    return sum(t.numel() for tensors in task_tensors(state, key).values() for t in tensors.values()
               if t.is_floating_point())


def forgetting_against_naive(data: Dataset, strategy: Strategy) -> tuple[float, float]:
    """Forgetting of ``strategy`` and of naive fine-tuning on task-aware permuted digits (4 tasks, all
    10 classes in each, so a shared model forgets)."""
    from lifelong.strategies import Naive

    stream = domain_incremental(data, 4, transform="permutation", task_aware=True, seed=0)
    optim = OptimConfig(lr=0.05, epochs=2, batch_size=32)
    values = []
    for method in (strategy, Naive()):
        model = mlp(stream.input_shape, stream.n_classes, hidden=(32,), norm="batch", seed=0)
        values.append(train(stream, model, method, optim, seed=0).metrics["forgetting"])
    return values[0], values[1]
