"""The weight regularisers train at their defaults without diverging: class-incremental digits, the runner's
default optimizer (SGD lr 0.03, momentum 0.9, batch 16, 5 epochs), 3 seeds. Their defaults come from
``benchmarks/tune_defaults.py`` (``lifelong tune`` on digits, trials scored over 3 seeds and pruned when any
diverged, ``docs/results/fmnist-defaults.md``) or an earlier validation split (``docs/results/strategy_defaults.md``);
on the ResNet they hold because the penalties keep their importance below the step's stable stiffness."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from lifelong import OptimConfig, class_incremental, mlp, train
from lifelong.errors import TrainingError
from lifelong.models.resnet import resnet18
from lifelong.strategies import STRATEGIES


@pytest.mark.parametrize("name", ["si", "ewc", "mas"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_regulariser_at_its_defaults_does_not_diverge_on_digits(digits_data, name: str, seed: int) -> None:
    stream = class_incremental(digits_data, 5)
    result = train(stream, mlp(stream.input_shape, stream.n_classes, seed=seed), STRATEGIES[name](), OptimConfig(),
                   seed=seed, device="cpu")
    assert math.isfinite(result.metrics["final_accuracy"]) and result.metrics["final_accuracy"] > 0.15


@pytest.mark.parametrize("name", ["si", "ewc", "mas"])
def test_a_regulariser_at_its_defaults_does_not_diverge_on_the_resnet(digits_data, name: str, monkeypatch) -> None:
    # the catalogue's reduced ResNet-18 (narrower) and optimizer: its normalisation layers' importances pass
    # the stiffness SGD lr 0.05, momentum 0.9 steps stably; the importance ceiling keeps the run finite
    stream = class_incremental(digits_data, 5)
    optim = OptimConfig(lr=0.05, momentum=0.9, batch_size=32, epochs=2)

    def run() -> float:
        torch.manual_seed(0)
        return train(stream, resnet18(stream.input_shape, stream.n_classes, nf=4), STRATEGIES[name](), optim,
                     seed=0, device="cpu").metrics["final_accuracy"]

    assert math.isfinite(run())
    if name != "si":  # without the ceiling EWC and MAS diverge here (SI's importance stays below it)
        monkeypatch.setattr(sys.modules[type(STRATEGIES[name]()).__module__], "importance_ceiling",
                            lambda curvature, factor: None)
        with pytest.raises(TrainingError, match="the loss became nan"):
            run()
