"""Learning-rate schedules as pure functions of the position in the stream.

A schedule maps a :class:`Position` to a multiplier of the base learning rate. There is no hidden
``last_epoch``: a resumed run only needs the step counters to get the same learning rate, and no
schedule is "reset" between experiences; a schedule whose ``horizon`` is ``experience`` restarts
because it reads the step *within* the experience.

Every schedule is a frozen dataclass whose fields are its settings (validated in
``__post_init__``); :func:`build_schedule` builds one by name from the config's
``optim.schedule`` and ``optim.schedule_params``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from lifelong.errors import ConfigError

HORIZONS = ("experience", "stream")


class Position(NamedTuple):
    """Where training stands: the global step, the experience, and the step within it."""

    step: int
    """Optimizer steps taken so far in the whole stream."""
    experience: int
    """Index of the current experience."""
    experience_step: int
    """Optimizer steps taken so far in the current experience."""
    experience_steps: int
    """Planned optimizer steps of the current experience."""
    total_steps: int
    """Planned optimizer steps of the whole stream."""


def elapsed(position: Position, horizon: str) -> tuple[int, int]:
    """``(t, total)``: steps taken and planned over the horizon (``experience`` or ``stream``)."""
    if horizon == "stream":
        return position.step, max(position.total_steps, 1)
    return position.experience_step, max(position.experience_steps, 1)


def warmup(t: int, warmup_steps: int) -> float:
    """Linear warmup ``(t + 1) / warmup_steps`` for ``t < warmup_steps``, then 1 (Goyal et al. 2017).

    Counting from ``t + 1`` makes the first step's rate non-zero: a zero first step wastes compute.
    """
    return (t + 1) / warmup_steps if t < warmup_steps else 1.0


def cosine(progress: float, start: float, end: float) -> float:
    """Half a cosine from ``start`` (progress 0) to ``end`` (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _check(condition: bool, field: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"optim.schedule_params.{field} must be {allowed}, got {value!r}")


def _check_common(horizon: str, warmup_steps: int) -> None:
    _check(horizon in HORIZONS, "horizon", horizon, f"one of {list(HORIZONS)}")
    _check(warmup_steps >= 0, "warmup_steps", warmup_steps, ">= 0")


def _check_fraction(field: str, value: float) -> None:
    _check(0.0 <= value <= 1.0, field, value, "in [0, 1]")


@dataclass(frozen=True)
class Constant:
    """The base learning rate throughout."""

    def __call__(self, position: Position) -> float:
        return 1.0


@dataclass(frozen=True)
class Warmup:
    """Linear warmup over ``warmup_steps``, then constant (Goyal et al. 2017, "Accurate, large minibatch
    SGD"): the large-batch recipe that makes linear LR scaling stable. ``horizon="experience"`` warms up
    again at each experience."""

    warmup_steps: int = 100
    horizon: str = "experience"

    def __post_init__(self) -> None:
        _check_common(self.horizon, self.warmup_steps)

    def __call__(self, position: Position) -> float:
        t, _ = elapsed(position, self.horizon)
        return warmup(t, self.warmup_steps)


def decay_progress(t: int, total: int, warmup_steps: int) -> float:
    """How far a decay that starts after ``warmup_steps`` has gone at step ``t`` of ``total``, in [0, 1]."""
    return min(max((t - warmup_steps) / max(total - warmup_steps, 1), 0.0), 1.0)


def tail_progress(t: int, total: int, fraction: float) -> float | None:
    """How far an anneal over the last ``fraction`` of ``total`` steps has gone at step ``t`` (None
    before it starts, or when ``fraction`` is 0)."""
    steps = fraction * total
    begin = total - steps
    if t < begin or steps == 0:
        return None
    return min((t - begin) / steps, 1.0)


@dataclass(frozen=True)
class _WarmupDecay:
    """Abstract: optional linear warmup, then a decay from 1 to ``final`` over the rest of the horizon,
    whose shape :meth:`shape` gives as a function of the decay's progress in [0, 1]."""

    final: float = 0.0
    warmup_steps: int = 0
    horizon: str = "experience"

    def __post_init__(self) -> None:
        _check_common(self.horizon, self.warmup_steps)
        _check_fraction("final", self.final)

    def shape(self, progress: float) -> float:
        raise NotImplementedError

    def __call__(self, position: Position) -> float:
        t, total = elapsed(position, self.horizon)
        if t < self.warmup_steps:
            return warmup(t, self.warmup_steps)
        return self.shape(decay_progress(t, total, self.warmup_steps))


@dataclass(frozen=True)
class Cosine(_WarmupDecay):
    """Optional linear warmup, then cosine decay from 1 to ``final`` over the rest of the horizon
    (Loshchilov & Hutter 2017, SGDR without restarts)."""

    def shape(self, progress: float) -> float:
        return cosine(progress, 1.0, self.final)


@dataclass(frozen=True)
class LinearDecay(_WarmupDecay):
    """Optional linear warmup, then linear decay from 1 to ``final``: eta_t proportional to 1 - t/T
    ("When, Why and How Much? Adaptive learning rate scheduling by refinement", Defazio et al. 2023,
    finds it at least as good as cosine)."""

    def shape(self, progress: float) -> float:
        return 1.0 + (self.final - 1.0) * progress


@dataclass(frozen=True)
class Step:
    """Multiply by ``gamma`` at each milestone, given as fractions of the horizon (He et al. 2016's
    divide-by-10 at 50% and 75% of training)."""

    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    horizon: str = "experience"

    def __post_init__(self) -> None:
        _check_common(self.horizon, 0)
        _check(all(0.0 < m < 1.0 for m in self.milestones), "milestones", list(self.milestones),
               "fractions of the horizon in (0, 1)")
        _check(0.0 < self.gamma <= 1.0, "gamma", self.gamma, "in (0, 1]")

    def __call__(self, position: Position) -> float:
        t, total = elapsed(position, self.horizon)
        passed = sum(1 for m in self.milestones if t >= m * total)
        return self.gamma ** passed


@dataclass(frozen=True)
class WSD:
    """Warmup-stable-decay: linear warmup, constant, then linear decay to ``final`` over the last
    ``decay_fraction`` of the horizon (MiniCPM, Hu et al. 2024; "Understanding Warmup-Stable-Decay
    learning rates", Wen et al. 2024). The stable phase needs no horizon, so one can branch a decay off
    at any budget."""

    warmup_steps: int = 0
    decay_fraction: float = 0.1
    final: float = 0.0
    horizon: str = "experience"

    def __post_init__(self) -> None:
        _check_common(self.horizon, self.warmup_steps)
        _check_fraction("decay_fraction", self.decay_fraction)
        _check_fraction("final", self.final)

    def __call__(self, position: Position) -> float:
        t, total = elapsed(position, self.horizon)
        if t < self.warmup_steps:
            return warmup(t, self.warmup_steps)
        progress = tail_progress(t, total, self.decay_fraction)
        return 1.0 if progress is None else 1.0 + (self.final - 1.0) * progress


@dataclass(frozen=True)
class Infinite:
    """The infinite schedule ("Beyond Cosine Decay: On the effectiveness of Infinite Learning Rate
    Schedule for Continual Pre-training", Singh et al. 2025, after Ibrahim et al. 2024, "Simple and
    Scalable Strategies to Continually Pre-train Large Language Models"): linear warmup over the first
    ``warmup_steps`` of the stream, cosine cooldown from 1 to ``constant`` over ``cooldown_steps``, then
    ``constant`` across every experience boundary, and an exponential anneal from ``constant`` to
    ``final`` over the last ``anneal_fraction`` of the *whole stream* (``Position.total_steps``).

    The paper's point is that the constant phase needs no horizon and is never re-warmed: an anneal
    inside each experience would drop the rate to ``final`` and jump back to ``constant`` at the next
    one, the very re-warming it avoids. A model annealed at the end of each experience is a *copy*
    decayed off the constant run and then thrown away, which is ``optim.branch_decay`` (with
    ``anneal_fraction=0`` the main run stays at ``constant`` to its end)."""

    warmup_steps: int = 0
    cooldown_steps: int = 100
    constant: float = 0.25
    anneal_fraction: float = 0.1
    final: float = 0.01

    def __post_init__(self) -> None:
        _check_common("stream", self.warmup_steps)
        _check(self.cooldown_steps >= 0, "cooldown_steps", self.cooldown_steps, ">= 0")
        _check(0.0 < self.constant <= 1.0, "constant", self.constant, "in (0, 1]")
        _check_fraction("anneal_fraction", self.anneal_fraction)
        _check(0.0 < self.final <= self.constant, "final", self.final, f"in (0, constant={self.constant}]")

    def __call__(self, position: Position) -> float:
        t, total = elapsed(position, "stream")
        if t < self.warmup_steps:
            return warmup(t, self.warmup_steps)
        if t < self.warmup_steps + self.cooldown_steps:
            return cosine((t - self.warmup_steps) / self.cooldown_steps, 1.0, self.constant)
        progress = tail_progress(t, total, self.anneal_fraction)
        return self.constant if progress is None else self.constant * (self.final / self.constant) ** progress


@dataclass(frozen=True)
class Rewarm:
    """Re-warming at each experience ("Continual Pre-Training of Large Language Models: How to
    (re)warm your model?", Gupta et al. 2023): linear warmup from 0 to ``peak`` over ``warmup_steps`` of
    every experience, then cosine decay to ``final`` by its end. ``peak`` trades forgetting of earlier
    experiences (higher peak) against learning the new one."""

    warmup_steps: int = 10
    peak: float = 1.0
    final: float = 0.0

    def __post_init__(self) -> None:
        _check_common("experience", self.warmup_steps)
        _check(0.0 < self.peak <= 1.0, "peak", self.peak, "in (0, 1]")
        _check(0.0 <= self.final <= self.peak, "final", self.final, f"in [0, peak={self.peak}]")

    def __call__(self, position: Position) -> float:
        t, total = elapsed(position, "experience")
        if t < self.warmup_steps:
            return self.peak * warmup(t, self.warmup_steps)
        return cosine(decay_progress(t, total, self.warmup_steps), self.peak, self.final)


SCHEDULES: dict[str, type] = {"constant": Constant, "warmup": Warmup, "cosine": Cosine,
                              "linear_decay": LinearDecay, "step": Step, "wsd": WSD, "infinite": Infinite,
                              "rewarm": Rewarm}


def build_schedule(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """The schedule ``name`` with ``params`` (``optim.schedule_params``), each field validated and
    every mistake a :class:`ConfigError` naming the field."""
    from lifelong.config import Component, build

    if name not in SCHEDULES:
        raise ConfigError(f"optim.schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
    return build("optim.schedule_params", SCHEDULES, Component(name=name, **dict(params or {})))
