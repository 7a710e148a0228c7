"""Accuracy of a model (through its strategy's prediction rule) on test sets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lifelong.data.streams import TensorSet
from lifelong.strategies.base import Strategy


@torch.no_grad()
def accuracy(model: nn.Module, strategy: Strategy, data: TensorSet, batch_size: int = 1024) -> float:
    """Fraction of ``data`` that ``strategy.predict`` labels correctly (0.0 for an empty set).

    The model is put in eval mode for the call and restored to its previous mode after.
    """
    if len(data) == 0:
        return 0.0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for begin in range(0, len(data), batch_size):
        x = data.x[begin:begin + batch_size].to(device, non_blocking=True)
        task = data.task[begin:begin + batch_size].to(device)
        y = data.y[begin:begin + batch_size].to(device)
        correct += int((strategy.predict(model, x, task) == y).sum())
    model.train(was_training)
    return correct / len(data)


def accuracies(model: nn.Module, strategy: Strategy, test_sets: Sequence[TensorSet],
               batch_size: int = 1024) -> list[float]:
    """Accuracy on each test set, in order: one row of the accuracy matrix."""
    return [accuracy(model, strategy, data, batch_size) for data in test_sets]
