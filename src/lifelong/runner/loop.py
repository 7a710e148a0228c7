"""The runner: trains a model on a stream through a strategy and measures what it kept.

The runner owns every step of optimization (backward, clipping, learning rate, optimizer step) so
that strategies only say how a batch's loss is computed. Its loop is kept as close to a hand-written
PyTorch loop as possible (tensor slicing, no per-step allocation beyond the strategy's own), which
``benchmarks/overhead.py`` checks.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lifelong.config import OptimConfig
from lifelong.data.loader import batches, epoch_order
from lifelong.data.streams import Experience, Stream
from lifelong.errors import ConfigError, DataError, TrainingError
from lifelong.metrics.accuracy_matrix import summary
from lifelong.metrics.compute import ExperienceCost, peak_memory_mb
from lifelong.optim.registry import build_optimizer
from lifelong.optim.schedules import SCHEDULES, Position
from lifelong.runner.evaluation import accuracies
from lifelong.runner.observers import Observer, ProgressBar, RunContext, TrainState
from lifelong.runner.results import ResultsStore
from lifelong.strategies.base import Strategy


@dataclass
class RunResult:
    """What a run produced: the accuracy matrix, the metrics derived from it and the cost."""

    matrix: np.ndarray
    """R[i, j]: accuracy on experience j's test set after training on experience i."""
    initial: list[float]
    """Accuracy of the untrained model on each experience (the FWT reference)."""
    metrics: dict[str, float | None]
    costs: list[ExperienceCost]
    config: dict[str, Any]
    run_id: int | None = None
    lr: float = 0.0
    """Base learning rate the optimizer ran with."""
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"run.device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device={device!r} but no CUDA device is available; use 'cpu' or 'auto'")
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"run.device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    return resolved


def describe(stream: Stream, model: nn.Module, strategy: Strategy, optim: OptimConfig, seed: int) -> dict[str, Any]:
    """A configuration record for runs started from Python objects rather than a config file."""
    params = {f.name: getattr(strategy, f.name) for f in dataclasses.fields(strategy) if f.init} \
        if dataclasses.is_dataclass(strategy) else {}
    return {"stream": stream.name, "model": type(model).__name__,
            "strategy": {"name": type(strategy).__name__.lower(), **params},
            "optim": optim.model_dump(), "run": {"seed": seed}}


