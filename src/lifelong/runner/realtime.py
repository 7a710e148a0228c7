"""A stream that does not wait for the learner (``optim.stream_rate``): real-time evaluation of online
continual learning (Ghunaim et al., CVPR 2023, "Real-Time Evaluation in Online Continual Learning: A New
Hope").

The stream brings its batches at a fixed pace whatever the learner does: batch ``j`` arrives at
``a_j = a_{j-1} + r_{j-1}``, where ``r`` is the stream's cost per batch (a number of FLOPs or seconds per
``batch_size`` samples, a smaller batch coming after its share, or a naive step's cost of that batch). The
learner is free at its clock ``c``. Each batch, as it arrives, is first predicted (the online metric: the
accuracy on the next batch before training on it, Cai et al. 2021); then, if the next batch has already
arrived by the time the learner is free (``a_{j+1} <= c``), the batch passes untrained (skipped); else the
learner trains on it from ``max(c, a_j)`` and is busy for the step's cost: ``c = max(c, a_j) + cost``. A
method whose every step costs k times the stream's cost per batch therefore trains on every k-th batch (in
the long run a share ``1 / k``, for any real k >= 1); a cheaper one waits for each batch and trains on all.
The hooks of an experience (``before_experience``, the training set, ``after_experience``) keep the learner
busy too: the stream runs on across experiences, and the batches that come meanwhile pass.

The costs are the runner's FLOP counts (:mod:`lifelong.runner.flops`, over all ranks) by default, so the
skipped batches are the same on any machine and a resumed run skips what the uninterrupted one did (the
clock and the arrivals are counters of :class:`~lifelong.runner.observers.TrainState`, checkpointed), or the
measured wall time (``optim.stream_cost = "seconds"``, one process only). The online prediction, the
measurement of a naive step and the skip decisions cost the learner nothing and are left out of the
training time.

Departures: an experience whose plan takes no gradient step draws no batch, so its stream neither arrives
nor is predicted; the stream is the order the runner's sampler draws (one epoch for the online protocol).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.config import NAIVE, OptimConfig
from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.metrics.objectives import logits_of, next_token_loss
from lifelong.models.modes import eval_mode
from lifelong.runner.flops import FlopMeter
from lifelong.runner.observers import TrainState
from lifelong.strategies.base import ExperiencePlan, Strategy
from lifelong.world import World

NAIVE_TIMINGS = 3
"""Timed runs of a naive step whose fastest paces a stream by seconds (the first run warms caches up)."""


class RealTimeStream:
    """The stream's pace and the learner's clock (see the module's docstring): :meth:`arrives` for every
    batch the runner draws, :meth:`trained` after each step taken, :meth:`busy` for an experience's hooks."""

    def __init__(self, rate: float | str, seconds: bool, batch_size: int, model: nn.Module, strategy: Strategy,
                 meter: FlopMeter, world: World) -> None:
        self.rate, self.seconds, self.batch_size = rate, seconds, batch_size
        self.model, self.strategy, self.meter, self.world = model, strategy, meter, world
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        """What a naive step differentiates: the parameters trainable when the run began, the same whatever
        the method freezes later (a tuning method's backbone)."""
        self.naive: dict[int, float] = {}
        """The cost of a naive step by batch size, measured once per experience (a method may change the
        model between experiences)."""

    def start_experience(self, experience: Experience, index: int, declared: ExperiencePlan) -> None:
        """Ready for an experience; an error naming the fix when the method trains on other data than the
        experience brings (a memory, exemplars, earlier experiences): those are not a stream's batches."""
        if declared.trains and declared.train_size != len(experience.train):
            raise ConfigError(f"optim.stream_rate: strategy {type(self.strategy).__name__} trains on "
                              f"{declared.train_size} samples in experience {index}, not on the "
                              f"{len(experience.train)} its stream brings; a real-time stream needs a method that "
                              "trains on the arriving batches (unset optim.stream_rate for this one)")
        self.naive.clear()

    def busy(self, state: TrainState, flops: float, seconds: float) -> None:
        """The learner spent ``flops`` (over all ranks) or ``seconds`` outside the steps (an experience's
        hooks); the stream ran on."""
        state.stream_clock += seconds if self.seconds else flops

    def arrives(self, batch: Batch, state: TrainState) -> bool:
        """Predict ``batch`` (its online score, before any training on it), move the stream to the next
        batch, and whether the learner trains on this one (it starts now); a batch it lets pass is counted
        as skipped."""
        state.pause_clock()
        self._score(batch, state)
        arrival = state.stream_arrival
        state.stream_arrival = arrival + self._interval(batch)
        state.resume_clock()
        if state.stream_arrival <= state.stream_clock:  # the next batch is here by the time the learner is free
            state.experience_skipped += len(batch.y) * self.world.size
            return False
        state.stream_clock = max(state.stream_clock, arrival)
        return True

    def trained(self, state: TrainState, started: float) -> None:
        """The step begun at ``started`` (``time.perf_counter()``) kept the learner busy for its cost: the
        FLOPs the runner counted for it (``state.step_flops``), or its wall time."""
        state.stream_clock += time.perf_counter() - started if self.seconds else state.step_flops

    def _interval(self, batch: Batch) -> float:
        """The cost until the batch after ``batch`` arrives."""
        size = len(batch.y)
        if self.rate != NAIVE:
            return float(self.rate) * size / self.batch_size
        if size not in self.naive:
            self.naive[size] = self._naive_cost(batch)
        return self.naive[size]

    def _naive_cost(self, batch: Batch) -> float:
        """A naive step's cost on ``batch``: forward and backward of the objective's loss through
        :attr:`trainable`, in eval mode (the same FLOPs; no normalisation statistic or dropout draw moves)
        and without touching any gradient, so training is as without it."""
        model, lm = self.model, self.strategy.language_model
        frozen = [p for p in self.trainable if not p.requires_grad]

        def step() -> None:
            with eval_mode(model):
                x = batch.x
                loss = next_token_loss(logits_of(model(x[:, :-1])), x[:, 1:]) if lm else \
                    F.cross_entropy(logits_of(model(x)), batch.y)
                if self.trainable:  # none: the run trains tensors of the method's own, a naive step only a forward
                    torch.autograd.grad(loss, self.trainable, allow_unused=True)

        for p in frozen:  # differentiated as a naive step would, left frozen after
            p.requires_grad_(True)
        try:
            if self.seconds:
                return min(_timed(step, batch.y.device) for _ in range(NAIVE_TIMINGS))
            return self.meter.total(self.meter.measure(step)[1])[0]
        finally:
            for p in frozen:
                p.requires_grad_(False)

    @torch.no_grad()
    def _score(self, batch: Batch, state: TrainState) -> None:
        """Add the objective's score of ``batch`` (its inputs as they arrived, un-augmented) to the online
        counters: correct predictions, or a language model's summed next-token losses and tokens."""
        x = batch.stored
        with eval_mode(self.model):
            if self.strategy.language_model:
                total = next_token_loss(logits_of(self.model(x[:, :-1])), x[:, 1:], reduction="sum")
                count = x.numel() - len(x)
            else:
                total, count = (self.strategy.predict(self.model, x, batch.task) == batch.y).sum(), len(batch.y)
        state.online_total += float(total)
        state.online_count += count


def _timed(work: Callable[[], None], device: torch.device) -> float:
    """Wall seconds of ``work()``, the device's queue drained before the clock stops."""
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def realtime_stream(config: OptimConfig, batch_size: int, model: nn.Module, strategy: Strategy, meter: FlopMeter,
                    world: World, sharded: bool) -> RealTimeStream | None:
    """The run's real-time stream (None without ``optim.stream_rate``), its settings checked in one line each."""
    if config.stream_rate is None:
        if config.stream_cost != "flops":
            raise ConfigError(f"optim.stream_cost = {config.stream_cost!r} paces a real-time stream, but "
                              "optim.stream_rate is not set; set it (a cost per batch, or 'naive')")
        return None
    seconds = config.stream_cost == "seconds"
    if seconds and world.distributed:
        raise ConfigError("optim.stream_cost = 'seconds' in a data-parallel run: each rank measures its own time, "
                          "so the ranks would skip different batches; use optim.stream_cost = 'flops'")
    if config.stream_rate == NAIVE and sharded:
        raise ConfigError("optim.stream_rate = 'naive' differentiates a naive step outside FSDP's backward, which a "
                          "sharded model does not allow; give the stream's cost per batch as a number")
    return RealTimeStream(config.stream_rate, seconds, batch_size, model, strategy, meter, world)
