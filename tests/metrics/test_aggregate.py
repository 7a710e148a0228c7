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
