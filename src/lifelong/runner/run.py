"""A prepared run (:func:`lifelong.runner.loop.prepare`) and its execution: every experience trained,
evaluated, stored and checkpointed in turn, then the result."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from torch import nn

from lifelong.data.streams import Experience, Stream, TensorSet
from lifelong.data.text import validation_bytes_per_token
from lifelong.metrics.compute import ExperienceCost
from lifelong.metrics.objectives import LANGUAGE_MODEL, matrix_summary
from lifelong.optim.probe import ProbeResult
from lifelong.runner.averaging import Averaging
from lifelong.runner.branch import BranchOff
from lifelong.runner.checkpoint import (
    Restored,
    RunContents,
    Stateful,
    random_states_kept,
    set_random_states,
)
from lifelong.runner.evaluation import evaluate
from lifelong.runner.experience import ExperienceLoop
from lifelong.runner.forecast import ForecastStop
from lifelong.runner.observers import Observer, PeriodicEvaluation, TrainState
from lifelong.runner.plan import PlannedExperience, plan_records
from lifelong.runner.results import ResultsStore, RunRecord
from lifelong.world import World


@dataclass
class RunResult:
    """What a run produced: the accuracy matrix, the metrics derived from it and the cost."""

    matrix: np.ndarray
    """R[i, j]: accuracy on experience j's test set after training on experience i."""
    initial: list[float]
    """Accuracy of the untrained model on each experience (the FWT reference)."""
    metrics: dict[str, Any]
    """Summary metrics of the matrix, plus ``effective_lr`` (the learning rate scaled to the global
    batch size) and ``batch_size_changes`` (every change of the adaptive batch size, with its re-scaled
    rate); with an evaluation curve, its stability-gap and (online) anytime metrics."""
    costs: list[ExperienceCost]
    config: dict[str, Any]
    run_id: int | None = None
    lr: float = 0.0
    """Effective learning rate: ``optim.lr`` scaled from ``optim.base_batch_size`` to the global batch."""
    extra: dict[str, Any] = field(default_factory=dict)
    """``plan``: the runner's plan of each experience; with an evaluation curve, ``curve`` (its points)
    and ``stability_gaps`` (one per experience switch)."""

    @classmethod
    def from_record(cls, record: RunRecord) -> RunResult:
        """The result of a finished stored run, as :func:`~lifelong.runner.loop.train` returned it."""
        fields = {f.name for f in dataclasses.fields(ExperienceCost)}
        costs = [ExperienceCost(**{k: v for k, v in e["cost"].items() if k in fields}) for e in record.experiences]
        metrics = record.metrics or {}
        return cls(matrix=np.asarray(record.rows), initial=list(record.initial or []), metrics=metrics, costs=costs,
                   config=record.config, run_id=record.id, lr=float(metrics.get("effective_lr", 0.0)),
                   extra={"curve": record.curve} if record.curve else {})


