"""Hierarchical label expansion: coarse labels first, then their fine children.

Lee et al. 2023, "Online Continual Learning on Hierarchical Label Expansion" (ICCV 2023): a learner
first meets samples labelled at a coarse level ("digit >= 5") and later samples of the same domain
labelled with the fine classes under each coarse label ("7"). Here the label space holds both levels:
fine labels keep their ids ``0..C-1`` and coarse label ``g`` gets id ``C + g``. The level is known at
test time, as a task id (0 coarse, 1 fine), so the stream is task-aware: a prediction is made among
the labels of the level asked for, which is how the paper evaluates both levels.

Parent groups are contiguous runs of the sorted classes (digits with ``n_coarse=2``: 0-4 and 5-9).
``coarse_fraction`` of every class's training samples (a seeded draw) form the coarse experience;
the rest form the fine experiences, one per parent group, so every training sample is used once.
The coarse experience tests every test sample under its coarse label; fine experience ``g`` tests the
samples of group ``g``'s classes under their fine labels (so each test sample is tested at both levels).
"""

from __future__ import annotations

import numpy as np
import torch

from lifelong.data.datasets import Dataset
from lifelong.data.sampling import indices_of, present_classes, shuffled_class_indices, take
from lifelong.data.streams import Experience, Stream
from lifelong.errors import ConfigError

COARSE_LEVEL, FINE_LEVEL = 0, 1


def hierarchical(dataset: Dataset, n_coarse: int = 2, coarse_fraction: float = 0.5, seed: int = 0) -> Stream:
    """One coarse experience over ``n_coarse`` parent labels, then one fine experience per parent."""
    classes = present_classes(dataset)
    if not 2 <= n_coarse < len(classes):
        raise ConfigError(f"scenario.n_coarse must lie in [2, {len(classes) - 1}], got {n_coarse}")
    if not 0.0 < coarse_fraction < 1.0:
        raise ConfigError(f"scenario.coarse_fraction must lie in (0, 1), got {coarse_fraction}")
    groups = [list(map(int, g)) for g in np.array_split(np.asarray(classes, dtype=np.int64), n_coarse)]
    n_fine = dataset.n_classes
    parent = torch.arange(n_fine + n_coarse)  # label -> coarse label id, (C + n_coarse,)
    for g, group in enumerate(groups):
        parent[group] = n_fine + g
    per_class = shuffled_class_indices(dataset.y_train, classes, np.random.default_rng(seed))
    # at least one sample of each class at each level, where the class has two
    n_coarse_samples = {c: min(max(1, int(round(coarse_fraction * len(per_class[c])))), len(per_class[c]) - 1)
                        for c in classes}
    coarse_index = np.sort(np.concatenate([per_class[c][:n_coarse_samples[c]] for c in classes]))
    experiences = [Experience(
        train=take(dataset.x_train, dataset.y_train, coarse_index, COARSE_LEVEL, relabel=parent),
        test=take(dataset.x_test, dataset.y_test, np.arange(len(dataset.y_test)), COARSE_LEVEL, relabel=parent),
        classes=tuple(n_fine + g for g in range(n_coarse)), task_id=COARSE_LEVEL,
        name="coarse " + " | ".join(",".join(map(str, g)) for g in groups), info={"level": "coarse"},
    )]
    for g, group in enumerate(groups):
        fine_index = np.sort(np.concatenate([per_class[c][n_coarse_samples[c]:] for c in group]))
        experiences.append(Experience(
            train=take(dataset.x_train, dataset.y_train, fine_index, FINE_LEVEL),
            test=take(dataset.x_test, dataset.y_test, indices_of(dataset.y_test, group), FINE_LEVEL),
            classes=tuple(group), task_id=FINE_LEVEL, name=f"fine {','.join(map(str, group))} (of {n_fine + g})",
            info={"level": "fine", "parent": n_fine + g},
        ))
    return Stream(tuple(experiences), n_fine + n_coarse, dataset.input_shape, task_aware=True,
                  name=f"{dataset.name} hierarchical {n_coarse} coarse -> {len(classes)} fine")
