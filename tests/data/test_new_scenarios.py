"""Few-shot, hierarchical and recurring scenarios on digits: their structure and short training runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lifelong import ER, OptimConfig, mlp, train
from lifelong.data.fewshot import few_shot
from lifelong.data.hierarchical import hierarchical
from lifelong.data.recurring import recurrence_schedule, recurring
from lifelong.errors import ConfigError
from lifelong.metrics.online import seen_class_accuracy
from lifelong.strategies import STRATEGIES


def few_shot_run(digits_data, strategy) -> list[float]:
    stream = few_shot(digits_data, base_classes=6, n_way=2, k_shot=5, seed=0)
    torch.manual_seed(0)
    result = train(stream, mlp(stream.input_shape, 10, hidden=(64,)), strategy, OptimConfig(epochs=2, lr=0.05))
    return seen_class_accuracy(result.matrix.tolist(), [len(e.test) for e in stream])


def test_few_shot_sessions_on_digits_with_er(digits_data) -> None:
    stream = few_shot(digits_data, base_classes=6, n_way=2, k_shot=5, seed=0)
    assert [e.classes for e in stream] == [(0, 1, 2, 3, 4, 5), (6, 7), (8, 9)]
    assert [len(e.train) for e in stream][1:] == [10, 10]
    session_accuracy = few_shot_run(digits_data, ER(buffer_size=100))
    # after the base session: 6 of 10 classes seen and learned; then the seen set grows to all 10
    assert session_accuracy[0] > 0.9
    assert session_accuracy[-1] > 0.5


@pytest.mark.skipif("ncm" not in STRATEGIES, reason="the ncm strategy is not registered yet")
def test_few_shot_sessions_on_digits_with_ncm(digits_data) -> None:
    session_accuracy = few_shot_run(digits_data, STRATEGIES["ncm"]())
    assert session_accuracy[0] > 0.9 and session_accuracy[-1] > 0.5


def test_few_shot_rejects_a_way_that_does_not_divide(digits_data) -> None:
    with pytest.raises(ConfigError, match="n_way"):
        few_shot(digits_data, base_classes=5, n_way=2)


def test_hierarchical_digits_learns_both_levels(digits_data) -> None:
    stream = hierarchical(digits_data, n_coarse=2, coarse_fraction=0.5, seed=0)
    assert stream.n_classes == 12 and stream.task_aware
    assert stream[0].classes == (10, 11) and set(stream[0].test.y.tolist()) == {10, 11}
    # "digit >= 5" is coarse label 11
    assert torch.equal(stream[0].test.y == 11, digits_data.y_test >= 5)
    mask = stream.task_mask()
    assert mask[0].nonzero().flatten().tolist() == [10, 11] and mask[1].nonzero().flatten().tolist() == list(range(10))
    torch.manual_seed(0)
    result = train(stream, mlp(stream.input_shape, 12, hidden=(64,)), ER(buffer_size=200),
                   OptimConfig(epochs=3, lr=0.05))
    coarse, *fine = result.matrix[-1]
    assert coarse > 0.8 and min(fine) > 0.6  # both levels kept (chance: 0.5 and 0.1)


def test_recurrence_schedule_follows_the_power_law() -> None:
    rng = np.random.default_rng(0)
    # alpha very large: the classes just seen come back every time
    sticky = recurrence_schedule(list(range(10)), 6, 2, 60.0, rng)
    assert all(group == sticky[0] for group in sticky)
    # alpha 0: uniform, every class appears in a long stream
    uniform = recurrence_schedule(list(range(10)), 40, 2, 0.0, np.random.default_rng(0))
    assert {c for g in uniform for c in g} == set(range(10))


def test_recurring_digits_reuses_classes(digits_data) -> None:
    stream = recurring(digits_data, n_experiences=20, classes_per_experience=2, alpha=0.5, seed=0)
    assert len(stream) == 20
    assert any(e.info["recurring"] for e in stream)
    # each test set holds exactly the test samples of its classes
    assert all(len(e.test) == int(torch.isin(digits_data.y_test, torch.tensor(e.classes)).sum()) for e in stream)
