"""The seeded split written out in :mod:`lifelong.data.split` is scikit-learn's ``train_test_split``,
index for index, so that datasets load without importing scikit-learn and keep the split they had."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from lifelong.data import digits
from lifelong.data.split import approximate_mode, train_test_indices
from lifelong.errors import DataError


def test_split_is_scikit_learns_for_many_label_sets() -> None:
    rng = np.random.RandomState(0)
    compared = 0
    for trial in range(120):
        n_classes = rng.randint(2, 12)
        y = rng.randint(0, n_classes, size=rng.randint(4 * n_classes, 300))
        fraction, seed, stratify = rng.choice([0.1, 0.25, 0.3, 0.5, 0.77]), rng.randint(1000), trial % 3 != 0
        try:
            expected = train_test_split(np.arange(len(y)), test_size=fraction, random_state=seed,
                                        stratify=y if stratify else None)
        except ValueError:  # a class of one sample, or fewer test samples than classes: refused by both
            with pytest.raises(DataError):
                train_test_indices(y, fraction, seed, stratify)
            continue
        train, test = train_test_indices(y, fraction, seed, stratify)
        assert np.array_equal(train, expected[0]) and np.array_equal(test, expected[1])
        compared += 1
    assert compared > 100


def test_approximate_mode_by_hand() -> None:
    # 10 draws from classes of 6, 3, 3: expected shares 5, 2.5, 2.5 -> floors 5, 2, 2, and the one draw
    # left goes to one of the two tied classes; the shares always sum to the draws
    counts = approximate_mode(np.array([6, 3, 3]), 10, np.random.RandomState(0))
    assert counts[0] == 5 and sorted(counts[1:].tolist()) == [2, 3]
    assert approximate_mode(np.array([4, 4]), 4, np.random.RandomState(0)).tolist() == [2, 2]


def test_digits_loads_the_split_scikit_learn_gives() -> None:
    data = digits()
    bunch = load_digits()
    x = bunch.data.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(x, bunch.target, test_size=0.25, stratify=bunch.target,
                                                        random_state=0)
    assert (len(data.y_train), len(data.y_test)) == (1347, 450)  # ceil(0.25 * 1797) = 450 test images
    for mine, theirs in ((data.x_train, x_train), (data.y_train, y_train), (data.x_test, x_test),
                         (data.y_test, y_test)):
        assert torch.equal(mine, torch.as_tensor(theirs))


def test_bad_splits_name_the_fix() -> None:
    with pytest.raises(DataError, match="test_fraction must lie in"):
        train_test_indices(np.array([0, 0, 1, 1]), 1.0, 0)
    with pytest.raises(DataError, match=r"classes \[2\] have one"):
        train_test_indices(np.array([0, 0, 1, 1, 2]), 0.4, 0)
    with pytest.raises(DataError, match="fewer than the 3 classes"):
        train_test_indices(np.repeat([0, 1, 2], 10), 0.05, 0)
