"""``model.freeze``: exactly the intended parameters train, the others stay bit-identical through a run, and
strategies that would ignore it refuse it in one line."""

from __future__ import annotations

import pytest
import torch

from lifelong.config import validate_config
from lifelong.errors import ConfigError
from lifelong.experiment import prepare, run_config
from lifelong.models.freeze import freeze
from lifelong.models.nets import cnn, mlp

# cnn((1, 8, 8), channels=(4, 8)): Conv 0, BatchNorm 1, ReLU 2, MaxPool 3, Conv 4, BatchNorm 5, ReLU 6, MaxPool 7, ...
HEAD = {"head.weight", "head.bias"}
NORMS = {"backbone.1.weight", "backbone.1.bias", "backbone.5.weight", "backbone.5.bias"}


def trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_each_mode_leaves_exactly_the_intended_parameters_trainable() -> None:
    everything = {name for name, _ in cnn((1, 8, 8), 4, channels=(4, 8)).named_parameters()}
    assert len(everything) == 10  # two convolutions, two norms, the head: weight and bias each
    for mode, expected in (("none", everything), ("backbone", HEAD), ("norm-only", HEAD | NORMS)):
        model = cnn((1, 8, 8), 4, channels=(4, 8))
        freeze(model, mode)
        assert trainable(model) == expected, mode
    with pytest.raises(ConfigError, match="model.freeze='norm-only': the backbone has no normalization layer"):
        freeze(mlp((4,), 3), "norm-only")  # the default MLP has no norm
    with pytest.raises(ConfigError, match="model.freeze must be one of none, backbone, norm-only, got 'head'"):
        freeze(mlp((4,), 3), "head")


@pytest.mark.parametrize("mode", ["backbone", "norm-only"])
def test_frozen_parameters_are_bit_identical_after_a_run_and_the_others_train(mode) -> None:
    config = validate_config({
        "model": {"name": "cnn", "channels": [4, 8], "freeze": mode},
        "scenario": {"name": "class_incremental", "n_experiences": 2},
        "strategy": {"name": "er", "buffer_size": 50}, "optim": {"epochs": 1, "weight_decay": 0.01},
        "run": {"progress": False, "checkpoint": False}})
    stream, model, strategy = prepare(config)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    run_config(config, prepared=(stream, model, strategy))
    expected = HEAD | (NORMS if mode == "norm-only" else set())
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (name not in expected), name  # weight decay moves no frozen one


def test_strategies_that_would_ignore_the_freeze_refuse_it_in_one_line() -> None:
    for strategy, fragment in (({"name": "bn_only"}, "does not apply to strategy 'bn_only'"),
                               ({"name": "hypernetwork"}, "does not apply to strategy 'hypernetwork'"),
                               ({"name": "ncm"}, "contradicts strategy.adapt_experiences=2")):
        config = validate_config({"model": {"name": "mlp", "freeze": "backbone"}, "strategy": strategy,
                                  "scenario": {"name": "task_incremental", "n_experiences": 5}})
        with pytest.raises(ConfigError, match=f"^model.freeze='backbone' {fragment}") as error:
            prepare(config)
        assert "\n" not in str(error.value)
    config = validate_config({"model": {"name": "mlp", "freeze": "backbone"},
                              "strategy": {"name": "ncm", "adapt_experiences": 0}})
    assert trainable(prepare(config)[1]) == HEAD
