import numpy as np
import pytest

from lifelong.metrics.efficiency import compute_axes, flops_at, mean_accuracy, time_to_accuracy

POINTS = [{"step": 0, "samples": 0, "seconds": 0.0, "experience": 0, "accuracies": [0.0, 0.0]},
          {"step": 2, "samples": 32, "seconds": 0.5, "experience": 0, "accuracies": [0.8, 0.0]},
          {"step": 4, "samples": 64, "seconds": 1.0, "experience": 0, "accuracies": [1.0, 0.0]},
          {"step": 7, "samples": 112, "seconds": 2.0, "experience": 1, "accuracies": [0.6, 0.8]},
          {"step": 10, "samples": 160, "seconds": 3.0, "experience": 1, "accuracies": [0.8, 1.0]}]


def test_flops_spread_evenly_over_each_experiences_steps() -> None:
    costs = [{"steps": 4, "flops": 400.0}, {"steps": 6, "flops": 1200.0}]  # 100 then 200 per step
    assert flops_at([0, 2, 4, 7, 10], [0, 0, 0, 1, 1], costs).tolist() == [0.0, 200.0, 400.0, 1000.0, 1600.0]
    assert flops_at([0], [0], [{"steps": 4}]) is None


def test_axes_and_time_to_accuracy() -> None:
    axes = compute_axes(POINTS, [{"steps": 4}, {"steps": 6}])
    assert sorted(axes) == ["samples", "seconds", "steps"]  # no flops in the cost log
    accuracy = mean_accuracy(POINTS)
    assert accuracy.tolist() == pytest.approx([0.0, 0.4, 0.5, 0.7, 0.9])
    assert time_to_accuracy(axes["samples"], accuracy, 0.7) == 112.0
    assert time_to_accuracy(axes["seconds"], accuracy, 0.5) == 1.0
    assert time_to_accuracy(axes["steps"], accuracy, 0.95) is None
    assert np.all(np.diff(compute_axes(POINTS, [{"steps": 4, "flops": 8.0}, {"steps": 6, "flops": 6.0}])["flops"]) >= 0)


def test_mean_accuracy_per_experience_or_pooled_over_test_samples() -> None:
    # unweighted: (0.6 + 0.8) / 2 = 0.7 at step 7; pooled over 10 and 30 test samples:
    # (0.6*10 + 0.8*30) / 40 = 30 / 40 = 0.75; at step 10 (0.8*10 + 1.0*30) / 40 = 38 / 40 = 0.95
    pooled = mean_accuracy(POINTS, [10, 30])
    assert pooled.tolist() == pytest.approx([0.0, 0.2, 0.25, 0.75, 0.95])
    assert mean_accuracy(POINTS, [10, 0]).tolist() == pytest.approx([0.0, 0.8, 1.0, 0.6, 0.8])  # empty: no weight
    assert mean_accuracy(POINTS, [0, 0]).tolist() == [0.0] * 5
    assert mean_accuracy([]).tolist() == [] and mean_accuracy([], [10]).tolist() == []
    with pytest.raises(ValueError, match="sizes"):
        mean_accuracy(POINTS, [10])
