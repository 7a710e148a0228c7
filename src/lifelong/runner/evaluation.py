"""Accuracy of a model (through its strategy's prediction rule) on test sets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lifelong.data.streams import TensorSet
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
    if len(data) == 0:
        return 0.0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    part = data.subset(world.portion(len(data))) if world.distributed else data
    correct = 0
    for batch in part.batches(batch_size):
        x, y, task = batch.x.to(device, non_blocking=True), batch.y.to(device), batch.task.to(device)
        correct += int((strategy.predict(model, x, task) == y).sum())
    model.train(was_training)
    if world.distributed:
        correct = int(world.all_reduce_sum(torch.tensor([correct], dtype=torch.int64))[0])
    return correct / len(data)


def accuracies(model: nn.Module, strategy: Strategy, test_sets: Sequence[TensorSet],
               batch_size: int = 1024, world: World = World()) -> list[float]:
    """Accuracy on each test set, in order: one row of the accuracy matrix."""
    return [accuracy(model, strategy, data, batch_size, world) for data in test_sets]
