import pytest

from lifelong.config import load_config
from lifelong.experiment import run_config
from lifelong.metrics.stability import stability_gaps, stability_summary
from lifelong.runner.results import ResultsStore

# Two experiences of two classes, evaluated every 2 steps. Experience 0 trains steps 0..4 and ends at
# 0.9 on itself; experience 1 starts at step 4: old accuracy dips to 0.3 at step 8, then climbs back
# to 0.8 (within 0.1 of 0.9) at step 12.
STEPS = [0, 2, 4, 6, 8, 10, 12, 14]
EXPERIENCES = [0, 0, 0, 1, 1, 1, 1, 1]
ACCURACIES = [[0.1, 0.0], [0.6, 0.0], [0.9, 0.0], [0.5, 0.4], [0.3, 0.7], [0.6, 0.8], [0.8, 0.9], [0.85, 0.9]]


def test_known_dip_and_recovery() -> None:
    (gap,) = stability_gaps(STEPS, EXPERIENCES, ACCURACIES, tolerance=0.1)
    assert gap.experience == 1 and gap.switch_step == 4
    assert gap.before == 0.9 and gap.minimum == 0.3
    assert gap.depth == pytest.approx(0.6) and gap.relative_depth == pytest.approx(0.6 / 0.9)
    assert gap.steps_to_minimum == 4 and gap.steps_to_recover == 8
    # a stricter tolerance is only met at step 14 (0.85 >= 0.9 - 0.06); none at all, never
    assert stability_gaps(STEPS, EXPERIENCES, ACCURACIES, tolerance=0.06)[0].steps_to_recover == 10
    assert stability_gaps(STEPS, EXPERIENCES, ACCURACIES, tolerance=0.0)[0].steps_to_recover is None


def test_old_accuracy_is_the_mean_over_earlier_experiences() -> None:
    # three experiences; at the switch to experience 2 the old mean is (0.8 + 0.6) / 2 = 0.7, its
    # lowest (0.2 + 0.4) / 2 = 0.3, and it never comes back
    steps = [0, 3, 6, 9, 12]
    experiences = [0, 0, 1, 2, 2]
    accuracies = [[0, 0, 0], [1.0, 0, 0], [0.8, 0.6, 0], [0.2, 0.4, 0.9], [0.4, 0.4, 1.0]]
    first, second = stability_gaps(steps, experiences, accuracies)
    assert (first.before, first.minimum, first.steps_to_recover) == (1.0, 0.8, None)
    assert second.before == pytest.approx(0.7) and second.minimum == pytest.approx(0.3)
    assert second.depth == pytest.approx(0.4) and second.steps_to_minimum == 3
    summary = stability_summary([first, second])
    assert summary["stability_gap"] == pytest.approx(0.3) and summary["min_old_accuracy"] == pytest.approx(0.55)
    assert summary["recovered_fraction"] == 0.0


def test_no_dip_has_zero_depth_and_no_switch_gives_none() -> None:
    (gap,) = stability_gaps([0, 1, 2], [0, 1, 1], [[0.5, 0.0], [0.6, 0.2], [0.7, 0.5]], tolerance=0.0)
    assert gap.depth == 0.0 and gap.minimum == 0.6 and gap.steps_to_recover == 1
    assert stability_gaps([0, 1], [0, 0], [[0.1], [0.9]]) == []
    assert stability_summary([])["stability_gap"] is None


def test_malformed_curve_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        stability_gaps([0, 2, 1], [0, 0, 0], [[0.1], [0.2], [0.3]])
    with pytest.raises(ValueError, match="accuracies"):
        stability_gaps([0, 1], [0, 0], [0.1, 0.2])


def test_naive_has_a_larger_stability_gap_than_er_on_digits(tmp_path) -> None:
    """Real data: class-incremental digits, evaluated every 5 steps. Fine-tuning loses everything
    at each switch (relative depth 1, minimum 0); replay dips too (the stability gap exists for it, as
    De Lange et al. 2023 report) but less deep and not to zero."""
    results = {}
    for name in ("naive", "er"):
        config = load_config(None, [f"strategy.name={name}", "run.eval_every_steps=5", "optim.epochs=3",
                                    "model.hidden=[128]"])
        results[name] = run_config(config, store=ResultsStore(tmp_path / "runs.db"))
    naive, er = results["naive"], results["er"]
    assert naive.metrics["relative_stability_gap"] == pytest.approx(1.0)
    assert naive.metrics["min_old_accuracy"] == 0.0
    assert er.metrics["relative_stability_gap"] < 0.9 and er.metrics["min_old_accuracy"] > 0.1
    # the first switch starts from the same place (experience 0 learned) for both
    naive_first, er_first = naive.extra["stability_gaps"][0], er.extra["stability_gaps"][0]
    assert naive_first["before"] > 0.95 and er_first["before"] > 0.95
    assert naive_first["depth"] > er_first["depth"]
