"""CLR: only the per-task maps, normalization layers and heads train; the anchor stays bit-identical."""

from __future__ import annotations

import pytest
import torch

from lifelong import OptimConfig, cnn, task_incremental, train
from lifelong.errors import ConfigError
from lifelong.strategies import CLR
from lifelong.strategies.base import StrategyContext
from tests.strategies.isolation import (
    Snapshots,
    forgetting_against_naive,
    run_tasks,
    stored_floats,
    task_tensors,
)


def test_the_anchor_stays_bit_identical_after_the_first_experience(small_data) -> None:
    strategy = CLR()
    model, snapshots, _ = run_tasks(small_data, strategy)
    assert not torch.equal(snapshots.models[1]["backbone.1.weight"], snapshots.models[0]["backbone.1.weight"])
    assert all(torch.equal(snapshots.models[1][k], v) for k, v in model.state_dict().items())
    final = task_tensors(strategy.state_dict(), "maps")
    assert not torch.equal(final[2]["backbone.1.scale"], torch.ones(16))  # a later task's map trained
    for later in (1, 2):
        for task in range(later):
            saved = task_tensors(snapshots.states[later], "maps")[task]
            assert all(torch.equal(v, final[task][k]) for k, v in saved.items())


def test_without_train_first_the_whole_model_stays_as_it_came(small_data) -> None:
    model, snapshots, _ = run_tasks(small_data, CLR(train_first=False))
    assert all(torch.equal(snapshots.models[0][k], v) for k, v in model.state_dict().items())


def test_kept_tensors_and_map_fraction_by_hand(small_data) -> None:
    strategy = CLR()
    model, _, _ = run_tasks(small_data, strategy)
    # per task: Linear(8, 16)'s map 16 + 16, BatchNorm1d(16) 4 * 16, head 16 * 6 + 6
    state = strategy.state_dict()
    assert stored_floats(state, "maps") + stored_floats(state) == 3 * (32 + 64 + 102) == 594
    assert strategy.map_fraction(model) == 32 / (8 * 16 + 16 + 2 * 16)


def test_convolutions_get_depthwise_identity_maps_that_train(digits_data) -> None:
    stream = task_incremental(digits_data, 2)
    model = cnn(stream.input_shape, stream.n_classes, channels=(4, 8), seed=0)
    strategy = CLR(train_first=False)
    model.eval()
    before = model(stream[1].test.x[:8])
    strategy.setup(StrategyContext(stream, 0))
    strategy.before_experience(model, stream[0])
    assert torch.allclose(strategy.logits(model, stream[1].test.x[:8], torch.zeros(8, dtype=torch.long)),
                          strategy.mask_logits(before, torch.zeros(8, dtype=torch.long)), atol=1e-6)
    snapshots = Snapshots(model, strategy := CLR(train_first=False))
    train(stream, model, strategy, OptimConfig(lr=0.05, epochs=1, batch_size=32), seed=0, observers=[snapshots])
    kernel = task_tensors(strategy.state_dict(), "maps")[1]["backbone.0.kernel"]
    assert kernel.shape == (4, 1, 3, 3) and not torch.equal(kernel, task_tensors(snapshots.states[1], "maps")[1]
                                                            ["backbone.0.kernel"])
    # per task: kernels 4 * 9 + 8 * 9 over the backbone's 1 * 4 * 9 + 4 + 4 * 8 * 9 + 8 weights and biases
    # and BatchNorm2d's 2 * (4 + 8)
    assert strategy.map_fraction(model) == (4 * 9 + 8 * 9) / (36 + 4 + 288 + 8 + 24)


def test_an_even_kernel_is_refused() -> None:
    with pytest.raises(ConfigError, match="strategy.kernel_size must be an odd number"):
        CLR(kernel_size=2)


def test_forgets_clearly_less_than_naive(digits_data) -> None:
    ours, naive = forgetting_against_naive(digits_data, CLR())
    assert ours < 0.02 and naive > 0.3, (ours, naive)
