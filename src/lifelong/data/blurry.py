"""Si-Blurry: class-incremental experiences with stochastic, blurry boundaries.

Moon et al. 2023, "Online Continual Learning on Class Incremental Blurry Task Configuration with
Anytime Inference" (Si-Blurry, ICCV 2023). Real streams have neither a fixed number of new classes per
task nor clean task boundaries. The scenario draws, from the seed:

* ``N`` (``disjoint_ratio``): the fraction of classes that are *disjoint*: each appears in one
  experience only. They are cut into experiences at uniform random cut points, so the number of new
  classes per experience varies (and may be zero).
* The other classes are *blurry*: each has a home experience (blurry classes are dealt out evenly in
  a seeded order), and ``M`` (``blurry_ratio``) of its training samples leak into the other
  experiences, each leaked sample to one drawn uniformly among them (at least one sample stays home,
  so ``M = 1`` leaves no experience empty).

Class frequencies in an experience are therefore imbalanced: home classes come with most of their
samples, leaked classes with a few. Every training sample is used exactly once.

Test sets: experience ``e`` tests the *home* classes of ``e`` (its disjoint classes and its home
blurry classes), so test sets partition the test data and "the classes seen so far" at experience
``e`` are the test sets ``0..e``; the few samples of a class that leak before its home experience
are a preview that anytime accuracy does not count (Koh et al. 2022 count seen classes sample by
sample).
"""

from __future__ import annotations

import numpy as np

from lifelong.data.datasets import Dataset
from lifelong.data.sampling import indices_of, present_classes, random_composition, shuffled_class_indices, take
from lifelong.data.streams import Experience, Stream
from lifelong.errors import ConfigError


def si_blurry(dataset: Dataset, n_experiences: int = 5, disjoint_ratio: float = 0.5, blurry_ratio: float = 0.1,
              seed: int = 0) -> Stream:
    """A Si-Blurry stream: ``disjoint_ratio`` is the paper's N, ``blurry_ratio`` its M (both in [0, 1])."""
    classes = present_classes(dataset)
    if not 1 <= n_experiences <= len(classes):
        raise ConfigError(f"scenario.n_experiences must lie in [1, {len(classes)}] (the number of classes), "
                          f"got {n_experiences}")
    if not 0.0 <= disjoint_ratio <= 1.0:
        raise ConfigError(f"scenario.disjoint_ratio (N) must lie in [0, 1], got {disjoint_ratio}")
    if not 0.0 <= blurry_ratio <= 1.0:
        raise ConfigError(f"scenario.blurry_ratio (M) must lie in [0, 1], got {blurry_ratio}")
    rng = np.random.default_rng(seed)
    order = [classes[i] for i in rng.permutation(len(classes))]
    n_disjoint = int(round(disjoint_ratio * len(classes)))
    disjoint, blurry = order[:n_disjoint], order[n_disjoint:]
    home_blurry = [list(map(int, group)) for group in np.array_split(np.asarray(blurry, dtype=np.int64),
                                                                      n_experiences)]
    # experiences without a home blurry class need one disjoint class at least
    minimum = [0 if group else 1 for group in home_blurry]
    spare = len(disjoint) - sum(minimum)
    if spare < 0:
        raise ConfigError(f"scenario.disjoint_ratio={disjoint_ratio} leaves {len(blurry)} blurry and "
                          f"{len(disjoint)} disjoint classes, too few to give each of {n_experiences} "
                          "experiences a class; lower n_experiences or change disjoint_ratio")
    sizes = [m + s for m, s in zip(minimum, random_composition(spare, n_experiences, rng), strict=True)]
    bounds = np.cumsum([0, *sizes])
    home_disjoint = [disjoint[bounds[e]:bounds[e + 1]] for e in range(n_experiences)]

    per_class = shuffled_class_indices(dataset.y_train, classes, rng)
    train_parts: list[list[np.ndarray]] = [[] for _ in range(n_experiences)]
    leaked = [0] * n_experiences
    for home in range(n_experiences):
        for c in home_disjoint[home]:
            train_parts[home].append(per_class[c])
        for c in home_blurry[home]:
            # a class keeps at least one sample at home, so no experience is left empty (M = 1)
            n_leak = min(int(round(blurry_ratio * len(per_class[c]))), len(per_class[c]) - 1) \
                if n_experiences > 1 else 0
            others = [e for e in range(n_experiences) if e != home]
            destinations = rng.choice(others, size=n_leak) if n_leak else np.zeros(0, dtype=int)
            train_parts[home].append(per_class[c][n_leak:])
            for e in range(n_experiences):
                part = per_class[c][:n_leak][destinations == e]
                train_parts[e].append(part)
                leaked[e] += len(part)

    experiences = []
    for e in range(n_experiences):
        index = rng.permutation(np.concatenate(train_parts[e]))
        train = take(dataset.x_train, dataset.y_train, index, e)
        home_classes = sorted(home_disjoint[e] + home_blurry[e])
        test = take(dataset.x_test, dataset.y_test, indices_of(dataset.y_test, home_classes), e)
        experiences.append(Experience(
            train=train, test=test, classes=tuple(sorted(set(train.y.tolist()))), task_id=e,
            name=f"home {','.join(map(str, home_classes))}",
            info={"disjoint_classes": sorted(home_disjoint[e]), "blurry_classes": sorted(home_blurry[e]),
                  "leaked_in": leaked[e]},
        ))
    return Stream(tuple(experiences), dataset.n_classes, dataset.input_shape, task_aware=False,
                  name=f"{dataset.name} si-blurry N={disjoint_ratio:g} M={blurry_ratio:g} {n_experiences}")
