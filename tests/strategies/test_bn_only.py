"""BN-only: per task, only the normalization layers (affine and statistics) change, and the head with
``train_head``; by default the head stays at its random initial values, as in the paper."""

from __future__ import annotations

import pytest
import torch

from lifelong.errors import ConfigError
from lifelong.strategies import BNOnly
from lifelong.strategies.parts.task_tables import norm_names
from tests.strategies.isolation import forgetting_against_naive, run_tasks, stored_floats, task_tensors


def test_by_default_only_normalization_trains_and_the_random_head_stays_as_it_was(small_data) -> None:
    """The paper's setting (issue 25: the docstring said the output layer trains too, the abstract that every
    other parameter stays frozen)."""
    strategy = BNOnly()
    model, snapshots, _ = run_tasks(small_data, strategy)
    initial = snapshots.models[0]
    assert all(torch.equal(initial[k], v) for k, v in model.state_dict().items())
    final = task_tensors(strategy.state_dict())
    assert all(list(final[task]) == norm_names(model) for task in range(3))
    # BatchNorm1d(16): weight, bias, running mean and variance 4 * 16 per task, no head
    assert stored_floats(strategy.state_dict()) == 3 * 4 * 16
    assert [[p is model.head.weight for p in group["params"]] for group in strategy.parameter_groups(model)] == \
        [[False, False]]


def test_with_train_head_only_per_task_normalization_and_head_change(small_data) -> None:
    strategy = BNOnly(train_head=True)
    model, snapshots, _ = run_tasks(small_data, strategy)
    initial = snapshots.models[0]
    assert all(torch.equal(initial[k], v) for k, v in model.state_dict().items())  # the frozen random network
    final = task_tensors(strategy.state_dict())
    names = ["backbone.2.weight", "backbone.2.bias", "backbone.2.running_mean", "backbone.2.running_var",
             "backbone.2.num_batches_tracked", "head.weight", "head.bias"]
    assert norm_names(model) == names[:5]
    for task in range(3):
        assert list(final[task]) == names
        assert not torch.equal(final[task]["backbone.2.weight"], initial["backbone.2.weight"])  # it trained
        assert not torch.equal(final[task]["backbone.2.running_mean"], initial["backbone.2.running_mean"])
    for task, state in ((0, snapshots.states[1]), (0, snapshots.states[2]), (1, snapshots.states[2])):
        assert all(torch.equal(v, final[task][k]) for k, v in task_tensors(state)[task].items())


def test_kept_per_task_are_norm_affine_statistics_and_head(small_data) -> None:
    strategy = BNOnly(train_head=True)
    run_tasks(small_data, strategy)
    # BatchNorm1d(16): weight, bias, running mean and variance 4 * 16; head Linear(16, 6): 96 + 6
    assert stored_floats(strategy.state_dict()) == 3 * (4 * 16 + 16 * 6 + 6) == 498


def test_train_first_freezes_the_backbone_after_the_first_experience(small_data) -> None:
    model, snapshots, _ = run_tasks(small_data, BNOnly(train_first=True))
    assert not torch.equal(snapshots.models[1]["backbone.1.weight"], snapshots.models[0]["backbone.1.weight"])
    assert all(torch.equal(snapshots.models[1][k], v) for k, v in model.state_dict().items())


def test_a_model_without_normalization_is_refused(small_data) -> None:
    with pytest.raises(ConfigError, match="model.norm = 'batch'"):
        run_tasks(small_data, BNOnly(), norm="none")


def test_forgets_clearly_less_than_naive(digits_data) -> None:
    ours, naive = forgetting_against_naive(digits_data, BNOnly())
    assert ours < 0.02 and naive > 0.3, (ours, naive)
