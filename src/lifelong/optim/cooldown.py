"""The linear cooldown at the end of each experience of the branch-off (``optim.branch_decay``; Hägele
et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations": cooldowns
branched off one constant-rate run, :mod:`lifelong.runner.branch`): the learning rate decays linearly
to 0 over ``fraction`` of an experience's steps (:func:`cooldown`).
"""

from __future__ import annotations


def cooldown_steps(fraction: float, steps: int) -> int:
    """Steps of a cooldown over ``fraction`` of ``steps`` steps: at least one."""
    return max(1, round(fraction * steps))


def cooldown(step: int, steps: int) -> float:
    """The multiplier of cooldown step ``step`` (0-based) of ``steps``: ``1 - (step + 1) / steps``, from
    ``1 - 1 / steps`` down to 0 at the last step, which therefore moves no weight of an SGD or Adam step."""
    return 1.0 - (step + 1) / steps
