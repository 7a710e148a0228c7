"""The closure convention of ``torch.optim.Optimizer.step``, shared by the optimizers written here."""

from __future__ import annotations

from collections.abc import Callable

import torch


def evaluate_closure(closure: Callable[[], float] | None) -> float | None:
    """Re-evaluate the loss with gradients enabled (inside a ``no_grad`` step) when a closure is given."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
