"""Online metrics on hand-checked curves, and an online ER run on digits."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from lifelong import ER, ResultsStore, RunConfig, class_incremental, mlp, run_config
from lifelong.errors import ConfigError
from lifelong.metrics.online import (
    anytime_accuracies,
    area_under_accuracy,
    online_metrics,
    seen_accuracy,
    seen_class_accuracy,
)
from lifelong.runner.online import train_online


@dataclass
class Point:
    samples: int
    experience: int
    accuracies: list[float]


def test_seen_accuracy_weights_test_sets_by_size() -> None:
    # 0.5 on 10 samples and 1.0 on 30: 35 of 40 right
    assert seen_accuracy([0.5, 1.0, 0.0], [10, 30, 20], n_seen=2) == pytest.approx(35 / 40)
    assert seen_accuracy([0.5, 1.0], [0, 0], n_seen=2) == 0.0
    assert seen_class_accuracy([[0.8, 0.0], [0.6, 0.9]], [10, 30]) == pytest.approx([0.8, (6 + 27) / 40])


def test_area_under_accuracy_is_the_sample_weighted_mean() -> None:
    # the point at 0 samples is skipped; evenly spaced points give their mean (Koh et al. 2022)
    assert area_under_accuracy([0, 100, 200, 300], [0.1, 0.4, 0.6, 0.8]) == pytest.approx(0.6)
    # an end-of-experience point 50 samples after the last periodic one weighs half as much
    assert area_under_accuracy([100, 200, 250], [0.2, 0.4, 1.0]) == pytest.approx((20 + 40 + 50) / 250)
    assert area_under_accuracy([0], [0.3]) == 0.0


def test_online_metrics_count_only_seen_experiences() -> None:
    points = [Point(0, 0, [0.0, 0.0]), Point(10, 0, [0.5, 0.0]), Point(20, 1, [0.25, 1.0])]
    sizes = [20, 20]
    assert anytime_accuracies(points, sizes) == [0.0, 0.5, 0.625]
    assert online_metrics(points, sizes) == {"a_auc": pytest.approx((0.5 * 10 + 0.625 * 10) / 20),
                                             "last_accuracy": 0.625}


def test_online_er_on_digits_reports_anytime_accuracy(digits_data) -> None:
    stream = class_incremental(digits_data, 5)
    torch.manual_seed(0)
    result = train_online(stream, mlp(stream.input_shape, 10, hidden=(32,)), ER(buffer_size=200), batch_size=10,
                          eval_every_samples=100, lr=0.05, seed=0)
    curve = result.extra["curve"]
    samples = [p["samples"] for p in curve]
    assert samples[-1] == len(digits_data.y_train) == sum(c.samples for c in result.costs)  # one pass
    ends = {sum(c.samples for c in result.costs[:i + 1]) for i in range(5)}
    periodic = [s for s in samples[1:] if s not in ends]
    # a point at the first batch (of 10) that crosses each multiple of 100 samples
    assert [s // 100 for s in periodic] == list(range(1, len(digits_data.y_train) // 100 + 1))
    assert all(s % 100 < 10 for s in periodic)
    assert result.metrics["last_accuracy"] == pytest.approx(
        seen_accuracy(result.matrix[-1].tolist(), [len(e.test) for e in stream], 5))
    # ER keeps old classes: far above the 0.2 that forgetting all but the last experience would give
    assert result.metrics["last_accuracy"] > 0.4 and 0.4 < result.metrics["a_auc"] < 1.0


def test_online_run_from_a_config_is_stored(tmp_path) -> None:
    config = RunConfig.model_validate({
        "dataset": {"name": "synthetic", "n_classes": 4, "n_features": 8, "n_per_class": 40, "spread": 0.5},
        "scenario": {"name": "class_incremental", "n_experiences": 2}, "model": {"name": "mlp", "hidden": [16]},
        "optim": {"epochs": 1, "batch_size": 5}, "run": {"eval_every_samples": 20, "progress": False}})
    store = ResultsStore(tmp_path / "runs.db")
    result = run_config(config, store=store)
    stored = store.get(result.run_id).metrics
    assert stored["a_auc"] == pytest.approx(result.metrics["a_auc"])
    assert stored["last_accuracy"] == pytest.approx(result.metrics["last_accuracy"])
    with pytest.raises(ConfigError, match="eval_every_samples"):
        run_config(config.model_copy(update={"run": config.run.model_copy(update={"eval_every_steps": 3})}))
