"""The runner's plan of a run: from each experience's :class:`~lifelong.strategies.base.ExperiencePlan`
to the optimizer steps and samples the runner will spend on it.

Everything that depends on how long an experience is derives from the plan, before the first step:
the steps of the experience and of the whole stream (the two schedule horizons), the sampler's epoch
lengths (taken from the planned training-set size, not from the experience's own data, which a
strategy may replace by a memory, a union of experiences or nothing), the step and sample budgets
(a capped experience ends where its schedule does) and the cost estimate recorded with the run.
Budgets that cannot be planned exactly ahead (FLOPs, seconds) are re-planned after every step from
what the steps actually cost (:class:`lifelong.runner.budget.Budget`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lifelong.data.streams import Experience
from lifelong.errors import StrategyError
from lifelong.optim.setup import OptimSetup
from lifelong.runner.budget import Budget
from lifelong.strategies.base import ExperiencePlan, Strategy
from lifelong.world import World


@dataclass(frozen=True)
class PlannedExperience:
    """How the runner will train one experience."""

    strategy: ExperiencePlan
    """What the strategy declared."""
    steps: int
    """Optimizer steps, after the step and sample budgets (0 when the strategy does not train)."""
    samples: int
    """Training samples to be drawn, over all data-parallel ranks."""
    epochs: float
    """Planned epochs over the training set."""

    def as_dict(self) -> dict[str, Any]:
        return {"train_size": self.strategy.train_size, "lr_scales": list(self.strategy.lr_scales),
                "reset_optimizer": self.strategy.reset_optimizer, "steps": self.steps, "samples": self.samples,
                "epochs": self.epochs}


def plan_experience(setup: OptimSetup, budget: Budget, world: World, declared: ExperiencePlan) -> PlannedExperience:
    """Steps and samples of one experience the strategy declared ``declared`` for, at the configured
    batch size (per rank) and epochs, with the step and sample budgets applied (their global counts:
    the sample budget is shared by the ranks, which draw equally). The first step always runs."""
    batch_size = setup.batch_size
    epochs = setup.epochs_for(batch_size)
    if not declared.trains:
        return PlannedExperience(declared, 0, 0, epochs)
    length = setup.epoch_length(declared.train_size, batch_size, world.size)
    steps, samples = setup.draws(length, batch_size, epochs, limits=budget.limits(world.size))
    if steps == 0:  # a budget below one batch: the first step still runs
        steps, samples = setup.draws(length, batch_size, epochs, limits=[(1, lambda size: 1.0, 0.0)])
    return PlannedExperience(declared, steps, samples * world.size, epochs)


def plan_stream(strategy: Strategy, experiences: Sequence[Experience], setup: OptimSetup, budget: Budget,
                world: World) -> list[PlannedExperience]:
    """Ask ``strategy`` for the plan of every experience and derive the runner's plan of each (under the
    budget's caps of that experience)."""
    budget.check(len(experiences))
    plans = []
    for index in range(len(experiences)):
        declared = strategy.plan(experiences, index)
        if not isinstance(declared, ExperiencePlan):
            raise StrategyError(f"{type(strategy).__name__}.plan() must return an ExperiencePlan, got "
                                f"{type(declared).__name__}")
        plans.append(plan_experience(setup, budget.at(index), world, declared))
    return plans


def check_training_set(strategy: Strategy, index: int, declared: ExperiencePlan, size: int) -> None:
    """The training set a strategy handed over holds what its plan declared."""
    if size != declared.train_size:
        raise StrategyError(f"{type(strategy).__name__} planned {declared.train_size} training samples for "
                            f"experience {index} but training_set() returned {size}; plan() must describe what "
                            "training_set() returns")


def check_lr_scales(strategy: Strategy, declared: ExperiencePlan, groups: int) -> None:
    """A plan's learning-rate scales match the optimizer's parameter groups one to one."""
    if declared.lr_scales and len(declared.lr_scales) != groups:
        raise StrategyError(f"{type(strategy).__name__}.plan() gives {len(declared.lr_scales)} learning-rate "
                            f"scales for {groups} parameter groups; give one per group of parameter_groups()")


def plan_records(plans: Sequence[PlannedExperience]) -> list[dict[str, Any]]:
    """The plans as plain dicts, as stored with a run's result."""
    return [plan.as_dict() for plan in plans]

