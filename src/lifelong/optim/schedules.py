"""Learning-rate schedules as pure functions of the position in the stream.

A schedule maps a :class:`Position` to a multiplier of the base learning rate. There is no hidden
``last_epoch``: a resumed run only needs the step counters to get the same learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple


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


@dataclass(frozen=True)
class Constant:
    """The base learning rate throughout."""

    def __call__(self, position: Position) -> float:
        return 1.0


@dataclass(frozen=True)
class Cosine:
    """Cosine decay from 1 to ``final`` over the horizon (Loshchilov & Hutter 2017, SGDR without restarts).

    ``horizon`` is ``experience`` (restart at each experience) or ``stream``.
    """

    final: float = 0.0
    horizon: str = "experience"

    def __call__(self, position: Position) -> float:
        if self.horizon == "stream":
            t, total = position.step, position.total_steps
        else:
            t, total = position.experience_step, position.experience_steps
        progress = min(t / max(total, 1), 1.0)
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))


SCHEDULES = {"constant": Constant, "cosine": Cosine}
