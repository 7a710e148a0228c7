"""The runner: trains a model on a stream through a strategy and measures what it kept.

The runner owns every step of optimization (backward, clipping, learning rate, optimizer step) so
that strategies only say how a batch's loss is computed. Its loop is kept as close to a hand-written
PyTorch loop as possible (tensor slicing, no per-step allocation beyond the strategy's own), which
``benchmarks/overhead.py`` checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lifelong.config import OptimConfig
from lifelong.data.loader import derive_seed
from lifelong.data.streams import Batch, Experience, Stream, TensorSet
from lifelong.errors import ConfigError, TrainingError
from lifelong.metrics.accuracy_matrix import summary
from lifelong.metrics.compute import ExperienceCost, peak_memory_mb
from lifelong.optim.registry import build_optimizer
from lifelong.optim.samplers import batch_losses
from lifelong.optim.schedules import Position
from lifelong.optim.setup import OptimSetup, change_batch_size, epoch_end, resolve
from lifelong.runner.budget import Budget
from lifelong.runner.checkpoint import CheckpointSettings, Checkpointer, resume_point
from lifelong.runner.distributed import check_distributed, init_from_environment, local_device
from lifelong.runner.evaluation import accuracies
from lifelong.runner.observers import Observer, ProgressBar, RunContext, TrainState
from lifelong.runner.results import ResultsStore, RunRecord
from lifelong.runner.validation import check_arguments, check_model
from lifelong.strategies.base import Strategy
from lifelong.world import World


@dataclass
class RunResult:
    """What a run produced: the accuracy matrix, the metrics derived from it and the cost."""

    matrix: np.ndarray
    """R[i, j]: accuracy on experience j's test set after training on experience i."""
    initial: list[float]
    """Accuracy of the untrained model on each experience (the FWT reference)."""
    metrics: dict[str, Any]
    """Summary metrics of the matrix, plus ``effective_lr`` (the learning rate scaled to the batch size)
    and ``batch_size_changes`` (every change of the adaptive batch size, with its re-scaled rate)."""
    costs: list[ExperienceCost]
    config: dict[str, Any]
    run_id: int | None = None
    lr: float = 0.0
    """Effective learning rate: ``optim.lr`` scaled from ``optim.base_batch_size`` to ``optim.batch_size``."""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: RunRecord) -> RunResult:
        """The result of a finished stored run, as :func:`train` returned it."""
        fields = {f.name for f in dataclasses.fields(ExperienceCost)}
        costs = [ExperienceCost(**{k: v for k, v in e["cost"].items() if k in fields}) for e in record.experiences]
        metrics = record.metrics or {}
        return cls(matrix=np.asarray(record.rows), initial=list(record.initial or []), metrics=metrics, costs=costs,
                   config=record.config, run_id=record.id, lr=float(metrics.get("effective_lr", 0.0)))


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
    from lifelong.strategies import STRATEGIES  # the registry imports every strategy; the loop needs none

    name = next((key for key, cls in STRATEGIES.items() if type(strategy) is cls), type(strategy).__name__.lower())
    return {"stream": stream.name, "model": type(model).__name__,
            "strategy": {"name": name, **params},
            "optim": optim.model_dump(), "run": {"seed": seed}}


