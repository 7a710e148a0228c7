"""The branch-off cooldown (``optim.branch_decay``): Hägele et al. 2024, "Scaling Laws and Compute-Optimal
Training Beyond Fixed Training Durations", who branch linear cooldowns off one constant-rate run to get
the model of every shorter training length from a single run.

At the end of each experience a copy of the run decays: the model trains ``branch_decay`` times the
experience's steps more on its training set (an order of its own, seeded from the run's seed and the
experience) at a learning rate falling linearly from the run's last one to 0
(:func:`~lifelong.optim.cooldown.cooldown`), through the runner's one optimizer step
(:class:`~lifelong.runner.step.OptimizerStep`); the decayed model is evaluated (the experience's row of
the matrix), then the model, the optimizer, the strategy, the runner's augmentation draws and every
global random state (torch's CPU one, CUDA's on a CUDA run, numpy's and Python's: a model with dropout
draws from torch's) are put back as they were, so the run continues exactly as a run without branches.
This is not WSD-S (Wen et al. 2024), which continues from the decayed weights:
:class:`~lifelong.optim.cooldown.WSDS`.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from typing import Any

import torch

from lifelong.data.augment import Augment
from lifelong.data.lazy import LazyInputs
from lifelong.data.loader import derive_seed
from lifelong.data.streams import Batch, TensorSet
from lifelong.metrics.compute import ExperienceCost
from lifelong.optim.cooldown import cooldown, cooldown_steps
from lifelong.runner.checkpoint import random_states_kept
from lifelong.runner.observers import TrainState
from lifelong.runner.step import OptimizerStep

BRANCH_TAG = 0xB4A7
"""Mixed into the run's seed (and the experience) for the order of a branch's samples."""


class BranchOff:
    """The branch-off of a run (see the module docstring): ``fraction`` is ``optim.branch_decay``."""

    def __init__(self, fraction: float, seed: int, device: torch.device,
                 augmentation: tuple[Augment, torch.Generator] | None) -> None:
        self.fraction, self.seed, self.device, self.augmentation = fraction, seed, device, augmentation

    @contextlib.contextmanager
    def decayed(self, index: int, data: TensorSet, step: OptimizerStep, state: TrainState) -> Iterator[ExperienceCost]:
        """Inside the block the model is experience ``index``'s decayed branch, trained on ``data`` from
        the run's position ``state``; the block gets what the branch cost. Everything is restored after."""
        with random_states_kept(cuda=self.device.type == "cuda"):
            saved = self._save(step)
            try:
                yield self._train(index, data, step, state)
            finally:
                self._restore(step, saved)

    def _save(self, step: OptimizerStep) -> tuple[Any, ...]:
        draws = self.augmentation[1].get_state() if self.augmentation is not None else None
        return copy.deepcopy((step.model.state_dict(), step.optimizer.state_dict(), step.strategy.state_dict(), draws))

    def _restore(self, step: OptimizerStep, saved: tuple[Any, ...]) -> None:
        model_state, optimizer_state, strategy_state, draws = saved
        step.model.load_state_dict(model_state)
        step.optimizer.load_state_dict(optimizer_state)
        step.strategy.load_state_dict(strategy_state, step.model)
        step.applied_lr = None  # the groups hold the run's rates again
        if self.augmentation is not None:
            self.augmentation[1].set_state(draws)

    def _train(self, index: int, data: TensorSet, step: OptimizerStep, state: TrainState) -> ExperienceCost:
        """The branch's steps: the run's batch size, its own order of ``data`` cycled, the cooldown."""
        steps = cooldown_steps(self.fraction, state.experience_step)
        started, replayed, world = time.perf_counter(), step.strategy.replayed, step.world
        generator = torch.Generator().manual_seed(derive_seed(self.seed, BRANCH_TAG, index))
        order = world.shard(torch.randperm(len(data), generator=generator)).to(data.y.device)
        size = min(state.batch_size, len(order))
        step.model.train()
        for number in range(steps):
            rows = order[(torch.arange(size, device=order.device) + number * size) % len(order)]
            batch = data.subset(rows).batch()
            x = batch.x.to(self.device)
            if self.augmentation is not None:
                x = self.augmentation[0](x, self.augmentation[1])
            view = data.x[rows.cpu()] if isinstance(data.x, LazyInputs) else None  # what a positions memory keeps
            step(Batch(x, batch.y, batch.task, batch.x, view), state.lr * cooldown(number, steps))
        return ExperienceCost(seconds=time.perf_counter() - started, samples=steps * size * world.size, steps=steps,
                              flops=steps * state.step_flops, replayed=step.strategy.replayed - replayed)
