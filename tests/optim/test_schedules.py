import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifelong import OptimConfig, class_incremental, train
from lifelong.errors import ConfigError
from lifelong.optim.schedules import (
    SCHEDULES,
    WSD,
    Cosine,
    Infinite,
    LinearDecay,
    Position,
    Power,
    Rewarm,
    Step,
    Warmup,
    build_schedule,
)
from lifelong.strategies import STRATEGIES
from tests.runner.recorder import StepRecorder
from tests.runner.test_checkpoint_resume import resumed_and_reference, small_mlp


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


def test_power_holds_to_the_knee_then_falls_as_the_power_law_of_the_samples_seen() -> None:
    schedule = Power(b=-0.5, knee_samples=100, decay_fraction=0.0)
    # samples 50 and 100: at or below the knee, the base rate; 400 = 4 knees: 4^-0.5; 900: 9^-0.5
    assert [schedule(Position(3, 0, 3, 10, 40, n)) for n in (0, 50, 100, 400, 900)] == \
        pytest.approx([1.0, 1.0, 1.0, 0.5, 1 / 3])
    # the count runs over the whole stream: the next experience does not reset it, whatever the steps
    assert schedule(Position(30, 3, 0, 10, 40, 900)) == pytest.approx(1 / 3)
    paper = Power(knee_samples=100, decay_fraction=0.0)  # the paper's exponent, -0.51
    assert paper(Position(0, 0, 0, 10, 40, 400)) == pytest.approx(4 ** -0.51) == pytest.approx(0.4931, abs=1e-4)


def test_power_warms_up_once_and_decays_over_the_last_fraction_of_each_experience() -> None:
    schedule = Power(b=-0.5, knee_samples=100, warmup_steps=4, decay_fraction=0.25)
    # warmup of the stream's first steps, times the power law (1 before the knee)
    assert [schedule(Position(t, 0, t, 8, 16, 10 * t)) for t in (0, 1, 3)] == [0.25, 0.5, 1.0]
    # the last 0.25 * 8 = 2 steps of the experience decay linearly to 0: 1, then 0.5 of the power law
    assert schedule(Position(6, 0, 6, 8, 16, 400)) == pytest.approx(0.5)
    assert schedule(Position(7, 0, 7, 8, 16, 400)) == pytest.approx(0.25)
    # the next experience: no warmup again, the power law where the stream is (900 samples), no decay yet
    assert schedule(Position(9, 1, 1, 8, 16, 900)) == pytest.approx(1 / 3)
    streamed = Power(b=-0.5, knee_samples=100, decay_fraction=0.25, horizon="stream", decay="exponential",
                     final=0.01)
    assert streamed(Position(7, 0, 7, 8, 16, 400)) == 0.5  # an experience's end: the stream's decay is later
    assert streamed(Position(14, 1, 6, 8, 16, 400)) == pytest.approx(0.5 * 0.01 ** 0.5)  # half-way down 4 steps


def test_the_runner_gives_the_power_schedule_the_stream_samples_trained_on(small_data) -> None:
    """Through ``lifelong.train``: each step's rate is 0.05 times the power law of the samples of the
    steps before it, over the three experiences (60 samples each, batches 16, 16, 16, 12 per epoch)."""
    recorder, stream = StepRecorder(), class_incremental(small_data, 3)
    optim = OptimConfig(lr=0.05, epochs=2, batch_size=16, schedule="power",
                        schedule_params={"b": -0.5, "knee_samples": 64, "decay_fraction": 0.0})
    train(stream, small_mlp(stream), STRATEGIES["naive"](), optim, seed=0, observers=[recorder])
    batches = [b - a for e in range(3) for a, b in zip([0] + [s["samples"] for s in recorder.of(e)][:-1],
                                                        [s["samples"] for s in recorder.of(e)])]
    assert batches == [16, 16, 16, 12] * 6
    seen = [sum(batches[:k]) for k in range(len(batches))]
    assert [s["lr"] for s in recorder.steps] == [0.05 * Power(b=-0.5, knee_samples=64).power(n) for n in seen]
    assert recorder.steps[5]["lr"] == pytest.approx(0.05 * math.sqrt(64 / 76))  # 76 samples before step 5
    assert recorder.steps[-1]["lr"] == pytest.approx(0.05 * math.sqrt(64 / 348))  # 360 - 12 before the last


def test_a_power_scheduled_run_killed_with_sigkill_resumes_bit_for_bit(small_data, tmp_path) -> None:
    optim = OptimConfig(lr=0.05, epochs=2, batch_size=16, reset_per_experience=False, schedule="power",
                        schedule_params={"knee_samples": 48, "warmup_steps": 3, "decay_fraction": 0.25})
    resumed_and_reference(class_incremental(small_data, 3), "naive", tmp_path, {"naive": {}}, optim=optim)


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
    ("power", {"b": 0.5}, "optim.schedule_params.b must be < 0"),
    ("power", {"knee_samples": 0}, "optim.schedule_params.knee_samples must be >= 1, got 0"),
    ("power", {"decay": "cosine"}, "optim.schedule_params.decay must be one of \\['exponential', 'linear'\\]"),
    ("power", {"decay": "exponential"}, "optim.schedule_params.final must be in \\(0, 1\\] for an exponential"),
    ("power", {"a": 4.6}, "optim.schedule_params.a: unknown field"),
])
def test_bad_schedule_settings_name_the_field(name, params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_schedule(name, params)
