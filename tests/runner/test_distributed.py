"""Sharding arithmetic of :mod:`lifelong.world` (collectives: test_distributed_training.py)."""

from __future__ import annotations

import torch

from lifelong.world import World


def test_share_and_shard_single_and_many() -> None:
    assert [World(r, 3).share(200) for r in range(3)] == [67, 67, 66]
    assert World().share(200) == 200
    order = torch.tensor([4, 0, 3, 1, 2])
    shards = [World(r, 2).shard(order) for r in range(2)]
    assert shards[0].tolist() == [4, 3, 2] and shards[1].tolist() == [0, 1, 4]  # padded by wrapping
    assert set(torch.cat(shards).tolist()) == set(range(5))
    assert torch.equal(World().shard(order), order)
