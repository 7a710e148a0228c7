import numpy as np
import pytest

from lifelong.metrics import (
    average_incremental_accuracy,
    backward_transfer,
    final_accuracy,
    forgetting,
    forward_transfer,
    summary,
)

# Hand-checked 3x3 matrix: row i after training on experience i, column j tested on j.
R = [[0.9, 0.2, 0.1],
     [0.6, 0.8, 0.3],
     [0.5, 0.7, 0.9]]
INITIAL = [0.1, 0.1, 0.2]


def test_final_and_incremental_accuracy() -> None:
    assert final_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    # step 0: 0.9; step 1: (0.6+0.8)/2 = 0.7; step 2: 0.7
    assert average_incremental_accuracy(R) == pytest.approx((0.9 + 0.7 + 0.7) / 3)


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
    result = summary(joint, [0.1, 0.1, 0.1])
    assert result["final_accuracy"] == pytest.approx(0.9)
    assert result["forgetting"] is None and result["backward_transfer"] is None
    assert result["forward_transfer"] is None


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError):
        final_accuracy(np.zeros((3, 2)))
    with pytest.raises(ValueError):
        forward_transfer(R, [0.1, 0.2])
