"""Seeded index arithmetic shared by the scenario builders: which samples of which class go where.

Builders work on sample indices into a :class:`~lifelong.data.datasets.Dataset` and only slice tensors
at the end, so that the property tests can check that a stream partitions the data it was built from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lifelong.data.datasets import Dataset
from lifelong.data.streams import TensorSet


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
