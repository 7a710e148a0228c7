"""Si-Blurry: class-incremental experiences with stochastic, blurry boundaries.

Moon et al. 2023, "Online Class Incremental Learning on Stochastic Blurry Task Boundary via Mask and
Visual Prompt Tuning" (MVP, ICCV 2023) introduced Si-Blurry. It extends i-Blurry (Koh et al. 2022,
"Online Continual Learning on Class Incremental Blurry Task Configuration with Anytime Inference",
CLIB, ICLR 2022), where every task has the same number of disjoint and blurry classes and the same
share of blurred samples, by drawing those numbers at random. Real streams have neither a fixed number
of new classes per task nor clean task boundaries. The scenario draws, from the seed, as the reference
sampler does (``OnlineSampler`` in ``utils/online_sampler.py`` of the authors' code,
github.com/KHU-AGI/Si-Blurry, in its ``--rnd_NM`` mode, ``varing_NM``):

* ``N`` (``disjoint_ratio``): the fraction of classes that are *disjoint*: each appears in one
  experience only. They are cut into experiences at uniform random cut points, so the number of new
  classes per experience varies (and may be zero).
* The other classes are *blurry*. Each has a home experience, and blurry classes too are cut into
  experiences at random cut points, so the number of home blurry classes per experience varies.
* ``M`` (``blurry_ratio``): the fraction of all blurry-class training samples that are *blurred*.
  Their total is cut at random points into a count ``k_e`` per experience; each experience gives
  ``k_e`` samples drawn from its home blurry classes to a common pool, the pool is shuffled, and
  experience ``e`` takes ``k_e`` samples from it. An experience thus keeps its size (where it has the
  samples to give), but its blurry samples come from anywhere in the stream, earlier or later home
  experiences alike.

Class frequencies in an experience are therefore imbalanced: home classes come with most of their
samples, blurred classes with a few. Every training sample is used exactly once.

Where this departs from the reference, and why:

* No class is dropped. The reference rounds the numbers of disjoint and blurry classes down to
  multiples of the number of tasks and leaves the remainder out of the stream (and its
  M takes the floor); here
  ``round(N * C)`` classes are disjoint and all the others blurry.
* No experience is empty. The reference can leave a task without any class (both cuts are random)
  and so without any sample. Here an experience that no cut gives a class gets one: a blurry class if
  there are too few disjoint classes to go round (experiences drawn at random), else a disjoint one;
  the remaining classes are cut at random points as in the reference.
* A class keeps at least one training sample at home, so its home experience (whose test set holds
  it) has trained on it; the blurred total is capped accordingly (``M = 1`` blurs all but one
  sample of each blurry class). An experience gives at most what its home blurry classes have to
  spare (nothing if it has none) but still takes its ``k_e``: the excess is given by experiences with
  room left, chosen uniformly over their spare samples, so every experience takes exactly ``k_e``
  and the pool holds exactly ``round(M * blurry samples)`` (capped as above). The reference instead gives fewer, and
  the last tasks take fewer (the pool runs out).
* The samples an experience gives are drawn at random from its home blurry classes (the reference
  takes the first ones in dataset order), and cut points lie in ``0..total`` (the reference draws
  them in ``0..total-1``).

As in the reference, the pool is shuffled over all experiences, so a blurred sample can come back to
its home experience. ``info["blurred"]`` is ``k_e`` (taken from the pool), ``info["blurred_out"]``
what ``e`` gave to it, and ``info["leaked_in"]`` the samples of ``e`` whose class has another home.

Test sets: experience ``e`` tests the *home* classes of ``e`` (its disjoint classes and its home
blurry classes), so test sets partition the test data and "the classes seen so far" at experience
``e`` are the test sets ``0..e``; the few samples of a class blurred before its home experience are a
preview that anytime accuracy does not count (Koh et al. 2022 count seen classes sample by sample).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lifelong.data.datasets import Dataset
from lifelong.data.sampling import indices_of, present_classes, random_composition, shuffled_class_indices, take
from lifelong.data.streams import Experience, Stream
from lifelong.errors import ConfigError


def _home_counts(n_disjoint: int, n_blurry: int, n_experiences: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """How many disjoint and blurry classes each experience is home to: both cut at random points,
    except that every experience gets one class at least (needs ``n_disjoint + n_blurry >= n_experiences``)."""
    # too few disjoint classes to go round: that many experiences, drawn at random, get a blurry class
    need = max(0, n_experiences - n_disjoint)
    blurry = np.zeros(n_experiences, dtype=int)
    blurry[rng.choice(n_experiences, size=need, replace=False)] = 1
    blurry += random_composition(n_blurry - need, n_experiences, rng)
    # experiences still without a class get a disjoint one (at most n_disjoint of them)
    disjoint = (blurry == 0).astype(int)
    disjoint += random_composition(n_disjoint - int(disjoint.sum()), n_experiences, rng)
    return disjoint, blurry


def _within(counts: Sequence[int], capacity: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """``counts`` with none above its capacity: the excess goes to the parts with room left, uniformly
    over their spare units, so the total is kept (``sum(counts) <= sum(capacity)``)."""
    capacity = np.asarray(capacity, dtype=int)
    capped = np.minimum(np.asarray(counts, dtype=int), capacity)
    excess = int(np.sum(counts)) - int(capped.sum())
    if excess:
        spare = np.repeat(np.arange(len(capacity)), capacity - capped)
        capped += np.bincount(rng.choice(spare, size=excess, replace=False), minlength=len(capacity))
    return capped


def _cut(items: Sequence[int], sizes: Sequence[int]) -> list[list[int]]:
    bounds = np.cumsum([0, *sizes])
    return [list(items[bounds[e]:bounds[e + 1]]) for e in range(len(sizes))]


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
    disjoint_counts, blurry_counts = _home_counts(len(disjoint), len(blurry), n_experiences, rng)
    home_disjoint, home_blurry = _cut(disjoint, disjoint_counts), _cut(blurry, blurry_counts)
    home_of = {c: e for e in range(n_experiences) for c in home_disjoint[e] + home_blurry[e]}

    per_class = shuffled_class_indices(dataset.y_train, classes, rng)
    empty = np.zeros(0, dtype=np.int64)
    # the first sample of each blurry class stays home; the others may be blurred
    kept = [np.concatenate([empty, *(per_class[c][:1] for c in home_blurry[e])]) for e in range(n_experiences)]
    spare = [np.concatenate([empty, *(per_class[c][1:] for c in home_blurry[e])]) for e in range(n_experiences)]
    n_blurred = min(int(round(blurry_ratio * sum(len(per_class[c]) for c in blurry))), sum(map(len, spare)))
    # how many blurred samples each experience takes: the total cut at random points
    blurred_in = np.asarray(random_composition(n_blurred, n_experiences, rng), dtype=int)
    # and gives: as many, unless its home blurry classes have fewer to spare
    blurred_out = _within(blurred_in, [len(s) for s in spare], rng)
    given, stay = [], []
    for e in range(n_experiences):
        drawn = rng.permutation(spare[e])
        given.append(drawn[:blurred_out[e]])
        stay.append(drawn[blurred_out[e]:])
    pool = rng.permutation(np.concatenate([empty, *given]))
    bounds = np.cumsum([0, *blurred_in])
    labels = dataset.y_train.numpy()

    experiences = []
    for e in range(n_experiences):
        taken = pool[bounds[e]:bounds[e + 1]]
        index = rng.permutation(np.concatenate([empty, *(per_class[c] for c in home_disjoint[e]),
                                                kept[e], stay[e], taken]))
        train = take(dataset.x_train, dataset.y_train, index, e)
        home_classes = sorted(home_disjoint[e] + home_blurry[e])
        test = take(dataset.x_test, dataset.y_test, indices_of(dataset.y_test, home_classes), e)
        experiences.append(Experience(
            train=train, test=test, classes=tuple(sorted(set(train.y.tolist()))), task_id=e,
            name=f"home {','.join(map(str, home_classes))}",
            info={"disjoint_classes": sorted(home_disjoint[e]), "blurry_classes": sorted(home_blurry[e]),
                  "blurred": int(blurred_in[e]), "blurred_out": int(blurred_out[e]),
                  "leaked_in": sum(int(home_of[int(y)] != e) for y in labels[taken])},
        ))
    return Stream(tuple(experiences), dataset.n_classes, dataset.input_shape, task_aware=False,
                  name=f"{dataset.name} si-blurry N={disjoint_ratio:g} M={blurry_ratio:g} {n_experiences}")
