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
    samples: int = 0
    """Stream samples trained on so far in the whole stream, over all data-parallel ranks (the runner's
    ``TrainState.samples``: replayed samples are not counted, nor batches a real-time stream let pass)."""


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


def linear(progress: float, start: float, end: float) -> float:
    """A straight line from ``start`` (progress 0) to ``end`` (progress 1)."""
    return start + (end - start) * progress


def exponential(progress: float, start: float, end: float) -> float:
    """A geometric decay from ``start`` (progress 0) to ``end`` > 0 (progress 1): the same factor per step."""
    return float(start * (end / start) ** progress)


DECAYS = {"linear": linear, "exponential": exponential}
"""The shapes of a final decay, by name (``decay`` of :class:`Power`)."""


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
        return linear(progress, 1.0, self.final)


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
        return 1.0 if progress is None else linear(progress, 1.0, self.final)


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
        return self.constant if progress is None else exponential(progress, self.constant, self.final)


@dataclass(frozen=True)
class Power:
    """The Power scheduler (Shen et al. 2024, "Power Scheduler: A Batch Size and Token Number Agnostic
    Learning Rate Scheduler"): WSD whose stable phase follows the power law the paper fits to the best
    rate of WSD runs against the tokens ``n`` they train on, ``eta(n) = min(eta_max, beta a n^b)`` (``beta``
    the batch size; ``a = 4.6``, ``b = -0.51`` on language-model tokens with muP), so that one setting
    serves every training length: the rate holds at ``eta_max`` while few tokens are seen, then falls as
    ``n^b``, with no total length to plan. († marks what is from general knowledge of the paper, not checked
    against its text: the factor ``beta`` and the exponential decay of its runs.)

    Here the multiplier of the base rate (``eta_max``: ``optim.lr``, scaled to the batch size by
    ``optim.lr_scaling``) is the product of three factors:

    * a linear warmup over the first ``warmup_steps`` of the *stream*, once (never again at an
      experience's start);
    * the power law ``min(1, (n / knee_samples)^b)``, ``n`` the samples trained on so far in the whole
      stream (:attr:`Position.samples`), never reset at an experience boundary: the paper's law divided by
      ``eta_max``, whose cap meets ``beta a n^b`` at the knee ``n_0 = (eta_max / (beta a))^(1/b)``;
    * WSD's decay over the last ``decay_fraction`` of the ``horizon`` (each experience, or the stream) to
      ``final`` times the rate, ``linear`` (WSD's here) or ``exponential`` (the paper's runs, †). Only this
      phase reads a planned length.

    What "tokens" are for a classification stream: the samples it delivers, as the runner counts them (each
    rank's batches summed; replayed samples excluded, so that a position in the stream has one rate
    whatever the strategy replays). A language model's samples are windows of ``L + 1`` tokens; counting
    windows rather than tokens only divides the knee by ``L``, as ``(n / knee)^b`` is a ratio.

    Departures: the paper's ``a`` is fitted on a muP language model's tokens at its ``eta_max`` and does not
    carry over to another model, data or base rate, so the knee is set directly (in samples); the batch
    size's factor ``beta`` is left to ``optim.lr_scaling`` (``linear`` scales the power phase with the
    batch as the paper does, but its cap too, which the paper keeps at ``eta_max``); the warmup multiplies
    the power law rather than rising to its value at the warmup's end (the same when the warmup ends
    before the knee); and the decay multiplies the power law as it goes on falling rather than its value
    frozen where the decay starts (the position holds the samples seen now, not then): over a decay of 10%
    of the stream at ``b = -0.51`` the two differ by at most ``1 - 0.9^0.51``, 5%."""

    b: float = -0.51
    knee_samples: int = 10_000
    warmup_steps: int = 0
    decay_fraction: float = 0.1
    final: float = 0.0
    decay: str = "linear"
    horizon: str = "experience"

    def __post_init__(self) -> None:
        _check_common(self.horizon, self.warmup_steps)
        _check(self.b < 0, "b", self.b, "< 0 (0 holds the rate, which is wsd)")
        _check(self.knee_samples >= 1, "knee_samples", self.knee_samples, ">= 1")
        _check_fraction("decay_fraction", self.decay_fraction)
        _check(self.decay in DECAYS, "decay", self.decay, f"one of {sorted(DECAYS)}")
        if self.decay == "exponential":
            _check(0.0 < self.final <= 1.0, "final", self.final, "in (0, 1] for an exponential decay, which never "
                   "reaches 0")
        _check_fraction("final", self.final)

    def power(self, samples: int) -> float:
        """``min(1, (samples / knee_samples)^b)``: 1 up to the knee, then falling as ``samples^b``."""
        return 1.0 if samples <= self.knee_samples else (samples / self.knee_samples) ** self.b

    def __call__(self, position: Position) -> float:
        multiplier = warmup(position.step, self.warmup_steps) * self.power(position.samples)
        t, total = elapsed(position, self.horizon)
        progress = tail_progress(t, total, self.decay_fraction)
        return multiplier if progress is None else multiplier * DECAYS[self.decay](progress, 1.0, self.final)


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
                              "rewarm": Rewarm, "power": Power}


def build_schedule(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """The schedule ``name`` with ``params`` (``optim.schedule_params``), each field validated and
    every mistake a :class:`ConfigError` naming the field."""
    from lifelong.config import Component, build

    if name not in SCHEDULES:
        raise ConfigError(f"optim.schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
    return build("optim.schedule_params", SCHEDULES, Component(name=name, **dict(params or {})))
