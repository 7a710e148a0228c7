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
    # min_old_accuracy is the paper's min-ACC at the end of the run (the last switch's minimum, whose
    # per-experience minima already span the whole run), 0.3, no longer the mean over switches
    # (0.8 + 0.3) / 2 = 0.55 that the old definition gave
    assert summary["stability_gap"] == pytest.approx(0.3) and summary["min_old_accuracy"] == pytest.approx(0.3)
    assert summary["recovered_fraction"] == 0.0


def test_min_acc_is_the_mean_of_each_old_experiences_own_minimum() -> None:
    # Experience 2 starts after step 4; its two old experiences dip at different steps:
    #   step  exp  acc0  acc1  acc2   mean of acc0, acc1
    #     4    1   0.9   0.8   0.0    0.85   <- end of experience 1: the switch
    #     6    2   0.3   0.8   0.2    0.55   <- experience 0 at its lowest
    #     8    2   0.9   0.2   0.5    0.55   <- experience 1 at its lowest
    #    10    2   0.9   0.8   0.9    0.85   <- end of experience 2
    # min-ACC (De Lange et al. 2023) = mean of own minima = (0.3 + 0.2) / 2 = 0.25, where the minimum
    # of the mean curve is 0.55 (what the old code reported). depth = mean of own drops =
    # ((0.9 - 0.3) + (0.8 - 0.2)) / 2 = 0.6 (the mean curve only drops 0.85 - 0.55 = 0.3).
    # WC-ACC = 1/3 * A_2(end) + 2/3 * min-ACC = (0.9 + 2 * 0.25) / 3 = 1.4 / 3.
    steps = [0, 2, 4, 6, 8, 10]
    experiences = [0, 0, 1, 2, 2, 2]
    accuracies = [[0.0, 0.0, 0.0], [0.9, 0.0, 0.0], [0.9, 0.8, 0.0],
                  [0.3, 0.8, 0.2], [0.9, 0.2, 0.5], [0.9, 0.8, 0.9]]
    first, second = stability_gaps(steps, experiences, accuracies)
    assert second.experience == 2 and second.switch_step == 4 and second.before == pytest.approx(0.85)
    assert second.minimum == pytest.approx(0.25)
    assert second.mean_curve_minimum == pytest.approx(0.55)
    assert second.depth == pytest.approx(0.6) and second.relative_depth == pytest.approx(0.6 / 0.85)
    # timings on the mean curve: first lowest at step 6, back to >= 0.85 - 0.02 at step 10
    assert second.steps_to_minimum == 2 and second.steps_to_recover == 6
    assert second.new_accuracy == pytest.approx(0.9)
    assert second.worst_case_accuracy == pytest.approx(1.4 / 3)
    # the first switch: experience 0 stays at 0.9, so min-ACC 0.9, no dip, WC-ACC = (0.8 + 0.9) / 2
    assert first.minimum == pytest.approx(0.9) and first.depth == 0.0
    assert first.worst_case_accuracy == pytest.approx(0.85)
    summary = stability_summary([first, second])
    assert summary["min_old_accuracy"] == pytest.approx(0.25)
    assert summary["worst_case_accuracy"] == pytest.approx(1.4 / 3)
    assert summary["stability_gap"] == pytest.approx((0.0 + 0.6) / 2)
    assert summary["relative_stability_gap"] == pytest.approx((0.0 + 0.6 / 0.85) / 2)
    assert summary["recovered_fraction"] == 1.0


def test_min_acc_spans_every_evaluation_after_the_experience_was_learned() -> None:
    # Experience 0 dips to 0.2 during experience 1 and recovers to 1.0 before experience 2 starts:
    #   step  exp  acc0  acc1  acc2
    #     2    0   1.0   0.0   0.0    <- end of experience 0
    #     4    1   0.2   0.5   0.0    <- experience 0's lowest, during experience 1
    #     6    1   1.0   1.0   0.0    <- end of experience 1: the second switch
    #     8    2   0.8   0.6   0.7
    #    10    2   1.0   0.8   1.0    <- end of experience 2
    # The paper's minimum for experience i runs over |T_i| < n <= |T_k|, i.e. from the first evaluation
    # after i's own training to the end of k. At the end of experience 2: experience 0's minimum is
    # min(0.2, 1.0, 0.8, 1.0) = 0.2 (the dip during experience 1 counts), experience 1's is
    # min(0.6, 0.8) = 0.6, so min-ACC = 0.4 (0.7 if only experience 2's training counted) and
    # WC-ACC = (1.0 + 2 * 0.4) / 3 = 0.6.
    # This switch's depth only looks at experience 2's training: ((1.0 - 0.8) + (1.0 - 0.6)) / 2 = 0.3.
    # The first switch: min-ACC 0.2, depth 1.0 - 0.2 = 0.8, WC-ACC = (1.0 + 0.2) / 2 = 0.6.
    steps = [0, 2, 4, 6, 8, 10]
    experiences = [0, 0, 1, 1, 2, 2]
    accuracies = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.5, 0.0],
                  [1.0, 1.0, 0.0], [0.8, 0.6, 0.7], [1.0, 0.8, 1.0]]
    first, second = stability_gaps(steps, experiences, accuracies)
    assert second.before == pytest.approx(1.0) and second.minimum == pytest.approx(0.4)
    assert second.depth == pytest.approx(0.3) and second.mean_curve_minimum == pytest.approx(0.7)
    assert second.worst_case_accuracy == pytest.approx(0.6)
    assert first.minimum == pytest.approx(0.2) and first.depth == pytest.approx(0.8)
    assert first.worst_case_accuracy == pytest.approx(0.6)
    summary = stability_summary([first, second])
    assert summary["min_old_accuracy"] == pytest.approx(0.4) and summary["worst_case_accuracy"] == pytest.approx(0.6)
    assert summary["stability_gap"] == pytest.approx((0.8 + 0.3) / 2)


def test_worst_case_accuracy_with_one_old_experience() -> None:
    # the curve at the top: min-ACC 0.3 (experience 0's lowest), the new experience ends at 0.9, so
    # WC-ACC = 1/2 * 0.9 + 1/2 * 0.3 = 0.6
    (gap,) = stability_gaps(STEPS, EXPERIENCES, ACCURACIES, tolerance=0.1)
    assert gap.new_accuracy == 0.9 and gap.worst_case_accuracy == pytest.approx(0.6)
    assert stability_summary([gap])["worst_case_accuracy"] == pytest.approx(0.6)


def test_no_dip_has_zero_depth_and_no_switch_gives_none() -> None:
    (gap,) = stability_gaps([0, 1, 2], [0, 1, 1], [[0.5, 0.0], [0.6, 0.2], [0.7, 0.5]], tolerance=0.0)
    assert gap.depth == 0.0 and gap.minimum == 0.6 and gap.steps_to_recover == 1
    assert stability_gaps([0, 1], [0, 0], [[0.1], [0.9]]) == []
    assert stability_summary([]) == dict.fromkeys(("stability_gap", "relative_stability_gap", "min_old_accuracy",
                                                   "worst_case_accuracy", "recovered_fraction"))


def test_malformed_curve_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        stability_gaps([0, 2, 1], [0, 0, 0], [[0.1], [0.2], [0.3]])
    with pytest.raises(ValueError, match="accuracies"):
        stability_gaps([0, 1], [0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="columns"):
        stability_gaps([0, 1], [0, 1], [[0.1], [0.2]])  # experience 1 has no accuracy column


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
