"""The weight regularisers train at their defaults without diverging: class-incremental digits, the runner's
default optimizer (SGD lr 0.03, momentum 0.9, batch 16, 5 epochs), 3 seeds. Their defaults come from
``benchmarks/tune_defaults.py`` (``lifelong tune`` on digits, trials scored over 3 seeds and pruned when any
diverged, ``docs/results/fmnist-defaults.md``) or an earlier validation split (``docs/results/strategy_defaults.md``)."""

from __future__ import annotations

import math

import pytest

from lifelong import OptimConfig, class_incremental, mlp, train
from lifelong.strategies import STRATEGIES


@pytest.mark.parametrize("name", ["si", "ewc", "mas"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_regulariser_at_its_defaults_does_not_diverge_on_digits(digits_data, name: str, seed: int) -> None:
    stream = class_incremental(digits_data, 5)
    result = train(stream, mlp(stream.input_shape, stream.n_classes, seed=seed), STRATEGIES[name](), OptimConfig(),
                   seed=seed, device="cpu")
    assert math.isfinite(result.metrics["final_accuracy"]) and result.metrics["final_accuracy"] > 0.15
