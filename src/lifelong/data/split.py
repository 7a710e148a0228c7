"""Seeded train/test splits, stratified by class, written out so that loading a dataset needs no
scikit-learn.

:func:`train_test_indices` returns the split scikit-learn's
``train_test_split(..., test_size=fraction, random_state=seed, stratify=y)`` makes (its
``StratifiedShuffleSplit``: per class, the approximate mode of the multivariate hypergeometric
distribution of the draws, each class's members permuted, then both parts permuted), or without
``stratify`` its ``ShuffleSplit``. Importing scikit-learn imports scipy with it, which cost every
``lifelong run`` on digits 1.3 s of its start; and a split written here stays the same whatever
scikit-learn is installed. ``tests/data/test_split.py`` checks it against scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np

from lifelong.errors import DataError


def split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    """``(train, test)`` sample counts: ``ceil(test_fraction * n)`` test samples, the rest for training."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"dataset.test_fraction must lie in (0, 1), got {test_fraction}")
    n_test = math.ceil(test_fraction * n)
    if n_test >= n:
        raise DataError(f"dataset.test_fraction={test_fraction} of {n} samples leaves none for training; "
                        "lower dataset.test_fraction")
    return n - n_test, n_test


def approximate_mode(class_counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Samples per class (K,) of ``draws`` draws without replacement from classes of ``class_counts``
    (K,): the floor of each class's expected share, then one more for the classes with the largest
    remainders, ties broken at random with ``rng``; they sum to ``draws``."""
    continuous = class_counts / class_counts.sum() * draws
    floored = np.floor(continuous)
    missing = int(draws - floored.sum())
    remainder = continuous - floored
    for value in np.sort(np.unique(remainder))[::-1]:
        if missing <= 0:
            break
        (tied,) = np.where(remainder == value)
        take = min(len(tied), missing)
        floored[rng.choice(tied, size=take, replace=False)] += 1
        missing -= take
    return floored.astype(int)


def train_test_indices(y: np.ndarray, test_fraction: float, seed: int,
                       stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of a seeded split of samples with labels ``y`` (N,); with ``stratify``
    each class keeps its share in both parts (every class needs two samples or more, and each part
    room for one sample of every class)."""
    n_train, n_test = split_sizes(len(y), test_fraction)
    rng = np.random.RandomState(seed)
    if not stratify:
        permutation = rng.permutation(len(y))
        return permutation[n_test:n_test + n_train], permutation[:n_test]
    classes, inverse, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        raise DataError(f"a stratified split needs two samples or more of every class; classes "
                        f"{classes[class_counts < 2].tolist()} have one")
    if min(n_train, n_test) < len(classes):
        raise DataError(f"dataset.test_fraction={test_fraction} splits {len(y)} samples into {n_train} and "
                        f"{n_test}, fewer than the {len(classes)} classes; choose a fraction nearer 0.5")
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(class_counts)[:-1])  # indices per class
    train_counts = approximate_mode(class_counts, n_train, rng)
    test_counts = approximate_mode(class_counts - train_counts, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for index, count in enumerate(class_counts):
        shuffled = members[index].take(rng.permutation(count), mode="clip")
        train.extend(shuffled[:train_counts[index]])
        test.extend(shuffled[train_counts[index]:train_counts[index] + test_counts[index]])
    return rng.permutation(train), rng.permutation(test)