def train(stream: Stream, model: nn.Module, strategy: Strategy, optim: OptimConfig | None = None, *,
          seed: int = 0, device: str = "cpu", store: ResultsStore | None = None,
          config: dict[str, Any] | None = None, progress: bool = False, observers: Sequence[Observer] = (),
          eval_batch_size: int = 1024, checkpoint: CheckpointSettings | None = None,
          resume_run: int | None = None, world: World | None = None) -> RunResult:
    """Train ``model`` on ``stream`` with ``strategy``; evaluate on every test set after each experience.

    Returns the accuracy matrix, metrics and cost; with a ``store`` the run is recorded as it goes
    (each finished experience is written at once, so a crash keeps it). The same seed gives the same
    matrix bit for bit on CPU.

    With ``checkpoint`` the run saves checkpoints (:mod:`lifelong.runner.checkpoint`) and SIGINT or
    SIGTERM stop it cleanly; ``resume_run`` continues that stored run from its newest checkpoint, given
    the same stream, model, strategy, settings and seed, with the same result as a run never stopped.

    Under ``torchrun`` (or with an explicit ``world``) the run is data-parallel
    (:mod:`lifelong.runner.distributed`): each rank trains on its shard of every experience with
    ``optim.batch_size`` samples per step, gradients are averaged, the learning rate is scaled to the
    global batch, evaluation is sharded, and only rank 0 writes the store, checkpoints and progress.
    """
    optim = optim or OptimConfig()
    setup = resolve(optim)
    lr = setup.lr_for(optim.batch_size)
    budget = Budget(optim.max_steps, optim.max_samples, optim.max_seconds, optim.max_flops)
    dev = resolve_device(device)
    # torch.optim imports torch._dynamo on an optimizer's first use (seconds, once per process): pay it
    # here so that it is not counted as the first experience's training time
    import torch._dynamo  # noqa: F401
    world = world or init_from_environment(dev)
    if world.distributed:
        dev = local_device(dev)
        check_distributed(strategy, optim, resume_run)
        lr = setup.lr_for(optim.batch_size * world.size)
        store, progress, checkpoint = (store, progress, checkpoint) if world.is_main else (None, False, None)
    check_arguments(model, seed, eval_batch_size)
    torch.manual_seed(seed)
    model.to(dev)
    check_model(model, stream, dev)
    world.broadcast(model.state_dict().values())
    strategy.world = world
    strategy.setup(stream, derive_seed(seed, world.rank) if world.distributed else seed)
    observers = list(observers) + ([ProgressBar(len(stream))] if progress else [])
    config = config or describe(stream, model, strategy, optim, seed)
    restored = resume_point(store, resume_run, checkpoint, seed) if resume_run is not None else None
    run_id = resume_run if restored else \
        store.start_run(stream.name, str(config.get("strategy", {}).get("name", "")), seed, config) if store else None

    test_sets = [exp.test.to(dev) for exp in stream]
    initial = restored.initial if restored else accuracies(model, strategy, test_sets, eval_batch_size, world)
    if store and run_id is not None and not restored:
        store.record_initial(run_id, initial)
    rows: list[list[float]] = restored.rows() if restored else []
    costs: list[ExperienceCost] = restored.costs() if restored else []
    context = RunContext(model, strategy, stream, test_sets, eval_batch_size, initial, rows, costs, world=world)
    checkpointer = Checkpointer(checkpoint, checkpoint.folder(store.path if store else None, run_id), run_id, seed) \
        if checkpoint else None
    observers += [budget] if budget.active else []
    observers += [checkpointer] if checkpointer else []  # last: it saves what the others did at the step
    for observer in observers:
        observer.on_run_start(context)
    train_experiences: Sequence[Experience] = (stream.joined(),) if strategy.joint else stream.experiences
    epochs = setup.epochs_for(optim.batch_size)
    state = TrainState(total_steps=sum(budget.cap_steps(setup.planned_steps(world.shard_length(len(e.train)),
                                                                            optim.batch_size, epochs),
                                                        optim.batch_size) for e in train_experiences))
    batch_size_changes: list[dict[str, Any]] = []
    if restored:
        restored.restore(model, strategy, state)
    optimizer: torch.optim.Optimizer | None = None
    try:
        for index, experience in enumerate(train_experiences):
            if restored and index < restored.experience:
                continue
            state.experience, state.epoch, state.experience_step, state.experience_samples = index, 0, 0, 0
            state.epoch_samples, state.epoch_order = 0, None
            state.experience_started, state.excluded_seconds = time.perf_counter(), 0.0
            experience = experience.to(dev)  # the strategy's hooks see the data where the model is
            strategy.before_experience(model, experience)
            data = strategy.training_set(experience).to(dev)
            if optimizer is None or optim.reset_per_experience:
                optimizer = build_optimizer(optim.name, strategy.parameter_groups(model), lr=lr,
                                            momentum=optim.momentum, weight_decay=optim.weight_decay,
                                            options=optim.optimizer_params)
            context.optimizer = optimizer
            state.batch_size, state.epochs, state.flops_per_sample = optim.batch_size, epochs, 0.0
            state.experience_steps = budget.cap_steps(
                setup.planned_steps(world.shard_length(len(data)), optim.batch_size, epochs), optim.batch_size)
            state.stop_experience = False
            if restored and index == restored.experience:
                restored.resume_experience(model, strategy, state, optimizer, optim.reset_per_experience)
            for observer in observers:
                observer.on_experience_start(state)
            _train_experience(model, strategy, optimizer, setup, data, index, seed, state, observers,
                              batch_size_changes, world)
            strategy.after_experience(model, experience)
            seconds = state.experience_seconds
            state.seconds_before += seconds
            state.experience_started = None
            row = accuracies(model, strategy, test_sets, eval_batch_size, world)
            rows.append(row)
            cost = ExperienceCost(seconds=seconds, samples=state.experience_samples * world.size,
                                  steps=state.experience_step,
                                  peak_memory_mb=peak_memory_mb(dev), buffer_size=strategy.memory_size(),
                                  flops=state.experience_flops)
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
    finally:
        if checkpointer:
            checkpointer.close()
    matrix = np.asarray(rows)
    metrics: dict[str, Any] = {**summary(matrix, initial), "effective_lr": lr,
                               "batch_size_changes": batch_size_changes, "world_size": world.size}
    if store and run_id is not None:
        store.finish_run(run_id, rows, metrics)
    return RunResult(matrix=matrix, initial=initial, metrics=metrics, costs=costs, config=config, run_id=run_id,
                     lr=lr)


