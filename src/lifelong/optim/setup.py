"""From an :class:`OptimConfig` to the pieces the runner uses, each validated once, before training.

The runner owns the optimizer step, so every strategy gets these for free: the learning rate scaled to
the batch size, the schedule (with WSD-S's cooldown at each experience's end, :mod:`lifelong.optim.cooldown`),
the epoch sampler, the adaptive batch size, regime adaptation (``keep_updates``) and mixed precision.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lifelong.config import PROBE, Component, OptimConfig, build
from lifelong.errors import ConfigError
from lifelong.optim.agvm import AGVM
from lifelong.optim.batch_size import BATCH_SIZE_TESTS, AdaptiveBatchSize
from lifelong.optim.cooldown import WSDS
from lifelong.optim.registry import check_optimizer_name
from lifelong.optim.samplers import HardBatchSampler, RandomSampler, RS2Sampler, build_sampler
from lifelong.optim.scaling import resolve_rule, scale_lr
from lifelong.optim.schedules import build_schedule

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}

Limit = tuple[float, Callable[[int], float], float]
"""``(allowance, cost, epoch cost)``: steps may run while the sum of ``cost(batch size)`` over them, plus
``epoch cost`` for each epoch they begin, stays within ``allowance``."""


def epoch_end(length: int, epochs: float, epoch: int) -> int:
    """Samples of the order to use in epoch ``epoch``: all of them, or the planned fraction of the last,
    partial epoch when ``epochs`` is not whole (at least one sample)."""
    if epoch + 1 <= epochs:
        return length
    return max(1, round((epochs - epoch) * length))


@dataclass(frozen=True)
class OptimSetup:
    """The resolved optimization settings of a run."""

    config: OptimConfig
    schedule: Any
    """A pure function ``Position -> multiplier`` (see :mod:`lifelong.optim.schedules`), with WSD-S's
    cooldown (:class:`~lifelong.optim.cooldown.WSDS`) when ``optim.wsd_s_decay`` is set."""
    rule: str
    """The batch-size scaling rule, ``auto`` resolved."""
    batch_size: int
    """The batch size to train at: ``optim.batch_size``, or the probed one (:func:`resolve`)."""
    base_batch_size: int
    sampler: RandomSampler | RS2Sampler | HardBatchSampler
    batch_size_test: AdaptiveBatchSize | None
    dtype: torch.dtype | None
    """Autocast dtype, or None for full precision."""
    agvm: AGVM | None = None
    """AGVM's settings (``optim.agvm``), or None: every module at the group's rate."""

    @property
    def count_flops(self) -> bool:
        """Whether the runner counts FLOPs (asked for, or needed by a FLOP budget or a real-time stream paced
        by FLOPs)."""
        config = self.config
        return config.count_flops or config.max_flops is not None or \
            (config.stream_rate is not None and config.stream_cost == "flops")

    def lr_for(self, batch_size: int) -> float:
        """The learning rate at ``batch_size``: ``optim.lr`` scaled from ``base_batch_size`` by the rule."""
        return scale_lr(self.config.lr, batch_size, self.base_batch_size, self.rule)

    def largest_lr(self, ranks: int = 1) -> float | None:
        """The largest base learning rate the run can train at on ``ranks`` data-parallel ranks (schedules
        multiply it by at most 1): at the batch size, or at an adaptive batch size's ``max_batch_size``, times
        the largest factor AGVM may give a module (``sqrt(max_ratio)``). None for a probed batch size scaled
        from a set ``optim.base_batch_size``, unknown before the probe (without one, the probed size is the
        base and the rate is ``optim.lr``'s, as here)."""
        if self.config.batch_size == PROBE and self.config.base_batch_size is not None:
            return None
        largest = self.batch_size_test.max_batch_size if self.batch_size_test is not None else self.batch_size
        return self.lr_for(largest * ranks) * (math.sqrt(self.agvm.max_ratio) if self.agvm is not None else 1.0)

    def epochs_for(self, batch_size: int) -> float:
        """Planned epochs at ``batch_size``: ``optim.epochs``, times ``batch_size / base_batch_size`` with
        ``keep_updates`` so that the number of updates matches a run at the base batch size."""
        if self.config.keep_updates:
            return self.config.epochs * batch_size / self.base_batch_size
        return float(self.config.epochs)

    def epoch_length(self, n: int, batch_size: int, shards: int = 1) -> int:
        """Samples one of ``shards`` data-parallel ranks draws per epoch from a set of ``n``: its share of
        the sampler's epoch (all ``n``, or RS2's and hard-batch's fraction), padded as the shards are."""
        return -(-self.sampler.epoch_samples(n, batch_size) // shards)

    def draws(self, length: int, batch_size: int, epochs: float, epoch: int = 0, offset: int = 0,
              limits: Sequence[Limit] = (), current: int | None = None) -> tuple[int, int]:
        """``(steps, samples)`` left in an experience whose epochs draw ``length`` samples (see
        :meth:`epoch_length`), from sample ``offset`` of epoch ``epoch`` on, at ``batch_size``, until
        ``epochs`` planned epochs are done or the next step would overrun one of ``limits``. An epoch is
        drawn in batches of ``batch_size`` and a smaller last one. A :data:`Limit` ``(allowance, cost,
        epoch cost)`` lets steps run while the sum of ``cost(size)`` over them, plus ``epoch cost`` at the
        start of each epoch begun, stays within ``allowance`` (a step budget: cost 1; a sample budget:
        cost ``size``; a FLOP budget with a sampler that scores each epoch's batches: that scoring as the
        epoch cost); an epoch is begun only if one of its steps fits too. ``current``: the length of epoch
        ``epoch``'s order when it was drawn at another batch size (the adaptive batch size changed it)."""
        left = [allowance for allowance, _, _ in limits]
        steps = samples = 0
        while epoch < epochs:
            drawn = length if current is None else current
            current = None
            full, last = divmod(max(epoch_end(drawn, epochs, epoch) - offset, 0), batch_size)
            if offset == 0 and full + (last > 0):
                first = batch_size if full else last
                if any(room < charge + cost(first) for room, (_, cost, charge) in zip(left, limits, strict=True)):
                    return steps, samples
                left = [room - charge for room, (_, _, charge) in zip(left, limits, strict=True)]
            for count, size in ((full, batch_size), (1, last)):
                if not count or not size:
                    continue
                costs = [cost(size) for _, cost, _ in limits]
                take = min([count, *(math.floor(room / c) if c > 0 else count for room, c in zip(left, costs))])
                take = max(take, 0)
                left = [room - take * c for room, c in zip(left, costs)]
                steps, samples = steps + take, samples + take * size
                if take < count:
                    return steps, samples
            epoch, offset = epoch + 1, 0
        return steps, samples

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any] | None:
        """The context the strategy's forward pass and loss run in: bf16 autocast, or None (full precision,
        no context to enter)."""
        if self.dtype is None:
            return None
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve(optim: OptimConfig, probed: int | None = None) -> OptimSetup:
    """Validate every name and parameter set of ``optim``; mistakes raise :class:`ConfigError`.

    With ``optim.batch_size = "probe"`` the batch size is ``probed``, the probe's recommendation, which
    the runner measures on the model before training; until then (``probed`` None) the setup checks the
    settings alone and its batch size (and a ``base_batch_size`` left unset) is 1, not one to train at."""
    batch_size = (probed or 1) if optim.batch_size == PROBE else optim.batch_size
    check_optimizer_name(optim.name)
    if optim.precision not in PRECISIONS:
        raise ConfigError(f"optim.precision must be one of {sorted(PRECISIONS)}, got {optim.precision!r}")
    test = None
    if optim.batch_size_test != "none":
        if optim.batch_size_test not in BATCH_SIZE_TESTS:
            raise ConfigError(f"optim.batch_size_test must be one of {['none', *BATCH_SIZE_TESTS]}, "
                              f"got {optim.batch_size_test!r}")
        test = build("optim.batch_size_test_params", BATCH_SIZE_TESTS,
                     Component(name=optim.batch_size_test, **optim.batch_size_test_params))
    elif optim.batch_size_test_params:
        raise ConfigError(f"optim.batch_size_test_params is set ({optim.batch_size_test_params}) but "
                          "optim.batch_size_test is 'none'; set optim.batch_size_test='norm'")
    if optim.branch_decay is not None and optim.wsd_s_decay is not None:
        raise ConfigError("optim.branch_decay (a decayed copy, the run continues undecayed) and optim.wsd_s_decay "
                          "(the run itself decays) are two cooldowns of each experience; set one of them")
    agvm = None
    if optim.agvm:
        agvm = build("optim.agvm_params", {"agvm": AGVM}, Component(name="agvm", **optim.agvm_params))
    elif optim.agvm_params:
        raise ConfigError(f"optim.agvm_params is set ({optim.agvm_params}) but optim.agvm is false; set "
                          "optim.agvm=true")
    schedule = build_schedule(optim.schedule, optim.schedule_params)
    if optim.wsd_s_decay is not None:
        schedule = WSDS(schedule, optim.wsd_s_decay)
    return OptimSetup(config=optim, schedule=schedule,
                      rule=resolve_rule(optim.lr_scaling, optim.name), batch_size=batch_size,
                      base_batch_size=optim.base_batch_size or batch_size,
                      sampler=build_sampler(optim.sampler, optim.sampler_fraction), batch_size_test=test,
                      dtype=PRECISIONS[optim.precision], agvm=agvm)