def _check_model(model: nn.Module, stream: Stream, device: torch.device) -> None:
    sample = stream[0].train.x[:2].to(device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        try:
            out = model(sample)
        except RuntimeError as error:
            raise DataError(f"the model cannot take inputs of shape {tuple(stream.input_shape)}: {error}") from None
    model.train(was_training)
    if out.ndim != 2 or out.shape[1] != stream.n_classes:
        raise DataError(f"the model outputs shape {tuple(out.shape[1:])} per sample but the stream has "
                        f"{stream.n_classes} classes; give the model a head of {stream.n_classes} outputs")


def train(stream: Stream, model: nn.Module, strategy: Strategy, optim: OptimConfig | None = None, *,
          seed: int = 0, device: str = "cpu", store: ResultsStore | None = None,
          config: dict[str, Any] | None = None, progress: bool = False, observers: Sequence[Observer] = (),
          eval_batch_size: int = 1024) -> RunResult:
    """Train ``model`` on ``stream`` with ``strategy``; evaluate on every test set after each experience.

    Returns the accuracy matrix, metrics and cost; with a ``store`` the run is recorded as it goes
    (each finished experience is written at once, so a crash keeps it). The same seed gives the same
    matrix bit for bit on CPU.
    """
    optim = optim or OptimConfig()
    if optim.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule must be one of {sorted(SCHEDULES)}, got {optim.schedule!r}")
    schedule = SCHEDULES[optim.schedule]()
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model.to(dev)
    _check_model(model, stream, dev)
    strategy.setup(stream, seed)
    observers = list(observers) + ([ProgressBar(len(stream))] if progress else [])
    config = config or describe(stream, model, strategy, optim, seed)
    run_id = store.start_run(stream.name, str(config.get("strategy", {}).get("name", "")), seed, config) \
        if store else None

    test_sets = [exp.test.to(dev) for exp in stream]
    initial = accuracies(model, strategy, test_sets, eval_batch_size)
    if store and run_id is not None:
        store.record_initial(run_id, initial)
    context = RunContext(model, strategy, stream, test_sets, eval_batch_size)
    for observer in observers:
        observer.on_run_start(context)
    train_experiences: Sequence[Experience] = (stream.joined(),) if strategy.joint else stream.experiences
    total_steps = sum(optim.epochs * math.ceil(len(e.train) / optim.batch_size) for e in train_experiences)
    rows: list[list[float]] = []
    costs: list[ExperienceCost] = []
    state = TrainState()
    optimizer: torch.optim.Optimizer | None = None
    try:
        for index, experience in enumerate(train_experiences):
            state.experience, state.epoch, state.experience_step, state.experience_samples = index, 0, 0, 0
            state.experience_started, state.excluded_seconds = time.perf_counter(), 0.0
            strategy.before_experience(model, experience)
            data = strategy.training_set(experience).to(dev)
            if optimizer is None or optim.reset_per_experience:
                optimizer = build_optimizer(optim.name, strategy.parameter_groups(model), lr=optim.lr,
                                            momentum=optim.momentum, weight_decay=optim.weight_decay)
            state.experience_steps = optim.epochs * math.ceil(len(data) / optim.batch_size)
            state.stop_experience = False
            for observer in observers:
                observer.on_experience_start(state)
            _train_experience(model, strategy, optimizer, optim, schedule, data, index, seed, total_steps,
                              state, observers)
            strategy.after_experience(model, experience)
            seconds = state.experience_seconds
            state.seconds_before += seconds
            state.experience_started = None
            row = accuracies(model, strategy, test_sets, eval_batch_size)
            rows.append(row)
            cost = ExperienceCost(seconds=seconds, samples=state.experience_samples, steps=state.experience_step,
                                  peak_memory_mb=peak_memory_mb(dev), buffer_size=strategy.memory_size())
            costs.append(cost)
            if store and run_id is not None:
                store.record_experience(run_id, index, row, cost.as_dict())
            for observer in observers:
                observer.on_experience_end(state, row)
    except KeyboardInterrupt:
        if store and run_id is not None:
            store.set_status(run_id, "interrupted", f"interrupted during experience {state.experience}")
        raise
    except Exception as error:
        if store and run_id is not None:
            store.set_status(run_id, "failed", f"{type(error).__name__}: {error}")
        raise
    matrix = np.asarray(rows)
    metrics = summary(matrix, initial)
    if store and run_id is not None:
        store.finish_run(run_id, rows, metrics)
    return RunResult(matrix=matrix, initial=initial, metrics=metrics, costs=costs, config=config, run_id=run_id,
                     lr=optim.lr)


def _train_experience(model: nn.Module, strategy: Strategy, optimizer: torch.optim.Optimizer, optim: OptimConfig,
                      schedule: Any, data: Any, index: int, seed: int, total_steps: int, state: TrainState,
                      observers: list[Observer]) -> None:
    """The inner loop over epochs and batches of one experience."""
    model.train()
    groups = optimizer.param_groups
    params = [p for g in groups for p in g["params"]]
    for epoch in range(optim.epochs):
        state.epoch = epoch
        order = epoch_order(len(data), seed, index, epoch).to(data.x.device)
        for batch in batches(data, order, optim.batch_size):
            loss = strategy.observe(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
            lr = optim.lr * schedule(Position(state.step, index, state.experience_step, state.experience_steps,
                                              total_steps))
            for group in groups:
                group["lr"] = lr * group["lr_scale"]
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingError(f"the loss became {value} at experience {index}, step {state.experience_step} "
                                    f"(epoch {epoch}); lower optim.lr or set optim.grad_clip")
            n = len(batch.y)
            state.loss, state.lr = value, lr
            state.step += 1
            state.experience_step += 1
            state.samples += n
            state.experience_samples += n
            for observer in observers:
                observer.on_step(state)
            if state.stop_experience:
                return
