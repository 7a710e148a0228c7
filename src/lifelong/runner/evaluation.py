"""One row of a run's matrix: the model (through its strategy) measured on every test set, by the
stream's objective (:mod:`lifelong.metrics.objectives`): accuracy of a classifier, mean next-token loss of
a language model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from lifelong.data.streams import TensorSet
from lifelong.metrics.objectives import logits_of, next_token_loss
from lifelong.models.modes import eval_mode
from lifelong.strategies.base import Strategy
from lifelong.world import World


@torch.no_grad()
def accuracy(model: nn.Module, strategy: Strategy, data: TensorSet, batch_size: int = 1024,
             world: World = World()) -> float:
    """Fraction of ``data`` that ``strategy.predict`` labels correctly (0.0 for an empty set).

    The model is put in eval mode for the call and restored to its previous mode after. In a
    data-parallel run each rank scores its part of the set and the counts are summed over ranks, so
    every rank returns the accuracy on the whole set.
    """
    return _mean(model, data, batch_size, world, lambda x, y, task: (strategy.predict(model, x, task) == y).sum(),
                 lambda batch: len(batch))


@torch.no_grad()
def mean_loss(model: nn.Module, data: TensorSet, batch_size: int = 1024, world: World = World()) -> float:
    """Mean next-token cross-entropy (nats per token) of a language model over every token of ``data``'s
    windows ``(N, L + 1)``: windows weigh by their tokens, so the value is the loss of the whole set
    whatever the batching and the data-parallel sharding (0.0 for an empty set)."""
    return _mean(model, data, batch_size, world,
                 lambda x, y, task: next_token_loss(logits_of(model(x[:, :-1])), x[:, 1:], reduction="sum"),
                 lambda batch: batch.numel() - len(batch))


def _mean(model: nn.Module, data: TensorSet, batch_size: int, world: World,
          total: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
          count: Callable[[torch.Tensor], int]) -> float:
    """``sum total(x, y, task) / sum count(x)`` over the batches of ``data`` in eval mode, each rank over
    its part and both sums added over ranks."""
    if len(data) == 0:
        return 0.0
    device = next(model.parameters()).device
    part = data.subset(world.portion(len(data))) if world.distributed else data
    sums = torch.zeros(2, dtype=torch.float64)
    with eval_mode(model):
        for batch in part.batches(batch_size):
            x, y, task = batch.x.to(device, non_blocking=True), batch.y.to(device), batch.task.to(device)
            sums[0] += float(total(x, y, task))
            sums[1] += count(x)
    if world.distributed:
        sums = world.all_reduce_sum(sums)
    return float(sums[0] / sums[1])


def evaluate(model: nn.Module, strategy: Strategy, test_sets: Sequence[TensorSet], batch_size: int = 1024,
             world: World = World()) -> list[float]:
    """The metric on each test set, in order: one row of the run's matrix (accuracies, or a language
    model's mean losses). The model is in eval mode for the whole row, switched once."""
    with eval_mode(model):
        if strategy.language_model:
            return [mean_loss(model, data, batch_size, world) for data in test_sets]
        return [accuracy(model, strategy, data, batch_size, world) for data in test_sets]
