"""Counting the floating-point operations a run really spends (``optim.count_flops``, FLOP budgets).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (the matrix products and
convolutions of forward and backward passes, by their shapes), on everything training runs:

* every optimizer step: the strategy's loss (its replayed batches, old-model passes, reference
  gradients, penalties), the backward pass and the gradient hooks. A step's cost depends on its batch
  size and on what the strategy holds (an empty replay memory costs nothing to replay; a filling one
  costs more each step), so a step is counted the first time its key (experience, batch size, memory
  size) occurs and the count is reused for later steps with the same key: exact for every strategy
  whose step depends only on those, at the cost of a few counted steps per experience;
* the runner's own extra passes: the hard-batch sampler's scoring forward passes and the norm test's
  per-sample gradients, counted whenever they run;
* the strategy's hooks around the experience (a Fisher estimate, herding, a head refit).

In a data-parallel run each rank counts its own work and the counts are summed over ranks, so the
recorded and budgeted FLOPs are the whole run's, like the recorded samples. Counting costs a
``FlopCounterMode`` pass (about 6x a plain step) only on counted steps; with counting off nothing is
wrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from lifelong.world import World

T = TypeVar("T")


class FlopMeter:
    """Counts FLOPs of the work handed to it when ``enabled``; otherwise runs the work and reports 0."""

    def __init__(self, enabled: bool, world: World) -> None:
        self.enabled = enabled
        self.world = world
        self.cache: dict[tuple[int, int, int], float] = {}

    def start_experience(self) -> None:
        """Forget the counted steps: a new experience changes what the strategy does per step."""
        self.cache.clear()

    def measure(self, work: Callable[[], T]) -> tuple[T, float]:
        """``work()`` and the FLOPs this process spent in it."""
        if not self.enabled:
            return work(), 0.0
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            result = work()
        return result, float(counter.get_total_flops())

    def step(self, key: tuple[int, int, int], work: Callable[[], T]) -> tuple[T, float]:
        """``work()`` (one optimizer step's computation) and its FLOPs, counted the first time ``key``
        is seen and reused after."""
        if not self.enabled:
            return work(), 0.0
        if key in self.cache:
            return work(), self.cache[key]
        result, flops = self.measure(work)
        self.cache[key] = flops
        return result, flops

    def estimate(self, key: tuple[int, int, int]) -> float:
        """The FLOPs of a step with ``key`` (experience, batch size, memory size) before it runs: its
        count when one was made, else the highest count per sample so far times its batch size, which
        is no less than the step's cost whenever a step's cost grows no faster than its batch (a
        replayed batch as large as the new one, a reference batch of fixed size); 0 before any count."""
        if key in self.cache:
            return self.cache[key]
        per_sample = max((flops / counted[1] for counted, flops in self.cache.items()), default=0.0)
        return per_sample * key[1]

    def total(self, *flops: float) -> tuple[float, ...]:
        """Each of ``flops`` summed over the data-parallel ranks, in one collective (every rank calls
        this at the same point)."""
        if not self.enabled or not self.world.distributed:
            return flops
        return tuple(self.world.all_reduce_sum(torch.tensor(flops, dtype=torch.float64)).tolist())
