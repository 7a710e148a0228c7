"""The model's train/eval mode around a computation that must see it as at test time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the block (normalisation layers use their running statistics, and a
    single sample's output is defined), then back in the mode it was in, whatever the block raises. A
    model wholly in eval mode already is left alone (an evaluation of many test sets switches modes once)."""
    if not any(module.training for module in model.modules()):
        yield
        return
    model.eval()
    try:
        yield
    finally:
        model.train()