@dataclass(kw_only=True)
class Run:
    """Everything a run needs once prepared: the experiences and their plans, the loop that trains them,
    the test sets and what evaluates them, the store, the observers and (resuming) the checkpoint.
    :meth:`execute` trains it, once."""

    stream: Stream
    experiences: Sequence[Experience]
    plans: list[PlannedExperience]
    loop: ExperienceLoop
    test_sets: list[TensorSet]
    eval_batch_size: int
    evaluated: World
    """The world evaluation is sharded over (one process for a sharded model, whose forward is collective)."""
    config: dict[str, Any]
    random: dict[str, Any]
    """The run's own global random states (torch's, which dropout draws from, seeded from the run's
    seed; numpy's and Python's), active only while it prepares and executes: the caller's are kept."""
    initial: list[float]
    rows: list[list[float]] = field(default_factory=list)
    costs: list[ExperienceCost] = field(default_factory=list)
    observers: Sequence[Observer] = ()
    evaluation: PeriodicEvaluation | None = None
    forecast: ForecastStop | None = None
    """Learning-curve extrapolation (``optim.forecast_stop``), one of the observers; its records go to the metrics."""
    averaging: Averaging | None = None
    branch: BranchOff | None = None
    store: ResultsStore | None = None
    run_id: int | None = None
    restored: Restored | None = None
    generator: torch.Generator | None = None
    """The runner's own draws (training augmentation), checkpointed with the run; None without any."""
    probed: ProbeResult | None = None
    compile_seconds: float | None = None
    """Seconds the model took to compile and warm up (None: not compiled)."""
    export: Callable[[nn.Module], None] | None = None
    """Writes the trained model (:attr:`~lifelong.runner.loop.RunOptions.export`)."""

    @property
    def state(self) -> TrainState:
        return self.loop.state

    @property
    def parts(self) -> list[Stateful]:
        """The parts whose state a checkpoint keeps beside the model and the strategy, in their order."""
        return [*([self.averaging] if self.averaging is not None else []), *self.observers]

    def evaluation_weights(self) -> AbstractContextManager[None]:
        """The weights every evaluation of the run uses, in the model while the context is open: the
        EMA's with one (:mod:`lifelong.runner.averaging`), the training weights otherwise."""
        return self.averaging.evaluation_weights() if self.averaging is not None else contextlib.nullcontext()

    def evaluate(self) -> list[float]:
        """A row: every test set evaluated with the weights evaluations use (the EMA's, with one)."""
        with self.evaluation_weights():
            return evaluate(self.loop.model, self.loop.strategy, self.test_sets, self.eval_batch_size, self.evaluated)

    def contents(self) -> RunContents:
        """What the run holds now, for a checkpoint."""
        loop = self.loop
        return RunContents(loop.model, loop.strategy, loop.optimizer, self.generator, self.initial, self.rows,
                           self.costs, self.parts)

    def execute(self) -> RunResult:
        """Train every experience left, evaluating after each (one row of the matrix) and storing it at
        once; then the metrics, stored with the run's status. An interruption or a failure marks the
        stored run so, and the caller's global random states are as they were in every case."""
        store, run_id, checkpointer = self.store, self.run_id, self.loop.checkpointer
        with random_states_kept(cuda=self.loop.device.type == "cuda"):
            set_random_states(self.random)
            try:
                self._train()
                result = self._result()
                if self.export is not None and self.loop.world.is_main:
                    with self.evaluation_weights():
                        self.export(self.loop.model)
                if store is not None and run_id is not None:
                    store.finish_run(run_id, self.rows, result.metrics, result.extra.get("curve"))
                if checkpointer is not None:
                    checkpointer.run_finished()
                return result
            except (KeyboardInterrupt, Exception) as error:
                self.stopped(error)
                raise
            finally:
                self.loop.backward.close()
                if checkpointer is not None:
                    checkpointer.close()

    def stopped(self, error: BaseException) -> None:
        """Mark the stored run as ``error`` left it: interrupted by Ctrl-C or a signal, failed otherwise."""
        if self.store is None or self.run_id is None:
            return
        if isinstance(error, KeyboardInterrupt):
            self.store.set_status(self.run_id, "interrupted", f"interrupted during experience {self.state.experience}")
        else:
            self.store.set_status(self.run_id, "failed", f"{type(error).__name__}: {error}")

    def _train(self) -> None:
        loop, restored, state = self.loop, self.restored, self.state
        for index, experience in enumerate(self.experiences):
            if restored is not None and index < restored.experience:
                continue
            loop.train(index, experience.to(loop.device), self.plans[index],
                       restored if restored is not None and index == restored.experience else None)
            with self._branch(index) as branch:
                row = self.evaluate()
            self.rows.append(row)
            self.costs.append(loop.cost(branch))
            if self.store is not None and self.run_id is not None:
                self.store.record_experience(self.run_id, index, row, self.costs[-1].as_dict())
            for observer in self.observers:
                observer.on_experience_end(state, row)
            if loop.checkpointer is not None:
                loop.checkpointer.after_experience(state)

    def _branch(self, index: int) -> contextlib.AbstractContextManager[ExperienceCost]:
        """The experience's branch-off (``optim.branch_decay``) around its evaluation, or nothing."""
        loop = self.loop
        if self.branch is None or loop.data is None or loop.step is None or self.state.experience_step == 0:
            return contextlib.nullcontext(ExperienceCost())
        return self.branch.decayed(index, loop.data, loop.step, self.state)

    def _result(self) -> RunResult:
        setup, world = self.loop.setup, self.loop.world
        result = RunResult(matrix=np.asarray(self.rows), initial=self.initial, metrics={}, costs=self.costs,
                           config=self.config, run_id=self.run_id, lr=setup.lr_for(setup.batch_size * world.size),
                           extra={"plan": plan_records(self.plans)})
        _summarise(result, self.stream, [len(t) for t in self.test_sets], self.loop.batch_size_changes, world,
                   self.evaluation)
        if self.probed is not None:
            result.metrics.update(probed_batch_size=self.probed.batch_size,
                                  probed_noise_scale=self.probed.noise_scale,
                                  probed_max_stable_lr=self.probed.max_stable_lr)
        if self.compile_seconds is not None:
            result.metrics["compile_seconds"] = self.compile_seconds
        if self.averaging is not None:
            result.metrics["average"] = self.averaging.summary()
        if self.forecast is not None:
            result.metrics["forecast"] = self.forecast.records
        return result


def _summarise(result: RunResult, stream: Stream, test_sizes: list[int], batch_size_changes: list[dict[str, Any]],
               world: World, evaluation: PeriodicEvaluation | None) -> None:
    """The run's metrics from its matrix of accuracies or losses (and its evaluation curve, with its
    points and stability gaps in ``extra``); a language model's also count the tokens trained on and
    replayed (windows of ``L + 1`` tokens: ``L`` predicted each)."""
    result.metrics = {**matrix_summary(stream.objective, result.matrix, result.initial, test_sizes,
                                       bytes_per_token=validation_bytes_per_token(stream)),
                      "effective_lr": result.lr, "batch_size_changes": batch_size_changes, "world_size": world.size,
                      "replayed_samples": sum(cost.replayed for cost in result.costs)}
    if stream.objective == LANGUAGE_MODEL:
        predicted = stream.input_shape[0] - 1
        result.metrics.update(tokens=predicted * sum(cost.samples for cost in result.costs),
                              replayed_tokens=predicted * result.metrics["replayed_samples"])
    if evaluation is not None:
        result.metrics.update(evaluation.summary(test_sizes))
        result.extra.update(curve=[dataclasses.asdict(point) for point in evaluation.points],
                            stability_gaps=evaluation.gap_records())
