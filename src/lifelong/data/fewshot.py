"""Few-shot class-incremental learning (FSCIL): a base session with full data, then N-way K-shot sessions.

Tao et al. 2020, "Few-Shot Class-Incremental Learning" (TOPIC) set the protocol: the model first
learns ``base_classes`` classes from all their training samples, then each later session brings
``n_way`` new classes with ``k_shot`` training samples each; after every session it is tested on all
classes seen so far. Here experience ``e`` tests the classes it introduces, so the test sets
partition the test data and accuracy on all seen classes after session ``i`` is the sample-weighted
mean of row ``i`` over experiences ``0..i``
(:func:`lifelong.metrics.online.seen_class_accuracy`). The training samples of a few-shot class
beyond its ``k_shot`` are not used.
"""

from __future__ import annotations

import numpy as np

from lifelong.data.datasets import Dataset
from lifelong.data.sampling import indices_of, present_classes, shuffled_class_indices, take
from lifelong.data.streams import Experience, Stream
from lifelong.errors import ConfigError


def few_shot(dataset: Dataset, base_classes: int | None = None, n_way: int = 1, k_shot: int = 5,
             shuffle: bool = False, seed: int = 0) -> Stream:
    """Base session of ``base_classes`` classes (default: half), then ``n_way``-way ``k_shot``-shot sessions.

    Classes arrive in label order, or in a seeded order with ``shuffle``; the K shots of a class are a
    seeded draw.
    """
    classes = present_classes(dataset)
    if shuffle:
        classes = [classes[i] for i in np.random.default_rng(seed).permutation(len(classes))]
    n_base = len(classes) // 2 if base_classes is None else base_classes
    if not 1 <= n_base < len(classes):
        raise ConfigError(f"scenario.base_classes must lie in [1, {len(classes) - 1}], got {base_classes}")
    remaining = len(classes) - n_base
    if n_way < 1 or remaining % n_way:
        raise ConfigError(f"scenario.n_way must be a positive divisor of the {remaining} classes after the base "
                          f"session, got {n_way}")
    if k_shot < 1:
        raise ConfigError(f"scenario.k_shot must be >= 1, got {k_shot}")
    per_class = shuffled_class_indices(dataset.y_train, classes, np.random.default_rng(seed + 1))
    too_few = [c for c in classes[n_base:] if len(per_class[c]) < k_shot]
    if too_few:
        raise ConfigError(f"scenario.k_shot={k_shot} exceeds the training samples of classes {too_few}")
    sessions = [classes[:n_base]] + [classes[i:i + n_way] for i in range(n_base, len(classes), n_way)]
    experiences = []
    for session, group in enumerate(sessions):
        shots = None if session == 0 else k_shot
        index = np.sort(np.concatenate([per_class[c][:shots] for c in group]))
        experiences.append(Experience(
            train=take(dataset.x_train, dataset.y_train, index, session),
            test=take(dataset.x_test, dataset.y_test, indices_of(dataset.y_test, group), session),
            classes=tuple(group), task_id=session,
            name=("base " if session == 0 else f"{len(group)}-way {k_shot}-shot ") + ",".join(map(str, group)),
            info={"shots": shots},
        ))
    return Stream(tuple(experiences), dataset.n_classes, dataset.input_shape, task_aware=False,
                  name=f"{dataset.name} few-shot {n_base}+{remaining // n_way}x{n_way}-way {k_shot}-shot")
