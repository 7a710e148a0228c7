"""The reservoir memory a replay method holds: its share of the buffer, replayed rows counted and augmented,
and a total-memory budget turned into a capacity, checked by hand."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from lifelong import DER, ER, OptimConfig, from_dataset, mlp, train
from lifelong.data import class_incremental
from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.strategies.base import Strategy, StrategyContext
from lifelong.strategies.parts.memory import BufferSize, MemoryBudget, ReservoirMemory, budget_capacity, row_bytes
from lifelong.world import World

OPTIM = OptimConfig(lr=0.05, batch_size=16, epochs=1)
ROW = 8 * 4 + 8 + 8
"""Bytes of one stored sample of the Gaussian stream: 8 float32 features, an int64 label and an int64 task id."""


def test_each_rank_keeps_its_share_of_the_buffer(small_data) -> None:
    stream = class_incremental(small_data, 2)
    shares = []
    for rank in (0, 1):
        strategy = ER(buffer_size=5)
        strategy.setup(StrategyContext(stream, 0, World(rank, 2)))
        memory = ReservoirMemory(strategy, 5)
        memory.offer(stream[0].train.x, stream[0].train.y, stream[0].train.task)
        shares.append(len(memory))
        assert memory.buffer.generator is strategy.local_generator  # this rank's own draws
    assert shares == [3, 2]


def test_replayed_rows_are_counted_and_augmented_and_sampled_rows_are_not(small_data) -> None:
    stream = class_incremental(small_data, 2)
    strategy = ER(buffer_size=10)
    strategy.setup(StrategyContext(stream, 0, replay_augment=lambda x: -x))
    batch = stream[0].train.batch()
    strategy.memory.remember(batch)
    stored = strategy.memory.contents()["x"]
    replayed = strategy.memory.replay(4)
    assert strategy.replayed == 4 and len(replayed["y"]) == 4
    assert all(bool((stored == -row).all(1).any()) for row in replayed["x"])  # augmented afresh
    sampled = strategy.memory.sample(20)  # never more than the memory holds
    assert strategy.replayed == 4 and len(sampled["y"]) == 10
    assert all(bool((stored == row).all(1).any()) for row in sampled["x"])  # as stored


def test_state_round_trip_restores_the_rows_and_the_draws(small_data) -> None:
    stream = class_incremental(small_data, 2)
    strategy, restored = ER(buffer_size=8), ER(buffer_size=8)
    strategy.setup(StrategyContext(stream, 0))
    restored.setup(StrategyContext(stream, 1))
    strategy.memory.remember(stream[0].train.batch())
    restored.memory.load_state_dict(strategy.memory.state_dict())
    assert torch.equal(restored.memory.contents()["x"], strategy.memory.contents()["x"])
    assert torch.equal(restored.memory.sample(8)["x"], strategy.memory.sample(8)["x"])


@dataclass
class KeepsItsStart(Strategy):
    """Experience replay that also keeps the model's weights as the first experience found them (as GDumb
    does): state beside the samples, in place before the first sample arrives."""

    buffer_size: BufferSize = 200
    memory_budget_bytes: MemoryBudget = 0
    memory: ReservoirMemory = field(init=False, repr=False)
    start: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.memory = ReservoirMemory(self, self.buffer_size, budget_bytes=self.memory_budget_bytes)
        self.start = {}

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.start = self.start or copy.deepcopy(model.state_dict())

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        self.memory.remember(batch)
        return self.loss(model, batch.x, batch.y, batch.task)

    def memory_size(self) -> int:
        return len(self.memory)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.memory.state_dict(), "start": self.start}


def budgeted(strategy: Strategy, small_data) -> Strategy:
    stream = class_incremental(small_data, 3)
    train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,), seed=0), strategy, OPTIM)
    return strategy


def test_capacity_is_what_the_budget_leaves_after_the_other_state() -> None:
    assert budget_capacity(10 * ROW, 0, ROW) == 10
    assert budget_capacity(10 * ROW + ROW - 1, 0, ROW) == 10  # a part of a row holds no sample
    assert budget_capacity(984 + 10 * ROW, 984, ROW) == 10
    with pytest.raises(ConfigError, match="memory_budget_bytes = 900 is less than the 984 bytes the strategy keeps"):
        budget_capacity(900, 984, ROW)
    rows = {"x": torch.zeros(3, 8), "y": torch.zeros(3, dtype=torch.long), "task": torch.zeros(3, dtype=torch.long),
            "logits": torch.zeros(3, 6)}
    assert row_bytes(rows) == ROW + 6 * 4


def test_a_budget_holds_the_samples_it_pays_for(small_data) -> None:
    # ER keeps nothing beside its samples: 10 rows of 48 bytes (buffer_size, 200 by default, is not used)
    er = budgeted(ER(memory_budget_bytes=10 * ROW + ROW - 1), small_data)
    assert er.memory_size() == 10 and er.memory_bytes() == 10 * ROW
    # DER's rows carry the 6 logits (float32) the sample had when it arrived: 72 bytes each, 13 in 1000 bytes
    der = budgeted(DER(memory_budget_bytes=1000), small_data)
    assert der.memory_size() == 13 and der.memory_bytes() == 13 * (ROW + 24) == 936


def test_the_other_state_is_paid_before_the_samples(small_data) -> None:
    # the start weights of the 8 -> 16 -> 6 MLP: (8 * 16 + 16 + 16 * 6 + 6) float32 = 984 bytes, the same
    # bytes as 20 samples of ER: a budget of 984 + 10 rows keeps 10 of them
    strategy = budgeted(KeepsItsStart(memory_budget_bytes=984 + 10 * ROW), small_data)
    assert strategy.memory_size() == 10 and strategy.memory_bytes() == 984 + 10 * ROW
    assert budgeted(KeepsItsStart(memory_budget_bytes=984 + 20 * ROW), small_data).memory_size() == 20
    with pytest.raises(ConfigError, match="memory_budget_bytes = 900 is less than the 984 bytes"):
        budgeted(KeepsItsStart(memory_budget_bytes=900), small_data)


def test_a_memory_of_positions_pays_8_bytes_a_sample_for_its_inputs(small_data) -> None:
    pairs = list(zip(small_data.x_train, small_data.y_train.tolist(), strict=True))
    tests = list(zip(small_data.x_test, small_data.y_test.tolist(), strict=True))
    lazy = from_dataset(pairs, tests, train_targets=small_data.y_train, test_targets=small_data.y_test)
    # a position (int64) stands for the 8 float32 features: 24 bytes a row, 10 rows in 10 * 24 + 23
    er = budgeted(ER(memory_keeps="positions", memory_budget_bytes=10 * 24 + 23), lazy)
    assert er.memory_size() == 10 and er.memory_bytes() == 10 * 24


def test_each_rank_keeps_its_share_of_a_budget(small_data) -> None:
    stream = class_incremental(small_data, 2)
    shares = []
    for rank in (0, 1):
        strategy = ER(memory_budget_bytes=11 * ROW)
        strategy.setup(StrategyContext(stream, 0, World(rank, 2)))
        strategy.memory.offer(stream[0].train.x, stream[0].train.y, stream[0].train.task)
        shares.append(len(strategy.memory))
    assert shares == [6, 5]  # the 11 samples the budget pays for, shared as buffer_size is


def test_the_priced_capacity_is_kept_in_the_state(small_data) -> None:
    stream = class_incremental(small_data, 2)
    strategy, restored, fresh = ER(memory_budget_bytes=5 * ROW), ER(memory_budget_bytes=5 * ROW), ER(
        memory_budget_bytes=5 * ROW)
    for each in (strategy, restored, fresh):
        each.setup(StrategyContext(stream, 0))
    assert strategy.memory.state_dict()["capacity"] is None  # priced at the first offer
    fresh.memory.load_state_dict(strategy.memory.state_dict())
    assert not fresh.memory.priced
    strategy.memory.remember(stream[0].train.batch())
    restored.memory.load_state_dict(strategy.memory.state_dict())
    assert restored.memory.priced and restored.memory.buffer.capacity == 5 == len(restored.memory)
    plain = ER(buffer_size=5)
    plain.setup(StrategyContext(stream, 0))
    assert "capacity" not in plain.memory.state_dict()  # without a budget, buffer_size is the capacity