def _forward_backward(model: nn.Module, strategy: Strategy, optimizer: torch.optim.Optimizer, batch: Batch,
                      autocast: contextlib.AbstractContextManager[Any], world: World,
                      params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The strategy's loss of ``batch`` (under ``autocast``), back-propagated into fresh gradients
    (averaged over data-parallel ranks)."""
    with autocast:
        loss = strategy.observe(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if world.distributed:
        world.average_gradients(params)
    strategy.after_backward(model)
    return loss


def _train_experience(model: nn.Module, strategy: Strategy, optimizer: torch.optim.Optimizer, setup: OptimSetup,
                      data: TensorSet, index: int, seed: int, state: TrainState, observers: list[Observer],
                      batch_size_changes: list[dict[str, Any]], world: World) -> None:
    """The inner loop over epochs and batches of one experience.

    The position inside an epoch is a sample offset (``state.epoch_samples``), not a batch index, so
    that a run resumes mid-epoch even after the adaptive batch size changed. With FLOP counting on, the
    first step's FLOPs are counted (``FlopCounterMode``); every feature that is off costs one branch
    per step.
    """
    model.train()
    groups = optimizer.param_groups
    params = [p for g in groups for p in g["params"]]
    grad_clip, schedule, test = setup.config.grad_clip, setup.schedule, setup.batch_size_test
    autocast = setup.autocast(data.x.device)
    batch_size, base_lr = state.batch_size, setup.lr_for(state.batch_size)
    x_all, y_all, task_all = data.x, data.y, data.task
    flops_counted = not setup.count_flops

    def scorer(order: torch.Tensor, size: int) -> torch.Tensor:
        return batch_losses(model, lambda x, task: strategy.logits(model, x, task), data, order, size)

    def sample_loss(out: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(strategy.mask_logits(out, task), y)

    first_epoch, first_sample, resumed_order = state.epoch, state.epoch_samples, state.epoch_order
    epoch = first_epoch
    while epoch < state.epochs:
        state.epoch = epoch
        resumed = epoch == first_epoch and resumed_order is not None
        order = (resumed_order if resumed else
                 world.shard(setup.sampler.order(len(data), seed, index, epoch, batch_size, scorer))).to(data.x.device)
        state.epoch_order, state.epoch_samples = order, first_sample if resumed else 0
        end = epoch_end(len(order), state.epochs, epoch)
        while state.epoch_samples < end:
            offset = state.epoch_samples
            batch_index = order[offset:min(offset + batch_size, end)]
            batch = Batch(x_all[batch_index], y_all[batch_index], task_all[batch_index])
            if flops_counted:
                loss = _forward_backward(model, strategy, optimizer, batch, autocast, world, params)
            else:
                with FlopCounterMode(display=False) as counter:
                    loss = _forward_backward(model, strategy, optimizer, batch, autocast, world, params)
                state.flops_per_sample, flops_counted = counter.get_total_flops() / len(batch.y), True
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            lr = base_lr * schedule(Position(state.step, index, state.experience_step, state.experience_steps,
                                             state.total_steps))
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
            state.epoch_samples += n
            if test is not None and state.experience_step % test.every_steps == 0:
                proposed = test.propose(model, sample_loss, batch.x, batch.y, batch.task, batch_size)
                if proposed != batch_size:
                    batch_size_changes.append(change_batch_size(setup, state, proposed, len(order), len(data)))
                    batch_size, base_lr = proposed, setup.lr_for(proposed)
                    end = epoch_end(len(order), state.epochs, epoch)
            for observer in observers:
                observer.on_step(state)
            if state.stop_experience:
                return
        epoch += 1
