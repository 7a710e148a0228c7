"""The model's train/eval mode around a computation that must see it as at test time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the block (normalisation layers use their running statistics, and a
    single sample's output is defined), then back in the mode it was in, whatever the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
