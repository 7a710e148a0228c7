"""Observers: things that watch the training loop without changing it (progress display, the
evaluation curve, experiment trackers, a test's recorder).

Each gets what it needs as arguments: the run's fixed facts once (:class:`RunContext`, frozen), the
runner's counters at every hook (:class:`TrainState`, which only the runner writes), the optimizer
whenever one is ready and each experience's row of the matrix. An observer changes nothing the runner
or another observer reads, so their order does not matter; one ends the current experience early by
returning True from :meth:`Observer.on_step`. The time observers take inside an experience is measured
by the runner and left out of its training time. What changes the model (weight averaging,
:mod:`lifelong.runner.averaging`) or saves the run (:mod:`lifelong.runner.checkpoint`) is not an
observer: the runner calls those at fixed points of the step."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lifelong.errors import ConfigError
from lifelong.metrics.objectives import as_scores, gap_record, higher_is_better
from lifelong.metrics.online import online_metrics
from lifelong.metrics.stability import StabilityGap, stability_gaps, stability_summary
from lifelong.metrics.utilization import mfu
from lifelong.world import World

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lifelong.data.streams import Stream, TensorSet
    from lifelong.metrics.compute import ExperienceCost
    from lifelong.strategies.base import Strategy


@dataclass(frozen=True)
class RunContext:
    """What a run trains and tests, handed to observers once before training starts."""

    model: nn.Module
    strategy: Strategy
    stream: Stream
    test_sets: Sequence[TensorSet]
    """Every experience's test set, already on the run's device."""
    evaluate: Callable[[], list[float]]
    """A row of accuracies (or losses) on every test set, with the weights every evaluation of the run
    uses (an EMA copy, :mod:`lifelong.runner.averaging`, or the training weights)."""
    initial: Sequence[float] = ()
    """Accuracy of the untrained model on each test set."""
    rows: Sequence[Sequence[float]] = ()
    """The accuracy matrix so far: the runner appends each experience's row before the observers'
    :meth:`Observer.on_experience_end`; observers only read it."""
    costs: Sequence[ExperienceCost] = ()
    """The cost of each finished experience, appended as ``rows`` is."""
    world: World = World()
    """This process among the data-parallel ranks."""
    evaluation_weights: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    """Opens a context in which the model holds the weights :attr:`evaluate` uses, for an observer that
    measures something the row does not (the EMA's weights with averaging, the training weights
    otherwise)."""


@dataclass(slots=True)
class TrainState:
    """The runner's counters. Observers read them; only the runner writes them."""

    experience: int = 0
    experience_steps: int = 0
    """Planned optimizer steps of the current experience: the schedule's experience horizon. Budgets
    that depend on measured cost lower it as training goes (:meth:`set_experience_steps`)."""
    epoch: int = 0
    experience_step: int = 0
    step: int = 0
    """Optimizer steps in the whole run."""
    samples: int = 0
    """New-data samples drawn in the whole run, over all data-parallel ranks."""
    experience_samples: int = 0
    """New-data samples drawn in the current experience, over all data-parallel ranks."""
    loss: float = 0.0
    lr: float = 0.0
    """The learning rate of the last step before each parameter group's scale: the base rate at the
    global batch size times the schedule's multiplier."""
    seconds_before: float = 0.0
    """Training seconds of the experiences already finished."""
    experience_started: float | None = None
    """``time.perf_counter()`` when the current experience started; None between experiences."""
    excluded_seconds: float = 0.0
    """Seconds inside the current experience that were not training: observers' hooks (the evaluation
    curve) and checkpoints, during which the runner stops the clock (:meth:`pause_clock`)."""
    clock_paused: float | None = None
    """``time.perf_counter()`` when the runner stopped the training clock; None while it runs."""
    epoch_samples: int = 0
    """Samples of this rank's epoch order drawn so far: where a resumed run picks the epoch up."""
    epoch_order: torch.Tensor | None = None
    """The current epoch's sample order; a checkpoint stores it so that any sampler resumes exactly."""
    total_steps: int = 0
    """Planned optimizer steps of the whole run: the schedule's stream horizon (it follows every change
    of an experience's plan)."""
    batch_size: int = 0
    """Batch size of the next step on each rank (the adaptive batch size may grow it)."""
    epochs: float = 0.0
    """Planned epochs of the current experience (fractional when ``keep_updates`` lengthens training)."""
    step_flops: float = 0.0
    """FLOPs of the last optimizer step, over all ranks (0 unless FLOPs are counted)."""
    next_step_flops: float = 0.0
    """FLOPs the next optimizer step will cost, over all ranks: exact when a step of its batch size and
    memory size was counted before, else the costliest step so far (what a FLOP budget checks)."""
    experience_flops: float = 0.0
    """FLOPs spent in the current experience so far, over all ranks: its hooks, its steps and the
    runner's extra passes (:mod:`lifelong.runner.flops`)."""
    replayed_before: int = 0
    """The strategy's count of replayed samples (:attr:`~lifelong.strategies.base.Strategy.replayed`,
    over the whole run) when the current experience started: the experience replayed the difference.
    Checkpointed, so that a run resumed inside an experience counts the same."""
    closing_flops_per_sample: float = 0.0
    """FLOPs over all ranks of the strategy's closing hook (``after_experience``: a Fisher estimate,
    herding, class means) in the last experience that closed, per sample of that experience: what a FLOP
    budget reserves for the closing hook of the experiences that follow (:class:`~lifelong.runner.budget.
    Replanner`). Checkpointed, so that a resumed run plans the same."""
    stream_clock: float = 0.0
    """A real-time stream's clock (``optim.stream_rate``, :mod:`lifelong.runner.realtime`): when the learner is
    next free, in the stream's cost unit (FLOPs over all ranks, or seconds) since the run began."""
    stream_arrival: float = 0.0
    """When the real-time stream's next batch arrives, on the same clock."""
    experience_skipped: int = 0
    """Samples of the current experience that a real-time stream let pass untrained, over all ranks."""
    online_total: float = 0.0
    """The current experience's online score on this rank: correct predictions (a language model's: summed
    next-token losses) of every batch a real-time stream brought, each scored before any training on it."""
    online_count: int = 0
    """The samples (a language model's: predicted tokens) :attr:`online_total` covers, on this rank."""

    def set_experience_steps(self, steps: int) -> None:
        """Re-plan the current experience to ``steps`` steps; the stream horizon follows."""
        self.total_steps += steps - self.experience_steps
        self.experience_steps = steps

    def pause_clock(self) -> None:
        """Stop the training clock (observers and checkpoints are about to run): every observer of a
        step reads the same training time, whatever ran before it."""
        self.clock_paused = time.perf_counter()

    def resume_clock(self) -> None:
        """Restart the training clock, leaving the time since :meth:`pause_clock` out of training."""
        assert self.clock_paused is not None, "the clock is not paused"
        self.excluded_seconds += time.perf_counter() - self.clock_paused
        self.clock_paused = None

    @property
    def experience_seconds(self) -> float:
        """Training wall time of the current experience so far, observers' own time excluded."""
        if self.experience_started is None:
            return 0.0
        now = time.perf_counter() if self.clock_paused is None else self.clock_paused
        return now - self.experience_started - self.excluded_seconds

    @property
    def train_seconds(self) -> float:
        """Training wall time of the whole run so far, observers' own time excluded."""
        return self.seconds_before + self.experience_seconds


