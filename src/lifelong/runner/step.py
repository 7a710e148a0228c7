"""The runner's optimizer step: the one function by which both an experience's steps and a branch-off's
decayed steps (:mod:`lifelong.runner.branch`) train."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from lifelong.data.streams import Batch
from lifelong.runner.gradsync import Backward
from lifelong.strategies.base import Strategy
from lifelong.world import World


class OptimizerStep:
    """``step(batch, lr)``: the strategy's loss of ``batch`` -> backward (gradients averaged over
    data-parallel ranks) -> the strategy's gradient hook -> clipping -> learning rate -> optimizer step.

    ``lr`` is the base rate at the global batch size times the schedule's multiplier; each parameter
    group gets ``lr`` times its ``lr_scale`` (set when the runner prepared the optimizer), written only
    when ``lr`` changes. ``autocast`` (None: full precision) is the context the loss is computed in."""

    __slots__ = ("applied_lr", "autocast", "backward", "buffers", "grad_clip", "model", "optimizer", "params",
                 "strategy", "world")

    def __init__(self, model: nn.Module, strategy: Strategy, optimizer: torch.optim.Optimizer, backward: Backward,
                 autocast: contextlib.AbstractContextManager[Any] | None, grad_clip: float | None,
                 world: World) -> None:
        self.model, self.strategy, self.optimizer, self.backward = model, strategy, optimizer, backward
        self.autocast, self.grad_clip, self.world = autocast, grad_clip, world
        self.params: list[nn.Parameter] = [p for group in optimizer.param_groups for p in group["params"]]
        self.buffers = [b for b in model.buffers() if b.is_floating_point()] if world.distributed else []
        """Normalisation statistics, kept equal over data-parallel ranks after every step, as
        DistributedDataParallel's ``broadcast_buffers`` does (none in one process)."""
        self.applied_lr: float | None = None
        """The base rate the groups hold (None: unknown, written at the next step)."""

    def __call__(self, batch: Batch, lr: float) -> torch.Tensor:
        """Train on ``batch`` at base rate ``lr``; the loss (a scalar tensor, this rank's)."""
        model, strategy, optimizer = self.model, self.strategy, self.optimizer
        if self.autocast is None:
            loss = strategy.observe(model, batch)
        else:
            with self.autocast:
                loss = strategy.observe(model, batch)
        optimizer.zero_grad(set_to_none=True)  # after observe: a strategy may differentiate inside it (A-GEM)
        self.backward(loss, self.params)
        strategy.after_backward(model)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if lr != self.applied_lr:  # the groups are read here: loading a state dict replaces them
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            self.applied_lr = lr
        optimizer.step()
        if self.buffers:
            self.world.broadcast(self.buffers)
        return loss
