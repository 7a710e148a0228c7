"""Learning-curve extrapolation (optim.forecast_stop): the power-law fit, the stop rule on curves checked by
hand, a run on digits that stops its experiences early and still learns them, and exact resume."""

import numpy as np
import pytest
import torch

from lifelong import OptimConfig, class_incremental, mlp, train
from lifelong.runner.forecast import MIN_POINTS, ForecastStop, fit_power_law
from lifelong.runner.observers import TrainState
from lifelong.strategies import Naive
from tests.runner.test_checkpoint_resume import resumed_and_reference


def test_the_fit_recovers_a_power_law_it_can_represent() -> None:
    t = np.arange(1, 200, 7, dtype=float)
    law = fit_power_law(t, 0.5 + 2.0 * t ** -(10 ** -0.15))  # c = 0.708, a point of the exponent grid
    assert (law.a, law.b, law.c) == pytest.approx((0.5, 2.0, 10 ** -0.15), rel=1e-6)
    flat = fit_power_law(t, np.full_like(t, 3.0))
    assert flat.b == 0.0 and flat.a == pytest.approx(3.0)
    rising = fit_power_law(t, t / 100)  # no falling law fits a rising curve: the flat one at its mean
    assert rising.b == 0.0 and rising.a == pytest.approx(float(np.mean(t / 100)))


def steps_until_stop(losses, threshold: float, every: int, planned: int) -> int | None:
    """Feeds ``losses`` to a ForecastStop as one experience of ``planned`` steps; the step it stops at."""
    stop = ForecastStop(threshold, every)
    state = TrainState(experience=0, experience_steps=planned)
    stop.on_experience_start(state)
    for step, loss in enumerate(losses, start=1):
        state.experience_step, state.loss = step, loss
        if stop.on_step(state):
            return step
    return None


def test_a_flat_loss_stops_at_the_first_forecast_and_a_falling_one_trains_on() -> None:
    # flat: every point equal, the law is flat, the forecast gain 0 < threshold at the first forecast
    assert steps_until_stop([1.0] * 100, threshold=0.01, every=5, planned=100) == MIN_POINTS * 5
    # falling by 0.01 a step: a power law fitted to a straight line still forecasts a gain far above 0.01
    assert steps_until_stop([2.0 - 0.01 * t for t in range(100)], threshold=0.01, every=5, planned=100) is None


def test_a_run_on_digits_stops_experiences_early_learns_them_and_reports_each_forecast(digits_data) -> None:
    stream = class_incremental(digits_data, 5)
    runs = {}
    for threshold in (None, 0.005):
        optim = OptimConfig(lr=0.03, batch_size=16, epochs=5, forecast_stop=threshold, forecast_every=10)
        torch.manual_seed(0)
        runs[threshold] = train(stream, mlp(stream.input_shape, stream.n_classes), Naive(), optim, seed=0)
    full, result = runs[None], runs[0.005]
    planned = [plan["steps"] for plan in result.extra["plan"]]
    records = result.metrics["forecast"]
    assert [r["experience"] for r in records] == [0, 1, 2, 3, 4] and "forecast" not in full.metrics
    stopped = [r for r in records if r["stopped_at"] is not None]
    assert stopped and all(r["forecast_gain"] < 0.005 for r in stopped)
    for record, cost, steps in zip(records, result.costs, planned, strict=True):
        assert cost.steps == (record["stopped_at"] or steps) and cost.steps <= steps
    # measured: 50 of 425 steps saved (experiences 0 and 1 stop at 80 and 40 of 85), each experience just
    # trained within 0.08 of the full run's accuracy on it
    assert sum(cost.steps for cost in result.costs) <= 0.9 * sum(planned)
    assert all(abs(result.matrix[i, i] - full.matrix[i, i]) <= 0.1 for i in range(5))


def test_a_forecasting_run_killed_with_sigkill_resumes_bit_for_bit(small_data, tmp_path) -> None:
    optim = OptimConfig(lr=0.05, epochs=4, batch_size=16, reset_per_experience=False, forecast_stop=0.05,
                        forecast_every=2)
    resumed, _, reference, _ = resumed_and_reference(class_incremental(small_data, 3), "naive", tmp_path,
                                                     {"naive": {}}, optim=optim)
    assert resumed.metrics["forecast"] == reference.metrics["forecast"]


def test_show_prints_where_the_forecast_stopped_experiences(tmp_path, capsys, monkeypatch) -> None:
    from lifelong.cli import main

    monkeypatch.setenv("COLUMNS", "300")  # the stops on one line of the table
    db = str(tmp_path / "runs.db")
    assert main(["run", "--db", db, "--no-checkpoint", "--set", "strategy.name=naive", "--set",
                 "optim.forecast_stop=0.005", "--set", "optim.forecast_every=10"]) == 0
    capsys.readouterr()
    assert main(["show", "1", "--db", db]) == 0
    shown = capsys.readouterr().out
    assert "forecast_stops" in shown and "exp 0 at 80/85, exp 1 at 40/85" in shown