class Observer:
    """Base observer: every hook does nothing. An observer with state that a resumed run needs (a
    curve under construction) returns it from :meth:`state_dict`; checkpoints keep it."""

    def on_run_start(self, context: RunContext) -> None:
        """Once, after the initial evaluation and before the first experience."""

    def on_optimizer(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Before each experience's first step: the run's optimizer (the one the experience trains with,
        each parameter group's ``lr_scale`` set; None before any experience that trains)."""

    def on_experience_start(self, state: TrainState) -> None:
        """Before the first step of an experience."""

    def on_step(self, state: TrainState) -> bool | None:
        """After each optimizer step; True ends the current experience (its plan's horizon stays)."""
        return None

    def on_training_end(self, state: TrainState) -> None:
        """After an experience's last step, before the strategy's ``after_experience``."""

    def on_experience_end(self, state: TrainState, accuracies: list[float]) -> None:
        """After an experience is trained and evaluated (``accuracies``: its row of the matrix)."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint, as plain containers, numbers and tensors (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (called after :meth:`on_run_start` when a run resumes)."""


class ProgressBar(Observer):
    """A rich progress display: a bar for the whole run's planned steps and one per experience, each
    with its steps, the last loss, the throughput (training samples per second of training time), the time
    elapsed and the time left (the ETA, from the rate of the recent steps), refreshed every ``every`` steps. Totals follow the plan when a budget shortens an
    experience. Silent when the console is not a terminal (output to a file, CI logs).

    A language model's throughput is in tokens per second (``tokens_per_sample`` predicted tokens a
    window), beside its model FLOPs utilization when ``flops_per_sample`` (model FLOPs a window) and
    ``peak_flops`` (of the run's devices) are known (:func:`throughput`)."""

    def __init__(self, n_experiences: int, console: Console | None = None, every: int = 10,
                 tokens_per_sample: int = 0, flops_per_sample: float | None = None,
                 peak_flops: float | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.every = every
        self.n_experiences = n_experiences
        self.tokens_per_sample, self.flops_per_sample, self.peak_flops = tokens_per_sample, flops_per_sample, peak_flops
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.3f}"),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=self.console, transient=False,
                                 disable=not self.console.is_terminal)
        self.run_task: TaskID | None = None
        self.task: TaskID | None = None

    def on_experience_start(self, state: TrainState) -> None:
        if self.run_task is None:
            self.progress.start()
            self.run_task = self.progress.add_task("run", total=state.total_steps, completed=state.step,
                                                   loss=state.loss, rate=self.throughput(0, 0.0))
        self.task = self.progress.add_task(f"experience {state.experience + 1}/{self.n_experiences}",
                                           total=state.experience_steps, completed=state.experience_step,
                                           loss=state.loss, rate=self.throughput(0, 0.0))

    def refresh(self, state: TrainState) -> None:
        """Move both bars to ``state``."""
        if self.task is None or self.run_task is None:
            return
        seconds, run_seconds = state.experience_seconds, state.train_seconds
        self.progress.update(self.task, completed=state.experience_step, total=state.experience_steps, loss=state.loss,
                             rate=self.throughput(state.experience_samples, seconds))
        self.progress.update(self.run_task, completed=state.step, total=state.total_steps, loss=state.loss,
                             rate=self.throughput(state.samples, run_seconds))

    def throughput(self, samples: int, seconds: float) -> str:
        """The rate cell: ``samples`` trained in ``seconds`` as samples/s, or a language model's tokens/s
        and MFU (``MFU n/a`` without a peak, ``run.peak_flops``)."""
        per_second = samples / seconds if seconds > 0 else 0.0
        if not self.tokens_per_sample:
            return f"{per_second:.0f} samples/s"
        utilization = mfu((self.flops_per_sample or 0.0) * samples, seconds, self.peak_flops)
        shown = "n/a" if utilization is None else f"{utilization:.1%}"
        return f"{per_second * self.tokens_per_sample:,.0f} tokens/s, MFU {shown}"

    def on_step(self, state: TrainState) -> None:
        if state.experience_step % self.every == 0:
            self.refresh(state)

    def on_experience_end(self, state: TrainState, accuracies: list[float]) -> None:
        self.refresh(state)
        if state.experience + 1 == self.n_experiences:
            self.progress.stop()


@dataclass
class CurvePoint:
    """Accuracy on every experience's test set at one moment of training."""

    step: int
    samples: int
    seconds: float
    experience: int
    accuracies: list[float]


class PeriodicEvaluation(Observer):
    """Evaluates every test set every ``every_steps`` optimizer steps or every ``every_samples`` samples
    (and at the end of each experience).

    The curve it keeps shows what happens *inside* an experience: the stability gap (De Lange et al.
    2023, "Continual evaluation for lifelong learning: identifying the stability gap"), anytime accuracy
    in online streams, accuracy against compute. Its own time is excluded from the run's training time.
    The runner checkpoints the curve with the run and stores it in the same transaction that marks the
    run finished, so a resumed run has every point and a finished run never lacks its curve.
    """

    def __init__(self, every_steps: int | None = None, every_samples: int | None = None) -> None:
        if (every_steps is None) == (every_samples is None):
            raise ConfigError("periodic evaluation needs exactly one of every_steps and every_samples, "
                              f"got {every_steps} and {every_samples}")
        for name, value in (("every_steps", every_steps), ("every_samples", every_samples)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        self.every_steps = every_steps
        self.every_samples = every_samples
        """Evaluate each time the samples drawn cross a multiple of this (online "anytime" accuracy,
        Koh et al. 2022), whatever the batch size."""
        self.points: list[CurvePoint] = []
        self.context: RunContext | None = None
        self.samples_mark = 0

    def on_run_start(self, context: RunContext) -> None:
        self.context = context
        self.points = []
        self.samples_mark = 0

    def record(self, state: TrainState) -> None:
        """A point of the curve: every test set evaluated now (the runner leaves its time out of training)."""
        assert self.context is not None, "on_run_start was not called"
        seconds = state.train_seconds
        self.points.append(CurvePoint(state.step, state.samples, seconds, state.experience, self.context.evaluate()))

    def on_experience_start(self, state: TrainState) -> None:
        if not self.points:
            self.record(state)

    def on_step(self, state: TrainState) -> None:
        if self.every_steps is not None and state.step % self.every_steps == 0:
            self.record(state)
        elif self.every_samples is not None and state.samples // self.every_samples > self.samples_mark:
            self.samples_mark = state.samples // self.every_samples
            self.record(state)

    def on_experience_end(self, state: TrainState, accuracies: list[float]) -> None:
        """The experience's row of the matrix is the curve's point at this step (after the strategy's
        ``after_experience``, which may change predictions)."""
        if self.points and self.points[-1].step == state.step:
            self.points.pop()
        self.points.append(CurvePoint(state.step, state.samples, state.train_seconds, state.experience,
                                      list(accuracies)))

    def state_dict(self) -> dict[str, Any]:
        return {"points": [asdict(point) for point in self.points], "samples_mark": self.samples_mark}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.points = [CurvePoint(**point) for point in state["points"]]
        self.samples_mark = int(state["samples_mark"])

    @property
    def objective(self) -> str:
        assert self.context is not None, "on_run_start was not called"
        return self.context.stream.objective

    def gaps(self) -> list[StabilityGap]:
        """The stability gap of each experience switch of the curve, measured on the curve's scores
        (accuracies, or negated losses: a language model's gap is the rise of its loss on earlier
        domains, in nats per token)."""
        if not self.points:
            return []
        return stability_gaps([p.step for p in self.points], [p.experience for p in self.points],
                              as_scores(self.objective, [p.accuracies for p in self.points]))

    def gap_records(self) -> list[dict[str, Any]]:
        """Each switch's gap as stored with the run, in the metric's own units (:func:`gap_record`)."""
        return [gap_record(self.objective, gap) for gap in self.gaps()]

    def summary(self, test_sizes: Sequence[int]) -> dict[str, Any]:
        """The run metrics of the curve: its stability gaps' summary and, when a classifier is evaluated
        every few samples (the online protocol), the anytime accuracy ``a_auc`` and ``last_accuracy``. A
        language model's: ``stability_gap`` (the mean rise of the loss on earlier domains after a switch)
        and ``recovered_fraction``."""
        metrics: dict[str, Any] = dict(stability_summary(self.gaps()))
        if not higher_is_better(self.objective):
            return {key: metrics[key] for key in ("stability_gap", "recovered_fraction")}
        if self.every_samples is not None:
            metrics.update(online_metrics(self.points, test_sizes))
        return metrics
