import numpy as np
import pytest

from lifelong.metrics import (
    average_incremental_accuracy,
    average_incremental_accuracy_per_experience,
    backward_transfer,
    final_accuracy,
    final_accuracy_pooled,
    forgetting,
    forward_transfer,
    summary,
)

# Hand-checked 3x3 matrix: row i after training on experience i, column j tested on j.
R = [[0.9, 0.2, 0.1],
     [0.6, 0.8, 0.3],
     [0.5, 0.7, 0.9]]
INITIAL = [0.1, 0.1, 0.2]


# Unequal test-set sizes for R's three experiences: 50, 150 and 300 test samples.
SIZES = [50, 150, 300]


def test_final_and_incremental_accuracy() -> None:
    assert final_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    # step 0: 0.9; step 1: (0.6+0.8)/2 = 0.7; step 2: 0.7. This unweighted mean used to be called
    # average_incremental_accuracy; iCaRL's pools the test samples, so it now has its own name, and
    # iCaRL's gives the same number only when every test set has the same size.
    assert average_incremental_accuracy_per_experience(R) == pytest.approx((0.9 + 0.7 + 0.7) / 3)
    assert average_incremental_accuracy(R, [100, 100, 100]) == pytest.approx((0.9 + 0.7 + 0.7) / 3)


def test_pooled_accuracies_weight_experiences_by_test_size() -> None:
    # Test sets of 50, 150 and 300 samples.
    # final, per experience: (0.5 + 0.7 + 0.9) / 3 = 0.7
    # final, pooled: (0.5*50 + 0.7*150 + 0.9*300) / 500 = (25 + 105 + 270) / 500 = 0.8
    # iCaRL, after each step on all test samples seen so far:
    #   step 0: 0.9; step 1: (0.6*50 + 0.8*150) / 200 = (30 + 120) / 200 = 0.75; step 2: 0.8
    #   average (0.9 + 0.75 + 0.8) / 3 = 2.45 / 3 = 0.81667
    # per experience: (0.9 + 0.7 + 0.7) / 3 = 0.76667
    assert final_accuracy(R, SIZES) == pytest.approx(0.7)
    assert final_accuracy_pooled(R, SIZES) == pytest.approx(0.8)
    assert average_incremental_accuracy(R, SIZES) == pytest.approx(2.45 / 3)
    assert average_incremental_accuracy_per_experience(R, SIZES) == pytest.approx(2.3 / 3)
    result = summary(R, INITIAL, SIZES)
    assert result["final_accuracy"] == pytest.approx(0.7)
    assert result["final_accuracy_pooled"] == pytest.approx(0.8)
    assert result["average_incremental_accuracy"] == pytest.approx(2.45 / 3)
    assert result["average_incremental_accuracy_per_experience"] == pytest.approx(2.3 / 3)
    # the sequence metrics are per experience and do not change with the sizes
    assert result["forgetting"] == pytest.approx(0.25) and result["backward_transfer"] == pytest.approx(-0.25)
    assert result["forward_transfer"] == pytest.approx(0.1)


