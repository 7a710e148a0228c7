"""Si-Blurry statistics on generated streams match the requested N and M within sampling error, and
the splits are drawn at random cut points as in the reference sampler (Moon et al. 2023)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from lifelong.data import from_arrays, synthetic
from lifelong.data.blurry import si_blurry
from lifelong.errors import ConfigError


@pytest.fixture(scope="module")
def many_classes():
    return synthetic(n_classes=20, n_features=2, n_per_class=200, seed=1)


def home_of(stream) -> dict[int, int]:
    return {c: i for i, e in enumerate(stream) for c in e.info["disjoint_classes"] + e.info["blurry_classes"]}


def leaked_in(stream) -> list[int]:
    """Per experience, its training samples whose class has another home experience."""
    home = home_of(stream)
    return [sum(n for c, n in Counter(e.train.y.tolist()).items() if home[c] != i) for i, e in enumerate(stream)]


def test_disjoint_and_blurry_classes_follow_n_and_m(many_classes) -> None:
    n_experiences, disjoint_ratio, blurry_ratio = 5, 0.4, 0.2
    stream = si_blurry(many_classes, n_experiences, disjoint_ratio, blurry_ratio, seed=3)
    disjoint = [c for e in stream for c in e.info["disjoint_classes"]]
    blurry = [c for e in stream for c in e.info["blurry_classes"]]
    assert len(disjoint) == 8 and len(blurry) == 12 and sorted(disjoint + blurry) == list(range(20))
    assert all(e.info["disjoint_classes"] or e.info["blurry_classes"] for e in stream)  # a home class each
    home = home_of(stream)
    per_class = {c: int((many_classes.y_train == c).sum()) for c in range(20)}
    # M of all blurry samples are blurred (12 classes of 150: exactly 360), each experience taking its count
    taken, given = [e.info["blurred"] for e in stream], [e.info["blurred_out"] for e in stream]
    assert sum(taken) == sum(given) == round(blurry_ratio * sum(per_class[c] for c in blurry)) == 360
    for i, e in enumerate(stream):
        home_size = sum(per_class[c] for c in e.info["disjoint_classes"] + e.info["blurry_classes"])
        assert len(e.train) == home_size - given[i] + taken[i]
        sizes = Counter(e.train.y.tolist())
        assert all(sizes[c] >= 1 for c in e.info["blurry_classes"])  # a class keeps a sample at home
        assert all(sizes[c] == per_class[c] for c in e.info["disjoint_classes"])  # disjoint: all of it
        assert all(c in blurry for c in sizes if home[c] != i)  # only blurry classes leak
    assert leaked_in(stream) == [e.info["leaked_in"] for e in stream]
    assert all(n <= k for n, k in zip(leaked_in(stream), taken, strict=True))
    # the pool is shuffled over all experiences: experience e takes back about k_in * k_out / 360 of its
    # own samples (sd of the total about 8.5 over seeds)
    expected = 360 - sum(k_in * k_out for k_in, k_out in zip(taken, given, strict=True)) / 360
    assert abs(sum(leaked_in(stream)) - expected) < 35
    # imbalance: where samples leak in, a home class has most of its samples and a leaked class a few
    busiest = stream[int(np.argmax(leaked_in(stream)))]
    sizes = Counter(busiest.train.y.tolist())
    assert max(sizes.values()) >= 120 and min(sizes.values()) <= 15


def test_classes_per_experience_vary_with_the_seed(many_classes) -> None:
    counts = {tuple(len(e.info["disjoint_classes"]) for e in si_blurry(many_classes, 5, 0.5, 0.1, seed=s))
              for s in range(6)}
    assert len(counts) > 1  # random cut points: the number of new classes per experience varies
    assert all(sum(c) == 10 for c in counts)


def test_blurry_home_classes_are_cut_at_random_points(many_classes) -> None:
    counts = [tuple(len(e.info["blurry_classes"]) for e in si_blurry(many_classes, 5, 0.5, 0.1, seed=s))
              for s in range(30)]
    assert all(sum(c) == 10 for c in counts)
    assert len(set(counts)) > 10  # not dealt out evenly: the split varies with the seed
    # uniform cut points of 10 into 5 parts rarely give 2 each: most splits are uneven
    assert sum(max(c) - min(c) >= 2 for c in counts) >= 20


def test_blurred_samples_per_experience_are_cut_at_random_points(many_classes) -> None:
    streams = [si_blurry(many_classes, 5, 0.4, 0.2, seed=s) for s in range(10)]
    # leaked samples are not spread evenly over experiences: some take many, some none or few
    spread = [(max(n), min(n)) for n in map(leaked_in, streams)]
    assert sum(high > 3 * low for high, low in spread) >= 5
    taken = [tuple(e.info["blurred"] for e in stream) for stream in streams]
    assert all(sum(t) == 360 for t in taken) and len(set(taken)) == len(taken)
    assert sum(max(t) > 3 * min(t) for t in taken) >= 5  # random cut points, not 72 each


def id_dataset(n_classes: int, n_train: int, seed: int):
    """Train ids 0..N-1 (the only feature), ``n_train`` samples per class in a shuffled order."""
    y_train = np.random.default_rng(seed).permutation(np.repeat(np.arange(n_classes), n_train))
    x_train = np.arange(len(y_train), dtype=np.float32)[:, None]
    y_test = np.repeat(np.arange(n_classes), 2)
    x_test = (len(y_train) + np.arange(len(y_test), dtype=np.float32))[:, None]
    return from_arrays("ids", x_train, y_train, x_test, y_test)


@pytest.mark.parametrize(("n_classes", "n_train", "n_experiences", "disjoint_ratio", "blurry_ratio"), [
    (12, 20, 4, 0.5, 0.3), (12, 20, 12, 0.0, 1.0), (12, 20, 12, 1.0, 0.5), (6, 3, 5, 0.2, 1.0),
    (8, 10, 3, 0.25, 0.9), (8, 10, 1, 0.5, 0.5),
])
def test_each_sample_once_and_each_experience_keeps_its_home(n_classes, n_train, n_experiences, disjoint_ratio,
                                                             blurry_ratio) -> None:
    dataset = id_dataset(n_classes, n_train, seed=n_classes + n_experiences)
    for seed in range(8):
        stream = si_blurry(dataset, n_experiences, disjoint_ratio, blurry_ratio, seed=seed)
        used = [int(i) for e in stream for i in e.train.x[:, 0].tolist()]
        assert sorted(used) == list(range(n_classes * n_train))  # every training sample exactly once
        assert all(len(e.train) > 0 for e in stream)
        home = home_of(stream)
        n_blurry = sum(len(e.info["blurry_classes"]) for e in stream)
        # the blurred total is round(M * blurry samples), capped so that a class keeps a sample at home
        total = min(round(blurry_ratio * n_blurry * n_train), n_blurry * (n_train - 1))
        assert sum(e.info["blurred"] for e in stream) == sum(e.info["blurred_out"] for e in stream) == total
        for i, e in enumerate(stream):
            labels = Counter(e.train.y.tolist())
            assert all(labels[c] >= 1 for c in home if home[c] == i)
            assert all(labels[c] == n_train for c in e.info["disjoint_classes"])
            assert sum(n for c, n in labels.items() if home[c] != i) == e.info["leaked_in"] <= e.info["blurred"]
        for c in (c for e in stream for c in e.info["disjoint_classes"]):
            assert sum(c in e.train.y.tolist() for e in stream) == 1  # a disjoint class in one experience
        again = si_blurry(dataset, n_experiences, disjoint_ratio, blurry_ratio, seed=seed)
        for a, b in zip(stream, again, strict=True):  # the seed decides everything
            assert torch.equal(a.train.x, b.train.x) and a.info == b.info


def test_the_seed_changes_the_split(many_classes) -> None:
    a, b = (si_blurry(many_classes, 5, 0.4, 0.2, seed=s) for s in (0, 1))
    assert [e.info for e in a] != [e.info for e in b]


def test_zero_blurry_ratio_and_all_disjoint_give_clean_boundaries(many_classes) -> None:
    stream = si_blurry(many_classes, 4, 1.0, 0.5, seed=0)
    seen: set[int] = set()
    for e in stream:
        assert not seen & set(e.classes) and e.classes
        seen |= set(e.classes)
    clean = si_blurry(many_classes, 4, 0.0, 0.0, seed=0)
    assert [set(e.classes) for e in clean] == [set(e.info["blurry_classes"]) for e in clean]


def test_bad_ratios_name_the_parameter(many_classes) -> None:
    with pytest.raises(ConfigError, match=r"disjoint_ratio \(N\)"):
        si_blurry(many_classes, 5, 1.5)
    with pytest.raises(ConfigError, match=r"blurry_ratio \(M\)"):
        si_blurry(many_classes, 5, 0.5, -0.1)
