"""Property tests on every scenario builder: each sample of the dataset carries its own id as its only
input feature, so a stream can be checked to partition the data it was built from."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lifelong.data import Dataset, Stream, from_arrays
from lifelong.data.scenarios import SCENARIOS

FAST = settings(max_examples=20, deadline=None)


def id_dataset(n_classes: int, n_train: int, n_test: int, seed: int) -> Dataset:
    """Train ids 0..N-1 and test ids N.., ``n_train`` (``n_test``) samples per class, labels shuffled."""
    rng = np.random.default_rng(seed)
    y_train = rng.permutation(np.repeat(np.arange(n_classes), n_train))
    y_test = rng.permutation(np.repeat(np.arange(n_classes), n_test))
    x_train = np.arange(len(y_train), dtype=np.float32)[:, None]
    x_test = (len(y_train) + np.arange(len(y_test), dtype=np.float32))[:, None]
    return from_arrays("ids", x_train, y_train, x_test, y_test)


def ids(data) -> list[int]:
    return data.x[:, 0].long().tolist()


def train_ids(stream: Stream) -> list[int]:
    return [i for e in stream for i in ids(e.train)]


def check_common(stream: Stream, again: Stream, dataset: Dataset) -> None:
    """Test sets hold test samples only, labels are the dataset's (or a declared relabelling), and the same
    seed gives the same stream."""
    n_train = len(dataset.y_train)
    for e in stream:
        assert all(i < n_train for i in ids(e.train))
        assert all(i >= n_train for i in ids(e.test))
        assert set(e.train.y.tolist()) <= set(e.classes) or e.info.get("level") == "coarse"
        assert (e.train.task == e.task_id).all() and (e.test.task == e.task_id).all()
    for a, b in zip(stream, again, strict=True):
        assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
        assert torch.equal(a.test.x, b.test.x) and a.classes == b.classes


def fine_labels_kept(stream: Stream, dataset: Dataset) -> bool:
    truth = torch.cat([dataset.y_train, dataset.y_test])
    return all(torch.equal(truth[e.train.x[:, 0].long()], e.train.y) for e in stream
               if e.info.get("level") != "coarse")


datasets = st.builds(id_dataset, st.integers(3, 8), st.integers(4, 12), st.integers(1, 4), st.integers(0, 99))


@FAST
@given(dataset=datasets, data=st.data(), seed=st.integers(0, 99))
def test_class_and_task_incremental_partition(dataset: Dataset, data, seed: int) -> None:
    n = data.draw(st.integers(1, dataset.n_classes))
    for name in ("class_incremental", "task_incremental"):
        build = SCENARIOS[name]
        stream = build(dataset, n, shuffle=True, seed=seed)
        check_common(stream, build(dataset, n, shuffle=True, seed=seed), dataset)
        assert sorted(train_ids(stream)) == list(range(len(dataset.y_train)))
        assert sorted(i for e in stream for i in ids(e.test)) == list(range(len(dataset.y_train),
                                                                            len(dataset.y_train) + len(dataset.y_test)))
        assert fine_labels_kept(stream, dataset)


@FAST
@given(dataset=datasets, n=st.integers(1, 4), seed=st.integers(0, 99))
def test_domain_incremental_repeats_all_data_per_domain(dataset: Dataset, n: int, seed: int) -> None:
    stream = SCENARIOS["domain_incremental"](dataset, n, seed=seed)  # one feature: permutations are identities
    check_common(stream, SCENARIOS["domain_incremental"](dataset, n, seed=seed), dataset)
    assert all(sorted(ids(e.train)) == list(range(len(dataset.y_train))) for e in stream)


@FAST
@given(dataset=datasets, data=st.data(), disjoint=st.floats(0, 1), blurry=st.floats(0, 1), seed=st.integers(0, 99))
def test_si_blurry_partitions_training_and_test_data(dataset: Dataset, data, disjoint: float, blurry: float,
                                                     seed: int) -> None:
    n = data.draw(st.integers(1, dataset.n_classes))
    stream = SCENARIOS["si_blurry"](dataset, n, disjoint, blurry, seed=seed)
    check_common(stream, SCENARIOS["si_blurry"](dataset, n, disjoint, blurry, seed=seed), dataset)
    assert sorted(train_ids(stream)) == list(range(len(dataset.y_train)))
    assert sorted(i for e in stream for i in ids(e.test)) == list(range(len(dataset.y_train),
                                                                        len(dataset.y_train) + len(dataset.y_test)))
    assert fine_labels_kept(stream, dataset)
    disjoint_classes = [c for e in stream for c in e.info["disjoint_classes"]]
    assert len(disjoint_classes) == round(disjoint * dataset.n_classes)
    for c in disjoint_classes:  # a disjoint class lives in one experience only
        assert sum(c in e.train.y.tolist() for e in stream) == 1


@FAST
@given(dataset=datasets, data=st.data(), k_shot=st.integers(1, 4), seed=st.integers(0, 99))
def test_few_shot_sessions_hold_k_shots_per_new_class(dataset: Dataset, data, k_shot: int, seed: int) -> None:
    base = data.draw(st.integers(1, dataset.n_classes - 1))
    divisors = [d for d in range(1, dataset.n_classes - base + 1) if (dataset.n_classes - base) % d == 0]
    n_way = data.draw(st.sampled_from(divisors))
    stream = SCENARIOS["few_shot"](dataset, base, n_way, k_shot, shuffle=True, seed=seed)
    check_common(stream, SCENARIOS["few_shot"](dataset, base, n_way, k_shot, shuffle=True, seed=seed), dataset)
    assert len(stream) == 1 + (dataset.n_classes - base) // n_way
    assert len(stream[0].train) == base * int((dataset.y_train == 0).sum())
    for e in stream.experiences[1:]:
        assert Counter(e.train.y.tolist()) == {c: k_shot for c in e.classes}
    assert len(set(train_ids(stream))) == len(train_ids(stream))
    assert sorted(i for e in stream for i in ids(e.test)) == list(range(len(dataset.y_train),
                                                                        len(dataset.y_train) + len(dataset.y_test)))
    assert fine_labels_kept(stream, dataset)


@FAST
@given(dataset=datasets, data=st.data(), fraction=st.floats(0.1, 0.9), seed=st.integers(0, 99))
def test_hierarchical_uses_every_training_sample_once(dataset: Dataset, data, fraction: float, seed: int) -> None:
    n_coarse = data.draw(st.integers(2, dataset.n_classes - 1))
    stream = SCENARIOS["hierarchical"](dataset, n_coarse, fraction, seed=seed)
    check_common(stream, SCENARIOS["hierarchical"](dataset, n_coarse, fraction, seed=seed), dataset)
    assert sorted(train_ids(stream)) == list(range(len(dataset.y_train)))
    coarse, fine = stream[0], stream.experiences[1:]
    assert len(coarse.test) == len(dataset.y_test)  # every test sample at the coarse level
    assert sorted(i for e in fine for i in ids(e.test)) == sorted(ids(coarse.test))  # and once at the fine level
    assert set(coarse.train.y.tolist()) <= set(range(dataset.n_classes, dataset.n_classes + n_coarse))
    # a fine sample's coarse label is the parent of its experience
    assert all(e.info["parent"] == dataset.n_classes + g for g, e in enumerate(fine))
    assert fine_labels_kept(stream, dataset)


@FAST
@given(dataset=datasets, n=st.integers(1, 4), alpha=st.floats(0, 3), seed=st.integers(0, 99))
def test_recurring_deals_each_sample_once(dataset: Dataset, n: int, alpha: float, seed: int) -> None:
    per_experience = min(2, dataset.n_classes)
    stream = SCENARIOS["recurring"](dataset, n, per_experience, alpha, seed=seed)
    check_common(stream, SCENARIOS["recurring"](dataset, n, per_experience, alpha, seed=seed), dataset)
    used = train_ids(stream)
    appearing = sorted(stream.classes)
    assert sorted(used) == sorted(i for i, y in enumerate(dataset.y_train.tolist()) if y in appearing)
    assert all(len(e.classes) == per_experience for e in stream)
    assert fine_labels_kept(stream, dataset)
