"""The reservoir memory a replay method holds: its share of the buffer, and replayed rows counted and augmented."""

from __future__ import annotations

import torch

from lifelong.data import class_incremental
from lifelong.strategies import ER
from lifelong.strategies.base import StrategyContext
from lifelong.strategies.parts.memory import ReservoirMemory
from lifelong.world import World


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
