"""Recurring classes: a long stream in which classes come back, with a power-law recurrence.

Two papers motivate it. SCoLe (Lesort et al. 2023, "Challenging common assumptions about catastrophic
forgetting") trains on long sequences of short experiences in which classes sparsely recur, and finds
that knowledge accumulates under SGD. In power-law environments (Anderson & Schooler 1991, used for
rehearsal schedules in continual learning) the chance that an item is needed again falls as a power
of the time since it was last needed. Here experience ``t`` draws ``classes_per_experience`` distinct
classes without replacement, class ``c`` with weight ``(t - last_c) ** -alpha``, where ``last_c`` is
the last experience that held ``c`` (``-1`` before its first appearance): ``alpha = 0`` is uniform,
larger ``alpha`` favours recently seen classes.

Each class's training samples are shuffled and dealt out in equal chunks to its appearances, so every
training sample of a class that appears is used exactly once (a class never drawn is not used). Each
experience tests all test samples of its classes, so a test sample is tested in every experience that
holds its class.
"""

from __future__ import annotations

import numpy as np

from lifelong.data.datasets import Dataset
from lifelong.data.sampling import indices_of, present_classes, shuffled_class_indices, take
from lifelong.data.streams import Experience, Stream
from lifelong.errors import ConfigError


def recurrence_schedule(classes: list[int], n_experiences: int, classes_per_experience: int, alpha: float,
                        rng: np.random.Generator) -> list[list[int]]:
    """The classes of each experience, drawn with power-law weights on the time since last seen."""
    last = {c: -1 for c in classes}
    schedule = []
    for t in range(n_experiences):
        weights = np.array([(t - last[c]) ** -alpha for c in classes])
        chosen = rng.choice(len(classes), size=classes_per_experience, replace=False, p=weights / weights.sum())
        group = sorted(classes[i] for i in chosen)
        for c in group:
            last[c] = t
        schedule.append(group)
    return schedule


def recurring(dataset: Dataset, n_experiences: int = 20, classes_per_experience: int = 2, alpha: float = 0.5,
              seed: int = 0) -> Stream:
    """``n_experiences`` experiences of ``classes_per_experience`` classes each, recurring as a power law."""
    classes = present_classes(dataset)
    if n_experiences < 1:
        raise ConfigError(f"scenario.n_experiences must be >= 1, got {n_experiences}")
    if not 1 <= classes_per_experience <= len(classes):
        raise ConfigError(f"scenario.classes_per_experience must lie in [1, {len(classes)}], "
                          f"got {classes_per_experience}")
    if alpha < 0:
        raise ConfigError(f"scenario.alpha must be >= 0 (0 is uniform recurrence), got {alpha}")
    rng = np.random.default_rng(seed)
    schedule = recurrence_schedule(classes, n_experiences, classes_per_experience, alpha, rng)
    appearances = {c: [t for t, group in enumerate(schedule) if c in group] for c in classes}
    per_class = shuffled_class_indices(dataset.y_train, classes, rng)
    too_few = [c for c in classes if len(per_class[c]) < len(appearances[c])]
    if too_few:
        raise ConfigError(f"scenario.n_experiences={n_experiences}: classes {too_few} recur more often than they "
                          "have training samples; lower n_experiences or classes_per_experience")
    chunks = {c: np.array_split(per_class[c], len(appearances[c])) for c in classes if appearances[c]}
    experiences = []
    for t, group in enumerate(schedule):
        index = np.sort(np.concatenate([chunks[c][appearances[c].index(t)] for c in group]))
        recurring_classes = [c for c in group if appearances[c][0] < t]
        experiences.append(Experience(
            train=take(dataset.x_train, dataset.y_train, index, t),
            test=take(dataset.x_test, dataset.y_test, indices_of(dataset.y_test, group), t),
            classes=tuple(group), task_id=t, name="classes " + ",".join(map(str, group)),
            info={"recurring": recurring_classes},
        ))
    return Stream(tuple(experiences), dataset.n_classes, dataset.input_shape, task_aware=False,
                  name=f"{dataset.name} recurring alpha={alpha:g} {n_experiences}x{classes_per_experience}")
