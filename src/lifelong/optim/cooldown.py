"""The linear cooldown at the end of each experience, two ways: on a branch, or in the run itself.

Both decay the learning rate linearly to 0 over the last ``fraction`` of an experience's steps
(:func:`cooldown`). They differ in what the run continues from:

* **branch-off** (``optim.branch_decay``; Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training
  Beyond Fixed Training Durations": cooldowns branched off one constant-rate run): a copy of
  the model takes ``fraction`` times the experience's steps *more*, decaying, and is the model
  evaluated; the run continues from the undecayed weights (:mod:`lifelong.runner.branch`);
* **WSD-S** (``optim.wsd_s_decay``; Wen et al. 2024, "Understanding Warmup-Stable-Decay Learning Rates:
  A River Valley Loss Landscape Perspective": WSD-Simplified): the last steps of the
  experience's own run decay (:class:`WSDS`), the decayed weights are evaluated and the next experience
  continues from them at the full rate again. No step is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lifelong.optim.schedules import Position


def cooldown_steps(fraction: float, steps: int) -> int:
    """Steps of a cooldown over ``fraction`` of ``steps`` steps: at least one."""
    return max(1, round(fraction * steps))


def cooldown(step: int, steps: int) -> float:
    """The multiplier of cooldown step ``step`` (0-based) of ``steps``: ``1 - (step + 1) / steps``, from
    ``1 - 1 / steps`` down to 0 at the last step, which therefore moves no weight of an SGD or Adam step."""
    return 1.0 - (step + 1) / steps


@dataclass(frozen=True)
class WSDS:
    """WSD-S (Wen et al. 2024) on top of the run's ``schedule``: the multiplier is the schedule's, times
    :func:`cooldown` over the last :func:`cooldown_steps` of each experience's planned steps (which follow
    budgets that re-plan it), and 1 before them; the next experience starts again at the schedule's rate.

    E.g. ``fraction`` 0.25 of an experience of 8 steps with a constant schedule: 1, 1, 1, 1, 1, 1, 0.5, 0."""

    schedule: Any
    """The run's schedule (``optim.schedule``), a pure function ``Position -> multiplier``."""
    fraction: float

    def __call__(self, position: Position) -> float:
        steps = cooldown_steps(self.fraction, position.experience_steps)
        decayed = position.experience_step - (position.experience_steps - steps)
        multiplier = self.schedule(position)
        return multiplier * cooldown(decayed, steps) if decayed >= 0 else multiplier