def test_empty_test_sets_are_left_out_not_averaged_as_zero() -> None:
    # Experience 1 has no test sample (the runner records 0.0 for it); sizes 50, 0, 300.
    empty = [[0.9, 0.0, 0.1],
             [0.6, 0.0, 0.3],
             [0.5, 0.0, 0.9]]
    sizes = [50, 0, 300]
    # final, per experience: (0.5 + 0.9) / 2 = 0.7 (not (0.5 + 0.0 + 0.9) / 3);
    # pooled: (0.5*50 + 0.9*300) / 350 = 295 / 350
    # iCaRL: step 0: 0.9; step 1: 0.6 (only experience 0 has samples); step 2: 295 / 350
    # per experience: step 0: 0.9; step 1: 0.6; step 2: (0.5 + 0.9) / 2 = 0.7
    # forgetting: experience 0 only, 0.9 - 0.5 = 0.4; BWT: 0.5 - 0.9 = -0.4;
    # FWT: experience 2 only, R[1, 2] - b_2 = 0.3 - 0.2 = 0.1
    result = summary(empty, INITIAL, sizes)
    assert result["final_accuracy"] == pytest.approx(0.7)
    assert result["final_accuracy_pooled"] == pytest.approx(295 / 350)
    assert result["average_incremental_accuracy"] == pytest.approx((0.9 + 0.6 + 295 / 350) / 3)
    assert result["average_incremental_accuracy_per_experience"] == pytest.approx((0.9 + 0.6 + 0.7) / 3)
    assert result["forgetting"] == pytest.approx(0.4) and result["backward_transfer"] == pytest.approx(-0.4)
    assert result["forward_transfer"] == pytest.approx(0.1)
    # a step before any test sample exists is left out of the average over steps:
    # sizes 0, 150, 300: iCaRL: step 1: 0.8; step 2: (0.7*150 + 0.9*300) / 450 = 375 / 450
    assert average_incremental_accuracy(R, [0, 150, 300]) == pytest.approx((0.8 + 375 / 450) / 2)
    assert average_incremental_accuracy_per_experience(R, [0, 150, 300]) == pytest.approx((0.8 + 0.8) / 2)
    # nothing left to average: None, like the sequence metrics of a joint run
    nothing = summary(R, INITIAL, [0, 0, 0])
    assert all(value is None for value in nothing.values())


def test_joint_run_pools_every_experience() -> None:
    # one row: everything is seen; pooled (0.9*10 + 0.8*20 + 1.0*70) / 100 = 0.95
    result = summary([[0.9, 0.8, 1.0]], [0.1, 0.1, 0.1], [10, 20, 70])
    assert result["final_accuracy"] == pytest.approx(0.9)
    assert result["average_incremental_accuracy_per_experience"] == pytest.approx(0.9)
    assert result["final_accuracy_pooled"] == pytest.approx(0.95)
    assert result["average_incremental_accuracy"] == pytest.approx(0.95)


def test_forgetting_takes_best_earlier_accuracy() -> None:
    # exp 0: max(0.9, 0.6) - 0.5 = 0.4; exp 1: max(0.8) - 0.7 = 0.1
    assert forgetting(R) == pytest.approx((0.4 + 0.1) / 2)


def test_forgetting_ignores_rows_before_learning() -> None:
    m = [[0.0, 0.9], [0.0, 0.9]]  # exp 1's 0.9 before row 1 must not count as "learned then forgotten"
    assert forgetting(m) == pytest.approx(0.0)


def test_backward_transfer_sign_and_value() -> None:
    # (0.5 - 0.9) + (0.7 - 0.8) = -0.5, over 2
    assert backward_transfer(R) == pytest.approx(-0.25)
    improving = [[0.5, 0.0], [0.7, 0.9]]
    assert backward_transfer(improving) == pytest.approx(0.2)


def test_forward_transfer_against_initial_model() -> None:
    # (R[0,1] - b1) + (R[1,2] - b2) = (0.2 - 0.1) + (0.3 - 0.2) = 0.2, over 2
    assert forward_transfer(R, INITIAL) == pytest.approx(0.1)
    assert forward_transfer([[0.9, 0.0], [0.9, 0.9]], [0.1, 0.1]) == pytest.approx(-0.1)


def test_single_row_matrix_has_no_sequence_metrics() -> None:
    joint = [[0.9, 0.8, 1.0]]
    result = summary(joint, [0.1, 0.1, 0.1], [10, 10, 10])
    assert result["final_accuracy"] == pytest.approx(0.9)
    assert result["forgetting"] is None and result["backward_transfer"] is None
    assert result["forward_transfer"] is None


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError):
        final_accuracy(np.zeros((3, 2)))
    with pytest.raises(ValueError):
        forward_transfer(R, [0.1, 0.2])
    for sizes in ([50, 150], [50, 150, 300, 10], [[50, 150, 300]], [50, -1, 300], [50, 1.5, 300], ["a", "b", "c"]):
        with pytest.raises(ValueError, match="test_sizes"):
            summary(R, INITIAL, sizes)
    with pytest.raises(ValueError, match="test_sizes"):
        final_accuracy_pooled(R, [50, 150])
