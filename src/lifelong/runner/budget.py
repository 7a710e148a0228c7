"""Per-experience compute budgets: stop an experience once it has used its steps, samples, seconds
or FLOPs. Comparing strategies at equal compute, not at equal epochs, is what a budget is for
(Prabhu et al. 2023, "Computationally Budgeted Continual Learning: What Does Matter?")."""

from __future__ import annotations

from dataclasses import dataclass

from lifelong.runner.observers import Observer, TrainState


@dataclass
class Budget(Observer):
    """Ends each experience before the next step would exceed a cap (steps, samples, FLOPs), or once
    its training time has passed ``max_seconds``. The first step of an experience always runs.

    FLOPs are the forward and backward FLOPs of the first step (counted by the runner with
    ``torch.utils.flop_counter.FlopCounterMode``) per drawn sample, times the samples drawn.
    """

    max_steps: int | None = None
    max_samples: int | None = None
    max_seconds: float | None = None
    max_flops: float | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_steps, self.max_samples, self.max_seconds, self.max_flops))

    def cap_steps(self, planned: int, batch_size: int) -> int:
        """The planned steps of an experience cut to the step and sample caps, so that a schedule's
        horizon ends where the budget does."""
        if self.max_steps is not None:
            planned = min(planned, self.max_steps)
        if self.max_samples is not None:
            planned = min(planned, max(1, self.max_samples // batch_size))
        return planned

    def exhausted(self, state: TrainState) -> bool:
        """Whether the next step would break a cap (seconds: whether the time is already spent)."""
        next_samples = state.experience_samples + state.batch_size
        return ((self.max_steps is not None and state.experience_step + 1 > self.max_steps)
                or (self.max_samples is not None and next_samples > self.max_samples)
                or (self.max_flops is not None and next_samples * state.flops_per_sample > self.max_flops)
                or (self.max_seconds is not None and state.experience_seconds >= self.max_seconds))

    def on_step(self, state: TrainState) -> None:
        if self.exhausted(state):
            state.stop_experience = True
