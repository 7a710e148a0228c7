"""The cooldown at each experience's end (:mod:`lifelong.optim.cooldown`): its multipliers by hand, and
WSD-S (Wen et al. 2024) as the last steps of the run's own schedule."""

import pytest

from lifelong.config import OptimConfig
from lifelong.errors import ConfigError
from lifelong.optim.cooldown import WSDS, cooldown, cooldown_steps
from lifelong.optim.schedules import Constant, Position, Warmup
from lifelong.optim.setup import resolve


def experience(schedule, steps: int, index: int = 0, before: int = 0) -> list[float]:
    """The schedule's multiplier at every step of an experience of ``steps`` steps."""
    return [schedule(Position(before + t, index, t, steps, 100)) for t in range(steps)]


def test_cooldown_falls_linearly_to_zero_at_its_last_step() -> None:
    assert [cooldown(step, 4) for step in range(4)] == [0.75, 0.5, 0.25, 0.0]
    assert cooldown_steps(0.5, 9) == 4 and cooldown_steps(0.1, 3) == 1  # round(4.5) = 4; at least one step


def test_wsd_s_decays_the_last_steps_of_every_experience_and_starts_the_next_at_the_full_rate() -> None:
    """fraction 0.25 of 8 steps: 2 decayed steps, 1 - 1/2 then 1 - 2/2; the next experience (6 steps:
    round(1.5) = 2 decayed) starts at 1 again."""
    schedule = WSDS(Constant(), 0.25)
    assert experience(schedule, 8) == [1, 1, 1, 1, 1, 1, 0.5, 0]
    assert experience(schedule, 6, index=1, before=8) == [1, 1, 1, 1, 0.5, 0]
    assert experience(WSDS(Constant(), 0.1), 3) == [1, 1, 0]  # at least one decayed step


def test_wsd_s_multiplies_the_runs_schedule() -> None:
    """Over a warmup of 4 steps (0.25, 0.5, 0.75, 1, ...): the last 2 of 6 steps are 1 * 0.5 and 1 * 0."""
    assert experience(WSDS(Warmup(warmup_steps=4), 1 / 3), 6) == [0.25, 0.5, 0.75, 1.0, 0.5, 0.0]


def test_the_setup_puts_wsd_s_on_the_schedule_and_refuses_it_beside_a_branch_off() -> None:
    schedule = resolve(OptimConfig(schedule="warmup", schedule_params={"warmup_steps": 2}, wsd_s_decay=0.5)).schedule
    assert schedule == WSDS(Warmup(warmup_steps=2), 0.5)
    with pytest.raises(ConfigError, match="optim.branch_decay .* optim.wsd_s_decay .* set one of them"):
        resolve(OptimConfig(branch_decay=0.5, wsd_s_decay=0.5))
