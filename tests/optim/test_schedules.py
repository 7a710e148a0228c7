import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifelong.errors import ConfigError
from lifelong.optim.schedules import (
    SCHEDULES,
    WSD,
    Cosine,
    Infinite,
    LinearDecay,
    Position,
    Rewarm,
    Step,
    Warmup,
    build_schedule,
)


def at(t: int, steps: int = 10, experience: int = 0, step: int | None = None, total: int = 100) -> Position:
    """Position at step ``t`` of an experience of ``steps`` steps."""
    return Position(t if step is None else step, experience, t, steps, total)


def test_warmup_is_linear_then_constant() -> None:
    schedule = Warmup(warmup_steps=4)
    assert [schedule(at(t)) for t in (0, 1, 3, 4, 9)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_cosine_with_warmup_restarts_at_each_experience() -> None:
    schedule = Cosine(final=0.0, warmup_steps=2)
    assert schedule(at(0)) == 0.5 and schedule(at(1)) == 1.0  # end of warmup
    assert schedule(at(2)) == 1.0
    assert schedule(at(6)) == pytest.approx(0.5)  # (6 - 2) / (10 - 2): half way down
    assert schedule(at(10)) == pytest.approx(0.0)
    assert schedule(at(0, experience=1, step=10)) == 0.5  # re-warms in the next experience


def test_cosine_over_the_stream_ignores_experience_boundaries() -> None:
    schedule = Cosine(final=0.2, warmup_steps=2, horizon="stream")
    assert schedule(Position(12, 1, 0, 10, 22)) == pytest.approx(0.6)  # (12-2)/20 = 0.5: 0.2 + 0.8 * 0.5
    assert schedule(Position(22, 2, 10, 10, 22)) == pytest.approx(0.2)


def test_linear_decay_and_step() -> None:
    decay = LinearDecay(final=0.1)
    assert [decay(at(t)) for t in (0, 5, 10)] == pytest.approx([1.0, 0.55, 0.1])
    step = Step(milestones=(0.5, 0.75), gamma=0.1)
    assert [step(at(t, steps=8)) for t in (3, 4, 5, 6, 7)] == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01])


def test_wsd_warms_up_holds_then_decays_over_the_last_fraction() -> None:
    schedule = WSD(warmup_steps=2, decay_fraction=0.25, final=0.0)
    values = [schedule(at(t, steps=20)) for t in (0, 1, 2, 10, 15, 18, 20)]
    assert values == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 0.4, 0.0])


def test_infinite_cools_down_once_holds_the_constant_and_anneals_only_at_the_end_of_the_stream() -> None:
    schedule = Infinite(warmup_steps=2, cooldown_steps=4, constant=0.25, anneal_fraction=0.25, final=0.01)
    values = simulate(schedule, (8, 8))  # 16 steps: the anneal covers the last 0.25 * 16 = 4 (steps 12-15)
    assert values[:2] == [0.5, 1.0]  # warmup
    assert values[2] == 1.0 and values[4] == pytest.approx(0.625)  # cosine cooldown from 1 to 0.25
    assert values[6:13] == [0.25] * 7  # constant across the boundary at step 8: no anneal, no re-warming
    assert values[13:] == pytest.approx([0.25 * 0.04 ** 0.25, 0.25 * 0.04 ** 0.5, 0.25 * 0.04 ** 0.75])


def test_infinite_never_rewarms_at_an_experience_boundary() -> None:
    """Issue 25's case: warmup 20, cooldown 100, constant 0.25, anneal 0.1 and 146 steps in each of two
    experiences annealed to 0.0125 at step 145 and jumped back to 0.25 at step 146. The anneal now covers
    the stream's last 0.1 * 292 = 29.2 steps, from step 262.8 on."""
    schedule = Infinite(warmup_steps=20, cooldown_steps=100, constant=0.25, anneal_fraction=0.1, final=0.01)
    values = simulate(schedule, (146, 146))
    assert values[145] == 0.25 and values[146] == 0.25
    assert values[120:263] == [0.25] * 143
    assert values[263] == pytest.approx(0.25 * 0.04 ** (0.2 / 29.2))
    assert values[291] == pytest.approx(0.25 * 0.04 ** (28.2 / 29.2))
    assert all(later <= earlier for earlier, later in zip(values[20:], values[21:]))  # never rises after warmup
    held = Infinite(warmup_steps=20, cooldown_steps=100, constant=0.25, anneal_fraction=0.0)
    assert simulate(held, (146, 146))[120:] == [0.25] * 172  # no anneal at all: a decayed copy is branch_decay


def test_rewarm_warms_up_to_the_peak_at_every_experience() -> None:
    schedule = Rewarm(warmup_steps=2, peak=0.5, final=0.0)
    assert [schedule(at(t)) for t in (0, 1, 2, 6, 10)] == pytest.approx([0.25, 0.5, 0.5, 0.25, 0.0])
    assert schedule(at(0, experience=3, step=30)) == 0.25


def simulate(schedule, experience_steps: tuple[int, ...]) -> list[float]:
    values, step, total = [], 0, sum(experience_steps)
    for experience, steps in enumerate(experience_steps):
        for t in range(steps):
            values.append(schedule(Position(step, experience, t, steps, total)))
            step += 1
    return values


@pytest.mark.parametrize("name, params", [("wsd", {"warmup_steps": 3, "decay_fraction": 0.3}),
                                          ("infinite", {"warmup_steps": 2, "cooldown_steps": 5}),
                                          ("rewarm", {"warmup_steps": 2}),
                                          ("cosine", {"warmup_steps": 2, "horizon": "stream"})])
def test_a_resumed_run_gets_the_same_rate_at_any_step(name, params) -> None:
    """Purity: a schedule rebuilt after a resume gives, from the counters alone, the rate the
    uninterrupted run had at that step."""
    lengths = (7, 5, 9)
    uninterrupted = simulate(build_schedule(name, params), lengths)
    resumed = build_schedule(name, params)
    for step in (0, 4, 7, 11, 12, 20):
        experience = 0 if step < 7 else 1 if step < 12 else 2
        within = step - (0, 7, 12)[experience]
        assert resumed(Position(step, experience, within, lengths[experience], 21)) == uninterrupted[step]
    with pytest.raises(dataclasses.FrozenInstanceError):
        resumed.warmup_steps = 0


@given(name=st.sampled_from(sorted(SCHEDULES)), step=st.integers(0, 500), within=st.integers(0, 100),
       steps=st.integers(1, 100))
def test_every_schedule_stays_in_zero_one(name, step, within, steps) -> None:
    value = build_schedule(name)(Position(step + within, 1, within, steps, step + steps))
    assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("name, params, message", [
    ("wsd", {"decay_fraction": 2}, "optim.schedule_params.decay_fraction must be in \\[0, 1\\], got 2"),
    ("wsd", {"decay": 0.1}, "optim.schedule_params.decay: unknown field"),
    ("cosine", {"horizon": "epoch"}, "optim.schedule_params.horizon must be one of"),
    ("step", {"milestones": [1.5]}, "optim.schedule_params.milestones"),
    ("cosine", {"warmup_steps": "ten"}, "optim.schedule_params.warmup_steps"),
    ("triangle", {}, "optim.schedule must be one of"),
])
def test_bad_schedule_settings_name_the_field(name, params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_schedule(name, params)
