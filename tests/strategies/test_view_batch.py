"""View-batch replay: each replayed sample comes ``views`` times in different views, the recall interval holds
step by step, settings' refusals, an exact resume after SIGKILL and online digits against ER."""

from __future__ import annotations

import pytest
import torch

from lifelong import ER, ViewBatch, class_incremental, mlp
from lifelong.data.streams import Batch
from lifelong.errors import ConfigError
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.parts.memory import RecallSchedule
from tests.runner.test_checkpoint_resume import resumed_and_reference
from tests.strategies.online import online_digits_accuracies


def noise(x: torch.Tensor) -> torch.Tensor:
    """A replay augmentation that makes every copy of a sample different."""
    return x + torch.rand(x.shape)


def filled(small_data, **settings) -> ViewBatch:
    """A view-batch strategy whose memory holds 6 samples, of labels 0 .. 5 (the sample's name)."""
    stream = class_incremental(small_data, 3)
    strategy = ViewBatch(buffer_size=6, **settings)
    strategy.setup(StrategyContext(stream, replay_augment=noise))
    strategy.memory.remember(Batch(torch.zeros(6, 8), torch.arange(6), torch.zeros(6, dtype=torch.long)),
                             arrival=torch.arange(6))
    return strategy


def replay_steps(strategy: ViewBatch, steps: int) -> list[list[int]]:
    """The samples (labels) each of ``steps`` view-batches of 4 rows replays, checking its views."""
    order = []
    for _ in range(steps):
        rows = strategy.view_batch(4)
        labels = rows["y"].tolist()
        assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]  # 2 samples x 2 views
        assert not torch.equal(rows["x"][0], rows["x"][1]) and not torch.equal(rows["x"][2], rows["x"][3])
        order.append(labels[::2])
    return order


def test_each_replayed_sample_comes_twice_in_two_views_and_rests_three_steps(small_data) -> None:
    strategy = filled(small_data, views=2)  # 2 samples a step; 6 stored: the longest rest is 3 steps
    order = replay_steps(strategy, 9)
    assert sorted(order[0] + order[1] + order[2]) == list(range(6))  # a round robin over the memory
    for step in range(3, 9):
        assert sorted(order[step]) == sorted(order[step - 3])  # replayed again exactly 3 steps later
    assert strategy.replayed == 9 * 4


def test_a_shorter_recall_interval_is_kept_as_a_minimum_rest(small_data) -> None:
    strategy = filled(small_data, views=2, recall_interval=2)
    order = replay_steps(strategy, 30)
    for step in range(1, 30):
        assert not set(order[step]) & set(order[step - 1])  # never replayed in the next step
    assert any(set(order[step]) & set(order[step - 2]) for step in range(2, 30))  # but after 2, it may be


def test_the_default_interval_is_the_memory_over_the_samples_a_step_replays() -> None:
    assert RecallSchedule(0, torch.Generator()).effective_interval(stored=40, count=2) == 20
    assert RecallSchedule(7, torch.Generator()).effective_interval(stored=40, count=2) == 7


def test_a_new_sample_rests_from_its_arrival_and_too_few_rested_are_made_up_by_the_longest_resting() -> None:
    schedule = RecallSchedule(3, torch.Generator().manual_seed(0))
    schedule.learned(torch.arange(4))  # step 0: samples 0 .. 3 arrive in the new batch
    assert schedule.rested([0, 1, 2, 3], 2).tolist() == []  # they rest until step 3
    assert schedule.choose(torch.tensor([0, 1, 2, 3]), 2).tolist() == [0, 1]  # the lowest slots of the longest resting
    schedule.learned(torch.tensor([4]))  # step 1: sample 4 arrives and replaces sample 1 in slot 1
    # none rested: samples 0 (replayed), 2 and 3 (arrived) since step 0, then 4 since step 1; lower slots first
    assert schedule.choose(torch.tensor([0, 4, 2, 3]), 2).tolist() == [0, 2]
    assert schedule.step == 2 and schedule.last == {0: 1, 2: 1, 3: 0, 4: 1}


def test_a_replay_batch_smaller_than_the_views_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="strategy.replay_batch_size") as refused:
        ViewBatch(replay_batch_size=3, views=4)
    assert "\n" not in str(refused.value)


def test_view_batch_resumes_after_sigkill_to_the_same_run(small_data, tmp_path) -> None:
    resumed_and_reference(class_incremental(small_data, 3), "view_batch", tmp_path,
                          {"view_batch": {"buffer_size": 30, "views": 2}})


def test_online_on_digits_the_rest_keeps_more_than_er_and_the_view_batch_learns(digits_data) -> None:
    # measured (seed 0, memory 200): naive 0.189, er 0.632, view_batch with 1 view (the rest alone) 0.774, with
    # its 4 views (2 samples a step, identical copies: this run does not augment) 0.418
    found = online_digits_accuracies(digits_data, {"er": ER(buffer_size=200),
                                                   "rest": ViewBatch(buffer_size=200, views=1),
                                                   "view_batch": ViewBatch(buffer_size=200)})
    assert found["rest"] > found["er"] + 0.1 and found["view_batch"] > 0.35


def test_a_byte_budget_pays_each_sample_with_its_arrival(small_data) -> None:
    strategy = ViewBatch(memory_budget_bytes=560)
    strategy.setup(StrategyContext(class_incremental(small_data, 3)))
    train_set = class_incremental(small_data, 3)[0].train
    strategy.observe(mlp((8,), 6, hidden=(4,), seed=0), Batch(train_set.x[:20], train_set.y[:20], train_set.task[:20]))
    # a row: 8 float32 inputs (32 bytes), label, task id and arrival (8 bytes each): 56 bytes, 10 in 560
    assert len(strategy.memory) == 10 and strategy.memory_bytes() == 560
