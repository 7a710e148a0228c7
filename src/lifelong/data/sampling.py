"""Seeded index arithmetic shared by the scenario builders: which samples of which class go where.

Builders work on sample indices into a :class:`~lifelong.data.datasets.Dataset` and only slice tensors
at the end, so that the property tests can check that a stream partitions the data it was built from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lifelong.data.datasets import Dataset
from lifelong.data.streams import Experience, TensorSet
from lifelong.errors import ConfigError


def present_classes(dataset: Dataset) -> list[int]:
    """The labels that occur in the training set, sorted."""
    return sorted(set(dataset.y_train.tolist()))


def shuffled_class_indices(labels: torch.Tensor, classes: Sequence[int],
                           rng: np.random.Generator) -> dict[int, np.ndarray]:
    """For each class, the indices of its samples in ``labels`` in a seeded random order."""
    labels_np = labels.numpy()
    return {c: rng.permutation(np.flatnonzero(labels_np == c)) for c in classes}


def indices_of(labels: torch.Tensor, classes: Sequence[int]) -> np.ndarray:
    """Indices (in dataset order) of the samples whose label is one of ``classes``."""
    return np.flatnonzero(np.isin(labels.numpy(), np.asarray(list(classes), dtype=np.int64)))


def take(x: torch.Tensor, y: torch.Tensor, index: np.ndarray, task_id: int,
         relabel: torch.Tensor | None = None) -> TensorSet:
    """The samples at ``index`` as one task's set; ``relabel`` (C,) maps every label to a new one."""
    index_t = torch.as_tensor(index, dtype=torch.long)
    labels = y[index_t] if relabel is None else relabel[y[index_t]]
    return TensorSet.of(x[index_t], labels, task_id)


def random_composition(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """``parts`` non-negative sizes summing to ``total``, from uniform random cut points (so sizes
    vary widely, as the stochastic task sizes of Si-Blurry, Moon et al. 2023)."""
    cuts = np.sort(rng.integers(0, total + 1, size=parts - 1))
    bounds = np.concatenate([[0], cuts, [total]])
    return np.diff(bounds).astype(int).tolist()


def ordered_classes(dataset: Dataset, order: Sequence[int] | None, shuffle: bool, seed: int) -> list[int]:
    """The order in which classes arrive: ``order`` as given, a seeded permutation, or 0..C-1."""
    present = sorted(set(dataset.y_train.tolist()))
    if order is not None:
        if sorted(order) != present:
            raise ConfigError(f"scenario.class_order must be a permutation of the dataset's classes {present}, "
                              f"got {list(order)}")
        return list(order)
    if shuffle:
        return [present[i] for i in np.random.default_rng(seed).permutation(len(present))]
    return present


def split_classes(classes: Sequence[int], n_experiences: int) -> list[tuple[int, ...]]:
    """Split ordered classes into ``n_experiences`` contiguous groups, sizes differing by at most one."""
    if not 1 <= n_experiences <= len(classes):
        raise ConfigError(f"scenario.n_experiences must lie in [1, {len(classes)}] (the number of classes), "
                          f"got {n_experiences}")
    groups = np.array_split(np.asarray(classes), n_experiences)
    return [tuple(int(c) for c in g) for g in groups]


def class_experiences(dataset: Dataset, groups: Sequence[tuple[int, ...]]) -> tuple[Experience, ...]:
    """One experience per group of classes, in order (task id = position): its classes' training and test
    samples."""
    experiences = []
    for task_id, group in enumerate(groups):
        train_mask = torch.isin(dataset.y_train, torch.tensor(group))
        test_mask = torch.isin(dataset.y_test, torch.tensor(group))
        experiences.append(Experience(
            train=TensorSet.of(dataset.x_train[train_mask], dataset.y_train[train_mask], task_id),
            test=TensorSet.of(dataset.x_test[test_mask], dataset.y_test[test_mask], task_id),
            classes=group, task_id=task_id, name="classes " + ",".join(map(str, group)),
        ))
    return tuple(experiences)
