import torch
import pytest

from lifelong.data import TensorSet, class_incremental, domain_incremental, task_incremental
from lifelong.data.loader import batches, epoch_order
from lifelong.errors import ConfigError, DataError


def test_class_incremental_splits_classes_in_order(digits_data) -> None:
    stream = class_incremental(digits_data, 5)
    assert [e.classes for e in stream] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert sum(len(e.train) for e in stream) == len(digits_data.y_train)
    assert sum(len(e.test) for e in stream) == len(digits_data.y_test)
    for e in stream:
        assert set(e.train.y.tolist()) == set(e.classes) == set(e.test.y.tolist())
        assert (e.train.task == e.task_id).all()
    assert stream.task_mask() is None
    assert stream.classes == tuple(range(10))


def test_given_order_and_seeded_shuffle(digits_data) -> None:
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert class_incremental(digits_data, 2, class_order=order)[0].classes == (9, 8, 7, 6, 5)
    a = class_incremental(digits_data, 5, shuffle=True, seed=3)
    b = class_incremental(digits_data, 5, shuffle=True, seed=3)
    c = class_incremental(digits_data, 5, shuffle=True, seed=4)
    assert [e.classes for e in a] == [e.classes for e in b] != [e.classes for e in c]
    with pytest.raises(ConfigError, match="class_order"):
        class_incremental(digits_data, 5, class_order=[0, 1, 2])
    with pytest.raises(ConfigError, match="n_experiences"):
        class_incremental(digits_data, 11)


def test_task_incremental_mask(digits_data) -> None:
    stream = task_incremental(digits_data, 5)
    mask = stream.task_mask()
    assert mask is not None and mask.shape == (5, 10)
    assert mask[1].nonzero().flatten().tolist() == [2, 3]
    assert mask.sum() == 10


def test_domain_incremental_permutation_keeps_labels_and_pixels(digits_data) -> None:
    stream = domain_incremental(digits_data, 3, transform="permutation", seed=0)
    assert all(e.classes == tuple(range(10)) for e in stream)
    first, second = stream[0].train.x.flatten(1), stream[1].train.x.flatten(1)
    assert torch.equal(first, digits_data.x_train.flatten(1))
    assert not torch.equal(first, second)
    # a permutation moves pixels but keeps each image's multiset of values
    assert torch.equal(first.sort(dim=1).values, second.sort(dim=1).values)
    assert torch.equal(stream[1].train.y, digits_data.y_train)


def test_domain_incremental_rotation_by_180_flips(digits_data) -> None:
    stream = domain_incremental(digits_data, 2, transform="rotation", max_rotation=360.0)
    rotated = stream[1].test.x  # 180 degrees
    assert torch.allclose(rotated, digits_data.x_test.flip(-1).flip(-2), atol=1e-5)


def test_loader_slices_every_sample_once_in_a_seeded_order() -> None:
    data = TensorSet.of(torch.arange(10.0).unsqueeze(1), torch.arange(10), 0)
    order = epoch_order(10, seed=1, experience=0, epoch=0)
    assert torch.equal(order, epoch_order(10, seed=1, experience=0, epoch=0))
    assert not torch.equal(order, epoch_order(10, seed=1, experience=0, epoch=1))
    seen = torch.cat([b.y for b in batches(data, order, 4)])
    assert [len(b.y) for b in batches(data, order, 4)] == [4, 4, 2]
    assert torch.equal(seen, order)
    assert torch.equal(torch.cat([b.y for b in batches(data, order, 4, start=1)]), order[4:])


def test_stream_rejects_bad_data(small_data) -> None:
    stream = class_incremental(small_data, 3)
    bad = TensorSet.of(torch.full((2, 8), float("nan")), torch.tensor([0, 1]), 0)
    with pytest.raises(DataError, match="NaN"):
        type(stream)((type(stream[0])(bad, bad, (0, 1), 0),), 6, (8,))
    labels = TensorSet.of(torch.zeros(2, 8), torch.tensor([0, 7]), 0)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 5\]"):
        type(stream)((type(stream[0])(labels, labels, (0, 7), 0),), 6, (8,))
    empty = TensorSet.of(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), 0)
    with pytest.raises(DataError, match="empty training set"):
        type(stream[0])(empty, empty, (0,), 0)


def test_synthetic_split_without_training_samples_names_the_fields() -> None:
    from lifelong.data import synthetic

    with pytest.raises(DataError, match="lower dataset.test_fraction or raise dataset.n_per_class"):
        synthetic(n_per_class=2, test_fraction=0.8)
