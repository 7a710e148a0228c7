import pytest

from lifelong.metrics.aggregate import aggregate, aggregate_metrics


def test_mean_std_and_t_interval_by_hand() -> None:
    # values 1, 2, 3: mean 2, sample std 1, t(0.975, df=2) = 4.302653, half width 4.302653 / sqrt(3)
    result = aggregate([1.0, 2.0, 3.0])
    assert result.mean == 2.0 and result.std == pytest.approx(1.0)
    assert result.high - result.mean == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)
    assert result.low == pytest.approx(2.0 - 4.302653 / 3 ** 0.5, rel=1e-6)
    assert str(result) == "2.000 ± 1.000 [-0.484, 4.484]"
    single = aggregate([0.7])
    assert (single.mean, single.std, single.low) == (0.7, None, None) and str(single) == "0.700"
    with pytest.raises(ValueError, match="non-empty"):
        aggregate([])


def test_metrics_missing_in_a_run_are_left_out() -> None:
    runs = [{"final_accuracy": 0.5, "forgetting": None, "per_experience": [1]},
            {"final_accuracy": 0.7, "forgetting": 0.1, "per_experience": [2]}]
    summary = aggregate_metrics(runs)
    assert list(summary) == ["final_accuracy"] and summary["final_accuracy"].mean == pytest.approx(0.6)


def test_a_language_models_metrics_are_not_clipped_to_the_accuracy_ranges() -> None:
    """Losses and their differences are in nats: forgetting of 2 nats is not clipped to 1, nor a loss above 1."""
    runs = [{"final_loss": 3.0, "forgetting": 1.5, "stability_gap": 1.8},
            {"final_loss": 3.4, "forgetting": 2.5, "stability_gap": 2.2}]
    summary = aggregate_metrics(runs)
    assert summary["forgetting"].mean == 2.0 and summary["forgetting"].high > 2.5
    assert summary["stability_gap"].high > 2.2 and summary["final_loss"].high > 3.4
    accuracy_runs = [{"final_accuracy": 0.5, "forgetting": 0.9}, {"final_accuracy": 0.6, "forgetting": 0.95}]
    assert aggregate_metrics(accuracy_runs)["forgetting"].high == 1.0  # a classifier's stays clipped
