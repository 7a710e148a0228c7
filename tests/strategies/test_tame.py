"""TAME: the z-test on a synthetic loss sequence, experts spawned exactly where a stream's task changes, the
selector's routing and the routed expert's classes, a returning task, an exact resume after SIGKILL and
online digits, class-incremental and Si-Blurry."""

from __future__ import annotations

import math

import pytest
import torch

from lifelong import TAME, OptimConfig, class_incremental, mlp, si_blurry, train
from lifelong.data.streams import Batch
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.tame import ShiftTest
from tests.runner.test_checkpoint_resume import resumed_and_reference
from tests.strategies.online import online_run

STEPS = OptimConfig(lr=0.05, epochs=2, batch_size=16, momentum=0.0)
"""8 steps an experience on the Gaussian data (80 samples, 2 epochs of 16)."""


def test_the_z_test_fires_exactly_at_the_shift_of_a_loss_sequence() -> None:
    test = ShiftTest(window=5, threshold=3.0)
    losses = [1.0, 1.2, 0.8, 1.1, 0.9, 1.0, 1.15, 0.85, 2.0]
    fired = []
    for value in losses:
        fired.append(test.shifted(value))
        if not fired[-1]:
            test.add(value)
    assert fired == [False] * 8 + [True]
    # the window before the jump: 1.1, 0.9, 1.0, 1.15, 0.85, mean 1, sample variance 0.065 / 4
    assert test.statistics() == pytest.approx((1.0, math.sqrt(0.065 / 4)))
    assert test.z(2.0) == pytest.approx(1.0 / math.sqrt(0.065 / 4))
    assert test.z(1.15) < 3.0 < test.z(2.0)
    # never before the window is full, however large the loss
    early = ShiftTest(window=5, threshold=3.0, values=[1.0, 1.0, 1.0, 1.0])
    assert not early.shifted(100.0)


def test_an_expert_is_spawned_exactly_where_each_task_starts(small_data) -> None:
    stream = class_incremental(small_data, 3)
    strategy = TAME(buffer_size=24, window=4)
    train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0), strategy, STEPS, seed=0)
    assert strategy.shifts == [8, 16]  # the first steps of the second and third experiences, no other
    assert len(strategy.experts) == 3 and strategy.active == 2
    assert [torch.nonzero(row).flatten().tolist() for row in strategy.trained[:3]] == [
        sorted(experience.classes) for experience in stream]
    assert not strategy.trained[3:].any()


def routed(small_data) -> tuple[TAME, torch.nn.Module, torch.Tensor]:
    """A TAME with two experts: expert 0 stored, expert 1 active, each knowing two classes."""
    stream = class_incremental(small_data, 3)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0)
    strategy = TAME(max_experts=3)
    strategy.setup(StrategyContext(stream))
    strategy.build(model)
    assert strategy.trained is not None
    strategy.test.values = [1.0, 2.0]
    strategy.switch(model, 1)  # a new expert: a copy of the first
    with torch.no_grad():
        model.head.bias.add_(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 50.0]))  # expert 1 says class 5
    strategy.trained[0, [0, 1]] = True
    strategy.trained[1, [4, 5]] = True
    return strategy, model, stream[2].test.x


def test_the_selector_routes_each_input_to_one_expert_which_predicts_among_its_classes(small_data) -> None:
    strategy, model, x = routed(small_data)
    assert strategy.selector is not None
    head = strategy.selector[1]
    with torch.no_grad():
        head.bias.copy_(torch.tensor([5.0, 0.0, 9.0]))  # expert 2 has not been spawned: masked out
    expert_0 = torch.func.functional_call(model, strategy.experts[0], (x,))[:, :2].argmax(dim=1)
    assert torch.equal(strategy.predict(model, x, torch.zeros(len(x), dtype=torch.long)), expert_0)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    assert strategy.predict(model, x, torch.zeros(len(x), dtype=torch.long)).tolist() == [5] * len(x)


def test_a_returning_task_goes_back_to_its_expert_and_an_unknown_one_gets_a_new_expert(small_data) -> None:
    strategy, model, _ = routed(small_data)
    stream = class_incremental(small_data, 3)
    first = stream[0].train
    batch = Batch(first.x[:16], first.y[:16], first.task[:16])
    loss = strategy.expert_loss(model, 0, batch)
    strategy.normal[0] = (loss - 0.1, 0.1)  # its loss is 1 standard deviation above what was normal for it
    assert strategy.expert_for(model, batch) == 0
    strategy.normal[0] = (loss - 0.4, 0.1)  # 4 above: not the same task, and there is room for a third
    assert strategy.expert_for(model, batch) == 2
    strategy.max_experts = 2  # no room: the stored expert with the lowest loss
    assert strategy.expert_for(model, batch) == 0


def test_tame_resumes_after_sigkill_to_the_same_run(small_data, tmp_path) -> None:
    resumed_and_reference(class_incremental(small_data, 3), "tame", tmp_path,
                          {"tame": {"buffer_size": 30, "window": 4}})


def test_online_on_digits_tame_finds_the_tasks_and_routes_to_their_experts(digits_data) -> None:
    # measured (seed 0): shifts at steps 27, 52, 82, 109 for tasks starting at 27, 54, 82, 109 (the one at
    # 52 is two steps early); final accuracy 0.545 (ER at memory 200: 0.632), each expert nearly perfect
    # on its classes, the selector's errors (the last expert, trained 27 steps, is never chosen) the rest
    stream = class_incremental(digits_data, 5)
    strategy = TAME(buffer_size=200)
    result = online_run(stream, strategy)
    starts = [27, 54, 82, 109]
    assert len(strategy.experts) == 5
    assert all(min(abs(shift - start) for shift in strategy.shifts) <= 2 for start in starts)
    assert result.metrics["final_accuracy"] > 0.45


def test_on_si_blurry_digits_tame_spawns_experts_without_being_told_where_tasks_end(digits_data) -> None:
    # measured (seed 0): experiences of 666, 141, 126, 265 and 149 samples start at steps 67, 82, 95 and 122,
    # where the z-test fires and nowhere else; final accuracy 0.294 (ER at memory 200: 0.466)
    stream = si_blurry(digits_data, 5, seed=0)
    strategy = TAME(buffer_size=200)
    result = online_run(stream, strategy)
    assert strategy.shifts == [67, 82, 95, 122] and len(strategy.experts) == 5
    assert result.metrics["final_accuracy"] > 0.2
