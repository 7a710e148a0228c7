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
deterministic once such a step was counted), seconds by the mean step time so far
(:class:`Replanner`). The schedule's horizon therefore ends where training stops, and a FLOP budget is
never overspent by a step whose cost was known. The first step of an experience always runs.

Each cap is one number for every experience or one per experience (``optim.max_flops = [...]``):
experiences of different sizes get budgets of their own, as the budget protocol
(:mod:`lifelong.protocol.budget`) gives them. A FLOP budget bounds the whole experience: the strategy's
opening hooks, its steps, the runner's extra passes and its closing hook (``after_experience``: a Fisher
estimate, herding, class means), which runs once training has stopped and cannot be cut short. Its cost
is reserved out of the budget from what it cost per sample in the last experience that closed
(``TrainState.closing_flops_per_sample``), times the experience's samples: the steps stop early enough
for it. The first experience has no such measure, so its closing hook comes on top of its budget (the
method's own minimum), as does a closing hook that alone costs more than the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TypeVar

from lifelong.data.streams import Stream
from lifelong.errors import ConfigError
from lifelong.metrics.objectives import LANGUAGE_MODEL
from lifelong.optim.batch_size import AdaptiveBatchSize
from lifelong.optim.setup import Limit, OptimSetup, epoch_end
from lifelong.runner.flops import FlopMeter
from lifelong.runner.observers import TrainState
from lifelong.world import World

Number = TypeVar("Number", int, float)


def _at(cap: Number | Sequence[Number] | None, experience: int) -> Number | None:
    """A cap's value in ``experience``: one number for every experience, one per experience, or None."""
    return cap[experience] if isinstance(cap, Sequence) else cap


def sample_cap(max_samples: int | Sequence[int] | None, max_tokens: int | Sequence[int] | None,
               stream: Stream) -> int | Sequence[int] | None:
    """The sample cap of ``optim.max_samples`` and ``optim.max_tokens`` together: a language model's token
    budget in windows of the stream (each predicts ``L`` tokens: ``max_tokens // L`` windows), the smaller of
    the two caps where both are set (per experience where either is a list)."""
    if max_tokens is None:
        return max_samples
    if stream.objective != LANGUAGE_MODEL:
        raise ConfigError(f"optim.max_tokens budgets a language model's predicted tokens; stream {stream.name!r} "
                          "is a classification stream: use optim.max_samples (or max_steps, max_flops)")
    predicted = stream.input_shape[0] - 1
    if min(max_tokens if isinstance(max_tokens, Sequence) else [max_tokens]) < predicted:
        raise ConfigError(f"optim.max_tokens={max_tokens} is less than one window's {predicted} predicted tokens "
                          f"(stream {stream.name!r}); give at least {predicted} per experience")
    windows = [t // predicted for t in max_tokens] if isinstance(max_tokens, Sequence) else max_tokens // predicted
    if max_samples is None:
        return windows
    lengths = {len(cap) for cap in (windows, max_samples) if isinstance(cap, Sequence)}
    if len(lengths) > 1:
        raise ConfigError(f"optim.max_samples and optim.max_tokens give {' and '.join(map(str, sorted(lengths)))} "
                          "per-experience budgets; give both one per experience, or one number")
    def at(cap: int | Sequence[int], experience: int) -> int:
        return cap[experience] if isinstance(cap, Sequence) else cap

    if lengths:
        return [min(at(windows, i), at(max_samples, i)) for i in range(lengths.pop())]
    return min(at(windows, 0), at(max_samples, 0))


@dataclass(frozen=True)
class Budget:
    """The caps of every experience, each one number for all of them or one per experience (a
    sequence, read at the current experience's index); ``None`` leaves a dimension free."""

    max_steps: int | Sequence[int] | None = None
    max_samples: int | Sequence[int] | None = None
    """Samples drawn over all data-parallel ranks."""
    max_seconds: float | Sequence[float] | None = None
    max_flops: float | Sequence[float] | None = None
    """FLOPs over all ranks: the strategy's hooks, the steps and the runner's extra passes of the experience
    (its closing hook by the estimate the module's docstring describes)."""

    @property
    def measured(self) -> bool:
        """Whether a cap depends on the measured cost of steps (FLOPs or seconds)."""
        return self.max_seconds is not None or self.max_flops is not None

    def check(self, experiences: int) -> None:
        """Every per-experience cap has one value per experience the run trains (a joint run trains one)."""
        for cap in fields(self):
            value = getattr(self, cap.name)
            if isinstance(value, Sequence) and len(value) != experiences:
                raise ConfigError(f"optim.{cap.name} gives {len(value)} per-experience budgets for a run of "
                                  f"{experiences} experiences; give one per experience, or one number for all")

    def at(self, experience: int) -> Budget:
        """The caps of experience ``experience`` alone, each one number (or None)."""
        return Budget(_at(self.max_steps, experience), _at(self.max_samples, experience),
                      _at(self.max_seconds, experience), _at(self.max_flops, experience))

    def limits(self, world_size: int, state: TrainState | None = None,
               step_flops: Callable[[int], float] | None = None, epoch_flops: float = 0.0,
               reserved_flops: float = 0.0) -> list[Limit]:
        """What is left of each cap for this rank's coming steps, as :data:`~lifelong.optim.setup.Limit`
        triples: at the start of an experience (``state`` None; per-experience caps taken :meth:`at` it
        first) the step and sample caps; inside one, every cap of ``state.experience`` less what the
        experience spent, FLOPs costed by ``step_flops(batch size)`` per step and ``epoch_flops`` per epoch
        begun (over all ranks), ``reserved_flops`` kept for the closing hook, seconds by the mean step time
        so far."""
        experience = state.experience if state is not None else 0
        steps = state.experience_step if state is not None else 0
        max_steps, max_samples = _at(self.max_steps, experience), _at(self.max_samples, experience)
        limits: list[Limit] = []
        if max_steps is not None:
            limits.append((max_steps - steps, lambda size: 1.0, 0.0))
        if max_samples is not None:  # the ranks draw alike: each may draw its share
            spent = state.experience_samples if state is not None else 0
            limits.append(((max_samples - spent) / world_size, float, 0.0))
        if state is None or not steps:
            return limits
        max_flops, max_seconds = _at(self.max_flops, experience), _at(self.max_seconds, experience)
        if max_flops is not None and step_flops is not None:
            limits.append((max_flops - state.experience_flops - reserved_flops, step_flops, epoch_flops))
        if max_seconds is not None:
            seconds = state.experience_seconds
            mean = seconds / steps
            limits.append((max_seconds - seconds, lambda size: mean, 0.0))
        return limits

    def affords(self, state: TrainState, flops: float) -> bool:
        """Whether the FLOP budget (if any) leaves room for ``flops`` more in the current experience."""
        max_flops = _at(self.max_flops, state.experience)
        return max_flops is None or state.experience_flops + flops <= max_flops


class Replanner:
    """Keeps an experience's plan true to its budgets as training goes: after every step it updates the
    estimates of what the coming steps cost (when FLOPs are counted) and re-plans the rest of the
    experience under the measured budgets (FLOPs, seconds); the runner calls it again when the batch
    size changes. One per run; :meth:`start` readies it for each experience."""

    def __init__(self, budget: Budget, setup: OptimSetup, meter: FlopMeter, world: World,
                 memory_size: Callable[[], int]) -> None:
        self.budget, self.setup, self.meter, self.world, self.memory_size = budget, setup, meter, world, memory_size
        self.size = 0
        """Samples in the experience's training set."""
        self.closing_samples = 0
        """Samples of the experience itself, which its closing hook's reserve is counted by."""
        self.step_costs: dict[int, float] = {}
        """FLOPs of a coming step by its batch size, over all ranks (what a FLOP budget is planned with)."""
        self.scoring_flops = 0.0
        """FLOPs of the last epoch's scoring pass (hard-batch sampler), over all ranks."""
        self.test_flops_per_sample = 0.0
        """FLOPs per differentiated sample of the last norm test, over all ranks."""

    def start(self, size: int, closing_samples: int) -> None:
        """Ready for an experience that trains on ``size`` samples and holds ``closing_samples`` (its first
        step's cost is unknown)."""
        self.size, self.step_costs, self.scoring_flops, self.test_flops_per_sample = size, {}, 0.0, 0.0
        self.closing_samples = closing_samples

    def after_step(self, state: TrainState, flops: float) -> None:
        """Charge the step just taken (``flops`` counted by this rank) and re-plan what follows."""
        if self.meter.enabled:
            state.step_flops = self.meter.total(flops)[0]
            state.experience_flops += state.step_flops
            self.estimate_coming_steps(state)
        if self.budget.measured:
            self.replan(state)

    def charge_scoring(self, state: TrainState, flops: float) -> None:
        """Charge an epoch's scoring pass (``flops`` of this rank), which each epoch begun repeats."""
        self.scoring_flops = self.meter.total(flops)[0]
        state.experience_flops += self.scoring_flops

    def charge_test(self, state: TrainState, flops: float, samples: int) -> None:
        """Charge a norm test on a batch of ``samples`` (``flops`` of this rank)."""
        tested = self.meter.total(flops)[0]
        self.test_flops_per_sample = tested / (min(self._test.samples, samples) + samples)
        state.experience_flops += tested

    def after_batch_size_test(self, state: TrainState, changed: bool) -> None:
        """Re-plan after a norm test: always when it changed the batch size (re-estimating the coming
        steps first when FLOPs are counted), else when a measured budget is set."""
        if changed and self.meter.enabled:
            self.estimate_coming_steps(state)
        if changed or self.budget.measured:
            self.replan(state)

    def affords_test(self, state: TrainState, samples: int) -> bool:
        """Whether the FLOP budget leaves room for a norm test on ``samples`` and the next step."""
        return self.budget.affords(state, self.test_flops(state, samples) + state.next_step_flops)

    def estimate_coming_steps(self, state: TrainState) -> None:
        """The FLOPs, over all ranks, of a step of each batch size the coming steps will have (the next
        step's first, then the full batch and each epoch's shorter last one), for the budget."""
        length = self.setup.epoch_length(self.size, state.batch_size, self.world.size)
        end = epoch_end(length, state.epochs, state.epoch)
        following = min(state.batch_size, end - state.epoch_samples) if state.epoch_samples < end else \
            min(state.batch_size, epoch_end(length, state.epochs, state.epoch + 1))
        sizes = list(dict.fromkeys([following, state.batch_size, length % state.batch_size or state.batch_size]))
        memory = self.memory_size()
        estimates = self.meter.total(*(self.meter.estimate((state.experience, size, memory)) for size in sizes))
        state.next_step_flops = estimates[0]
        self.step_costs = dict(zip(sizes, estimates, strict=True))

    def test_flops(self, state: TrainState, samples: int) -> float:
        """FLOPs of a norm test on a batch of ``samples``, over all ranks: it differentiates
        ``min(test samples, samples)`` samples one by one and the whole batch once, each at the cost per
        sample of the last test (before any, of the last step, which is no cheaper)."""
        per_sample = self.test_flops_per_sample or state.step_flops / max(state.batch_size, 1)
        return per_sample * (min(self._test.samples, samples) + samples)

    def replan(self, state: TrainState) -> None:
        """Re-plan the rest of the experience from the current position, batch size and what is left of
        every budget (FLOPs costed by the estimates of the steps to come, each with its share of the norm
        tests, and each epoch begun with its scoring pass); the stream horizon follows."""
        costs, test = self.step_costs, self.setup.batch_size_test
        largest = max(costs.values(), default=0.0)
        tests = self.test_flops(state, state.batch_size) / test.every_steps \
            if test is not None and state.batch_size < test.max_batch_size else 0.0
        limits = self.budget.limits(self.world.size, state, lambda size: costs.get(size, largest) + tests,
                                    self.scoring_flops, state.closing_flops_per_sample * self.closing_samples)
        length = self.setup.epoch_length(self.size, state.batch_size, self.world.size)
        current = len(state.epoch_order) if state.epoch_order is not None else None
        steps, _ = self.setup.draws(length, state.batch_size, state.epochs, state.epoch, state.epoch_samples, limits,
                                    current)
        state.set_experience_steps(state.experience_step + steps)

    @property
    def _test(self) -> AdaptiveBatchSize:
        test = self.setup.batch_size_test
        assert test is not None, "no adaptive batch size"
        return test
