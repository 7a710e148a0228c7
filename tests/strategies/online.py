"""The online setting the online strategies' tests share (one pass over the stream, batch 10, plain SGD: the
protocol of the online continual-learning papers these methods come from), and their runs on digits."""

from __future__ import annotations

from lifelong import (
    OptimConfig,
    RunResult,
    Strategy,
    Stream,
    class_incremental,
    mlp,
    train,
)
from lifelong.data import Dataset

ONLINE = OptimConfig(lr=0.1, momentum=0.0, batch_size=10, epochs=1)


def online_run(stream: Stream, strategy: Strategy) -> RunResult:
    """``strategy`` over ``stream`` once, in the online setting, on the MLP 256-256 of seed 0."""
    return train(stream, mlp(stream.input_shape, stream.n_classes, seed=0), strategy, ONLINE, seed=0)


def online_digits_accuracies(digits_data: Dataset, strategies: dict[str, Strategy]) -> dict[str, float]:
    """The final accuracy of each of ``strategies`` on online class-incremental digits (5 x 2 classes)."""
    stream = class_incremental(digits_data, 5)
    return {name: online_run(stream, strategy).metrics["final_accuracy"] for name, strategy in strategies.items()}
