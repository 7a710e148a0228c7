"""The training of one experience: its set-up from the plan, its steps, its close and its cost.

:meth:`ExperienceLoop.train` is what the module docstring of :mod:`lifelong.runner.loop` lists for an
experience; :meth:`ExperienceLoop._steps` is the loop itself, which reads as a hand-written PyTorch
loop: for each batch, the learning rate, the optimizer step (:class:`~lifelong.runner.step.OptimizerStep`:
observe -> backward -> after_backward -> clip -> step), the counters, then what watches or re-plans the
experience. Where the batches come from (epochs of the sampler's orders, a resumed position, lazy
reading, augmentation) is :meth:`ExperienceLoop._batches`; FLOP and seconds budgets re-plan in
:class:`~lifelong.runner.budget.Replanner`; the adaptive batch size proposes in
:mod:`lifelong.optim.batch_size`; a real-time stream (``optim.stream_rate``) predicts every batch and lets
pass those that come while the learner is busy in :class:`~lifelong.runner.realtime.RealTimeStream`, asked
only when it is on. Nothing here allocates per step beyond the batch and the strategy's own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.augment import Augment
from lifelong.data.lazy import LazyInputs
from lifelong.data.streams import Batch, Experience, TensorSet
from lifelong.errors import TrainingError
from lifelong.metrics.compute import ExperienceCost, MemoryMeter
from lifelong.models.norms import begin_experience
from lifelong.optim.batch_size import epochs_keeping_updates
from lifelong.optim.decay import SOURCE_GROUP
from lifelong.optim.registry import build_optimizer
from lifelong.optim.samplers import batch_losses
from lifelong.optim.schedules import Constant, Position
from lifelong.optim.setup import OptimSetup, epoch_end
from lifelong.runner.averaging import Averaging
from lifelong.runner.budget import Replanner
from lifelong.runner.checkpoint import Checkpointer, Restored
from lifelong.runner.flops import FlopMeter
from lifelong.runner.gradsync import Backward
from lifelong.runner.observers import Observer, TrainState
from lifelong.runner.plan import PlannedExperience, check_lr_scales, check_training_set
from lifelong.runner.realtime import RealTimeStream, realtime_stream
from lifelong.runner.step import OptimizerStep
from lifelong.strategies.base import ExperiencePlan, Strategy
from lifelong.world import World


@dataclass(kw_only=True)
class ExperienceLoop:
    """Trains the run's experiences one at a time (:meth:`train`), keeping the optimizer between them."""

    model: nn.Module
    strategy: Strategy
    setup: OptimSetup
    world: World
    seed: int
    device: torch.device
    state: TrainState
    meter: FlopMeter
    planner: Replanner
    memory: MemoryMeter
    """The run's memory use above what was in use at its start."""
    backward: Backward = field(default_factory=Backward)
    """Back-propagates a loss and averages the gradients over data-parallel ranks."""
    observers: Sequence[Observer] = ()
    averaging: Averaging | None = None
    checkpointer: Checkpointer | None = None
    augmentation: tuple[Augment, torch.Generator] | None = None
    """Crops and flips of every training batch, drawn from the run's generator; None without."""
    memory_format: torch.memory_format = torch.contiguous_format
    """Of the image batches (4-D inputs) the model is fed."""
    sharded: bool = False
    """The model is sharded with FSDP2: its ranks hold different shards, kept consistent by FSDP."""
    optimizer: torch.optim.Optimizer | None = None
    step: OptimizerStep | None = None
    """The current experience's optimizer step (None when its plan does not train)."""
    data: TensorSet | None = None
    """The training set of the current experience (None when its plan does not train)."""
    seconds: float = 0.0
    """Training seconds of the experience last closed."""
    batch_size_changes: list[dict[str, Any]] = field(default_factory=list)
    """Every change of the adaptive batch size, with its re-scaled rate."""
    flops_per_token: float | None = None
    """A transformer language model's model FLOPs per trained token (:func:`~lifelong.metrics.utilization.lm_flops_per_token`);
    None: the FLOP meter's count is the model FLOPs."""
    peak_flops: float = 0.0
    """Peak FLOP/s of the run's devices together (0: unknown, MFU n/a)."""
    realtime: RealTimeStream | None = field(init=False, default=None)
    """The real-time stream (``optim.stream_rate``), or None: every batch is trained on."""

    def __post_init__(self) -> None:
        self.realtime = realtime_stream(self.setup.config, self.setup.batch_size, self.model, self.strategy,
                                        self.meter, self.world, self.sharded)

    def train(self, index: int, experience: Experience, planned: PlannedExperience, restored: Restored | None) -> None:
        """Set up, train and close one experience (``restored``: a checkpoint to continue it from)."""
        state, strategy, model, meter, realtime = self.state, self.strategy, self.model, self.meter, self.realtime
        self._start(index, planned, len(experience.train))
        if realtime is not None:
            realtime.start_experience(experience, index, planned.strategy)
        begin_experience(model, index)
        hook_flops = meter.measure(lambda: strategy.before_experience(model, experience))[1]
        self.data = self.step = None
        if planned.strategy.trains:
            data, flops = meter.measure(lambda: strategy.training_set(experience).to(self.device))
            hook_flops += flops
            check_training_set(strategy, index, planned.strategy, len(data))
            self.data = data
            self._prepare_optimizer(planned.strategy, self.setup.config.reset_per_experience)
        state.experience_flops = meter.total(hook_flops)[0]
        if realtime is not None:  # the stream ran on while the hooks and the set-up kept the learner busy
            realtime.busy(state, state.experience_flops, state.experience_seconds)
        if restored is not None:
            restored.resume_experience(model, strategy, state, self.optimizer, self.setup.config.reset_per_experience
                                       or planned.strategy.reset_optimizer, self._generator())
        if self.averaging is not None:
            self.averaging.start_experience(state)
        self._notify_start()
        if self.data is not None and state.experience_step < state.experience_steps:
            self._steps(self.data, index)
        if self.averaging is not None:
            self.averaging.end_training()
        self._notify_training_end()
        hooked = time.perf_counter()
        hook_flops = meter.total(meter.measure(lambda: strategy.after_experience(model, experience))[1])[0]
        state.experience_flops += hook_flops
        state.closing_flops_per_sample = hook_flops / max(len(experience.train), 1)
        if realtime is not None:
            realtime.busy(state, hook_flops, time.perf_counter() - hooked)
        if self.world.distributed and not self.sharded:  # whatever the hooks computed, every rank has the same model
            self.world.broadcast(model.state_dict().values())
        self.seconds = state.experience_seconds
        state.seconds_before += self.seconds
        state.experience_started = None

    def cost(self, branch: ExperienceCost) -> ExperienceCost:
        """What the experience just closed took, with what its branch-off took (``branch``)."""
        state, strategy = self.state, self.strategy
        online_total, online_count = state.online_total, state.online_count
        if self.realtime is not None and self.world.distributed:  # each rank scored its own batches
            sums = self.world.all_reduce_sum(torch.tensor([online_total, online_count], dtype=torch.float64))
            online_total, online_count = float(sums[0]), int(sums[1])
        samples = state.experience_samples + branch.samples
        window = self.data.x.shape[1] - 1 if strategy.language_model and self.data is not None else 0
        flops = state.experience_flops + branch.flops
        model_flops = self.flops_per_token * samples * window if self.flops_per_token is not None else flops
        return ExperienceCost(seconds=self.seconds + branch.seconds, samples=samples, tokens=samples * window,
                              model_flops=model_flops, peak_flops=self.peak_flops,
                              steps=state.experience_step + branch.steps,
                              memory_increase_mb=self.memory.increase_mb(), buffer_size=strategy.memory_size(),
                              memory_bytes=strategy.memory_bytes(), flops=flops,
                              replayed=strategy.replayed - state.replayed_before + branch.replayed,
                              skipped=state.experience_skipped, online_samples=online_count,
                              online_metric=online_total / online_count if online_count else 0.0)

    def _start(self, index: int, planned: PlannedExperience, samples: int) -> None:
        """The counters at an experience's start (a resumed one gets its checkpoint's afterwards);
        ``samples``: the experience's own, by which its closing hook's FLOP reserve is counted."""
        state = self.state
        state.experience, state.epoch, state.experience_step, state.experience_samples = index, 0, 0, 0
        state.epoch_samples, state.epoch_order = 0, None
        state.experience_flops, state.step_flops, state.next_step_flops = 0.0, 0.0, 0.0
        state.experience_started, state.excluded_seconds, state.clock_paused = time.perf_counter(), 0.0, None
        state.batch_size, state.epochs = self.setup.batch_size, planned.epochs
        state.experience_steps = planned.steps
        state.replayed_before = self.strategy.replayed
        state.experience_skipped, state.online_total, state.online_count = 0, 0.0, 0
        self.meter.start_experience()
        self.planner.start(planned.strategy.train_size, samples)

    def _prepare_optimizer(self, declared: ExperiencePlan, rebuild: bool) -> None:
        """Build the optimizer when there is none, the settings reset it at each experience or the plan
        asks (``rebuild``/``reset_optimizer``), then apply the plan's learning-rate scales to its groups."""
        config = self.setup.config
        if self.optimizer is None or rebuild or declared.reset_optimizer:
            groups = self.strategy.parameter_groups(self.model)
            for group in groups:
                group["default_lr_scale"] = float(group.pop("lr_scale", 1.0))
            self.optimizer = build_optimizer(config.name, groups, lr=self.setup.lr_for(self.setup.batch_size),
                                             momentum=config.momentum, weight_decay=config.weight_decay,
                                             options=config.optimizer_params, model=self.model,
                                             agvm=self.setup.agvm)
        groups = self.optimizer.param_groups
        # a model that exempts parameters from weight decay splits a strategy's group in two: both halves
        # take the scale the strategy declared for the group they came from
        sources = [group.get(SOURCE_GROUP, index) for index, group in enumerate(groups)]
        check_lr_scales(self.strategy, declared, len(set(sources)))
        scales = [declared.lr_scales[source] for source in sources] if declared.lr_scales \
            else [group["default_lr_scale"] for group in groups]
        for group, scale in zip(groups, scales, strict=True):
            group["lr_scale"] = scale
        self.step = OptimizerStep(self.model, self.strategy, self.optimizer, self.backward,
                                  self.setup.autocast(self.device), config.grad_clip, self.world)

    def _steps(self, data: TensorSet, index: int) -> None:
        """The experience's optimizer steps until its plan's horizon (which FLOP and seconds budgets
        lower as they are spent, and a real-time stream as it lets batches pass) or an observer ends it."""
        state, step, meter, planner, test = self.state, self.step, self.meter, self.planner, self.setup.batch_size_test
        realtime, started = self.realtime, 0.0
        assert step is not None, "the optimizer is prepared before the steps"
        schedule = self.setup.schedule
        constant = isinstance(schedule, Constant)
        base_lr = self.setup.lr_for(state.batch_size * self.world.size)
        counting, metered = meter.enabled, meter.enabled or planner.budget.measured
        watched = bool(self.observers) or self.averaging is not None or self.checkpointer is not None
        ranks, memory_size, flops = self.world.size, self.strategy.memory_size, 0.0
        self.model.train()
        for batch in self._batches(data, index):
            if realtime is not None:
                if not realtime.arrives(batch, state):  # it passed while the learner was busy: a step that never comes
                    state.epoch_samples += len(batch.y)
                    planner.replan(state)
                    if state.experience_step >= state.experience_steps:
                        return
                    continue
                started = time.perf_counter()
            lr = base_lr if constant else base_lr * schedule(
                Position(state.step, index, state.experience_step, state.experience_steps, state.total_steps,
                         state.samples))
            if counting:
                loss, flops = meter.step((index, len(batch.y), memory_size()), lambda: step(batch, lr))
            else:
                loss = step(batch, lr)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingError(f"the loss became {value} at experience {index}, step {state.experience_step} "
                                    f"(epoch {state.epoch}); lower optim.lr or set optim.grad_clip")
            drawn = len(batch.y)
            samples = drawn * ranks
            state.loss, state.lr = value, lr
            state.step += 1
            state.experience_step += 1
            state.samples += samples
            state.experience_samples += samples
            state.epoch_samples += drawn
            if metered:
                planner.after_step(state, flops)
            if realtime is not None:
                realtime.trained(state, started)
            if test is not None and test.due(state.experience_step, state.experience_steps) \
                    and planner.affords_test(state, drawn) and self._adapt_batch_size(batch):
                base_lr = self.setup.lr_for(state.batch_size * ranks)
            if (watched and self._after_step()) or state.experience_step >= state.experience_steps:
                return

    def _batches(self, data: TensorSet, index: int) -> Iterator[Batch]:
        """The experience's batches from where it stands, over epochs of the sampler's orders (a resumed
        experience: from its checkpoint's order and offset), each order cut into batches of the current
        batch size (read ahead through the dataset's loader when lazy), augmented, in the model's format.

        The position inside an epoch is a sample offset (``state.epoch_samples``), not a batch index, so
        that a run resumes mid-epoch even after the adaptive batch size changed."""
        state, augmentation, memory_format = self.state, self.augmentation, self.memory_format
        y_all, task_all = data.y, data.task
        one_task = len(task_all) > 0 and bool((task_all == task_all[0]).all())  # a slice then serves every batch
        # the inputs are sliced in memory, or read ahead (``reader``) when they are a lazy dataset's
        x_all, lazy = cast(torch.Tensor, data.x), cast(LazyInputs, data.x)
        resumed = state.epoch_order
        while state.epoch < state.epochs:
            if resumed is None:
                order, state.epoch_samples = self._order(data, index, state.epoch), 0
            else:
                order, resumed = resumed.to(y_all.device), None
            state.epoch_order = order
            size = end = 0
            reader: Iterator[torch.Tensor] | None = None
            while True:
                if size != state.batch_size:  # the epoch's first batch, or the adaptive batch size changed
                    size, end = state.batch_size, epoch_end(len(order), state.epochs, state.epoch)
                    reader = self._reader(data, order, end)
                offset = state.epoch_samples
                if offset >= end:
                    break
                rows = order[offset:min(offset + size, end)]
                x = next(reader).to(self.device, non_blocking=True) if reader is not None else x_all[rows]
                raw = None
                if augmentation is not None:
                    raw, x = x, augmentation[0](x, augmentation[1])
                if x.ndim == 4:
                    x = x.contiguous(memory_format=memory_format)
                task = task_all[:len(rows)] if one_task else task_all[rows]
                yield Batch(x, y_all[rows], task, raw, None if reader is None else lazy[rows.cpu()])
            state.epoch += 1

    def _order(self, data: TensorSet, index: int, epoch: int) -> torch.Tensor:
        """This rank's sample order of ``epoch``: the sampler's order of the whole set (rank 0's, so that
        a sampler that scores the data, e.g. hard batches, shards one order), dealt over the ranks."""
        model, strategy, state = self.model, self.strategy, self.state

        def scorer(order: torch.Tensor, size: int) -> torch.Tensor:
            losses, flops = self.meter.measure(lambda: batch_losses(
                model, lambda x, task: strategy.logits(model, x, task), data, order, size))
            self.planner.charge_scoring(state, flops)
            return losses

        order = self.setup.sampler.order(len(data), self.seed, index, epoch, state.batch_size, scorer)
        if self.world.distributed:
            self.world.broadcast([order])
        return self.world.shard(order).to(data.y.device)

    def _reader(self, data: TensorSet, order: torch.Tensor, end: int) -> Iterator[torch.Tensor] | None:
        """For a lazy dataset, the inputs of the rest of the epoch's order (from the current sample
        offset to ``end``), read through the dataset's training loader in batches of the current size;
        None for a set in memory, which the loop slices."""
        if not isinstance(data.x, LazyInputs):
            return None
        rest = order[self.state.epoch_samples:end].cpu()
        return data.x[rest].read(self.state.batch_size, channel="train")

    def _adapt_batch_size(self, batch: Batch) -> bool:
        """The norm test on the batch just trained on (its FLOPs charged to the experience); on a change,
        the experience moves to the new batch size (with ``keep_updates``, its epochs left lengthen by the
        growth) and is re-planned, and the change is logged. Whether the batch size changed."""
        state, setup, strategy = self.state, self.setup, self.strategy
        test = setup.batch_size_test
        assert test is not None

        def sample_loss(out: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(strategy.mask_logits(out, task), y)

        proposed, flops = self.meter.measure(lambda: test.propose(self.model, sample_loss, batch.x, batch.y,
                                                                  batch.task, state.batch_size))
        self.planner.charge_test(state, flops, len(batch.y))
        changed = proposed != state.batch_size
        if changed:
            if setup.config.keep_updates:
                order_length = len(state.epoch_order) if state.epoch_order is not None else self.planner.size
                state.epochs = epochs_keeping_updates(state.epochs, state.epoch + state.epoch_samples / order_length,
                                                      state.batch_size, proposed)
            state.batch_size = proposed
        self.planner.after_batch_size_test(state, changed)
        if changed:
            self.batch_size_changes.append({"experience": state.experience, "step": state.step,
                                            "batch_size": proposed, "lr": setup.lr_for(proposed * self.world.size),
                                            "epochs": state.epochs})
        return changed

    def _after_step(self) -> bool:
        """What follows a step beside the loop's own counters: the averaging first (the evaluations see
        its average of this step), then, with the training clock stopped, every observer and the
        checkpoint (which keeps what they recorded). Whether an observer ended the experience."""
        state = self.state
        if self.averaging is not None:
            self.averaging.after_step()
        state.pause_clock()
        stop = False
        for observer in self.observers:
            stop = bool(observer.on_step(state)) or stop
        if self.checkpointer is not None:
            self.checkpointer.after_step(state)
        state.resume_clock()
        return stop

    def _notify_start(self) -> None:
        """The observers at an experience's start: its optimizer, then the start itself (clock stopped)."""
        self.state.pause_clock()
        for observer in self.observers:
            observer.on_optimizer(self.optimizer)
            observer.on_experience_start(self.state)
        self.state.resume_clock()

    def _notify_training_end(self) -> None:
        self.state.pause_clock()
        for observer in self.observers:
            observer.on_training_end(self.state)
        self.state.resume_clock()

    def _generator(self) -> torch.Generator | None:
        return self.augmentation[1] if self.augmentation is not None else None
