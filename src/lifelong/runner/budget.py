"""Per-experience compute budgets: steps, samples, seconds or FLOPs. Comparing strategies at equal
compute, not at equal epochs, is what a budget is for (Prabhu et al. 2023, "Computationally Budgeted
Continual Learning: What Does Matter?").

A budget is a limit on the experience's length, so it is part of the plan: the learning-rate schedule
must anneal by the time the budget ends training, not by the end of epochs that will never run. Step
and sample budgets are exact before training starts (:func:`lifelong.runner.plan.plan_experience`
caps the planned steps). FLOP and seconds budgets depend on what each step costs, which is measured as
training goes: after every step the runner re-plans the rest of the experience from what is left of
each budget, walking the batches still to come (full ones and each epoch's shorter last one) with the
cost of each: FLOPs by the count of a step of that batch size and memory size (exact and
deterministic once such a step was counted), seconds by the mean step time so far. The schedule's
horizon therefore ends where training stops, and a FLOP budget is never overspent by a step whose
cost was known. The first step of an experience always runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lifelong.optim.setup import Limit
from lifelong.runner.observers import TrainState


@dataclass(frozen=True)
class Budget:
    """The caps of every experience; ``None`` leaves a dimension free."""

    max_steps: int | None = None
    max_samples: int | None = None
    """Samples drawn over all data-parallel ranks."""
    max_seconds: float | None = None
    max_flops: float | None = None
    """FLOPs over all ranks: the strategy's hooks, the steps and the runner's extra passes of the experience."""

    @property
    def measured(self) -> bool:
        """Whether a cap depends on the measured cost of steps (FLOPs or seconds)."""
        return self.max_seconds is not None or self.max_flops is not None

    def limits(self, world_size: int, state: TrainState | None = None,
               step_flops: Callable[[int], float] | None = None, epoch_flops: float = 0.0) -> list[Limit]:
        """What is left of each cap for this rank's coming steps, as :data:`~lifelong.optim.setup.Limit`
        triples: at the start of an experience (``state`` None) the step and sample caps; inside one,
        every cap less what the experience spent, FLOPs costed by ``step_flops(batch size)`` per step and
        ``epoch_flops`` per epoch begun (over all ranks), seconds by the mean step time so far."""
        steps = state.experience_step if state is not None else 0
        limits: list[Limit] = []
        if self.max_steps is not None:
            limits.append((self.max_steps - steps, lambda size: 1.0, 0.0))
        if self.max_samples is not None:  # the ranks draw alike: each may draw its share
            spent = state.experience_samples if state is not None else 0
            limits.append(((self.max_samples - spent) / world_size, float, 0.0))
        if state is None or not steps:
            return limits
        if self.max_flops is not None and step_flops is not None:
            limits.append((self.max_flops - state.experience_flops, step_flops, epoch_flops))
        if self.max_seconds is not None:
            seconds = state.experience_seconds
            mean = seconds / steps
            limits.append((self.max_seconds - seconds, lambda size: mean, 0.0))
        return limits

    def affords(self, state: TrainState, flops: float) -> bool:
        """Whether the FLOP budget (if any) leaves room for ``flops`` more in the current experience."""
        return self.max_flops is None or state.experience_flops + flops <= self.max_flops
