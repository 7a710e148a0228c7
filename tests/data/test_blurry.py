"""Si-Blurry statistics on generated streams match the requested N and M within sampling error."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lifelong.data import synthetic
from lifelong.data.blurry import si_blurry
from lifelong.errors import ConfigError


@pytest.fixture(scope="module")
def many_classes():
    return synthetic(n_classes=20, n_features=2, n_per_class=200, seed=1)


def test_disjoint_and_blurry_classes_follow_n_and_m(many_classes) -> None:
    n_experiences, disjoint_ratio, blurry_ratio = 5, 0.4, 0.2
    stream = si_blurry(many_classes, n_experiences, disjoint_ratio, blurry_ratio, seed=3)
    disjoint = [c for e in stream for c in e.info["disjoint_classes"]]
    blurry = [c for e in stream for c in e.info["blurry_classes"]]
    assert len(disjoint) == 8 and len(blurry) == 12 and sorted(disjoint + blurry) == list(range(20))
    assert [len(e.info["blurry_classes"]) for e in stream] == [3, 3, 2, 2, 2]  # dealt out evenly
    home = {c: i for i, e in enumerate(stream) for c in e.info["blurry_classes"]}
    per_class = {c: int((many_classes.y_train == c).sum()) for c in blurry}
    leaked = Counter()  # (class, experience) -> samples outside the home experience
    for i, e in enumerate(stream):
        for c, n in Counter(e.train.y.tolist()).items():
            if c in home and home[c] != i:
                leaked[c, i] += n
    # M of each blurry class's samples leak (150 per class: exactly 30)
    for c in blurry:
        assert sum(n for (k, _), n in leaked.items() if k == c) == round(blurry_ratio * per_class[c]) == 30
    # each leaked sample picks one of the 4 other experiences uniformly: 30 / 4 = 7.5 each, sd 2.4
    counts = np.array([leaked[c, i] for c in blurry for i in range(n_experiences) if i != home[c]])
    assert abs(counts.mean() - 7.5) < 1e-9
    assert 1.5 < counts.std() < 3.5
    # imbalance: in an experience, a home class has 120 samples, a leaked class about 7.5
    sizes = Counter(stream[0].train.y.tolist())
    assert max(sizes.values()) >= 120 and min(sizes.values()) <= 15


def test_classes_per_experience_vary_with_the_seed(many_classes) -> None:
    counts = {tuple(len(e.info["disjoint_classes"]) for e in si_blurry(many_classes, 5, 0.5, 0.1, seed=s))
              for s in range(6)}
    assert len(counts) > 1  # random cut points: the number of new classes per experience varies
    assert all(sum(c) == 10 for c in counts)


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
