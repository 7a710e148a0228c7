"""The pretrained-backbone protocols as scenarios: "B-k Inc-m" (base session + increments) and transfer from
one dataset to another (inputs resized to one shape, labels offset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lifelong.data import from_arrays
from lifelong.data.scenarios import SCENARIOS
from lifelong.errors import ConfigError


def labelled(n_classes: int, shape: tuple[int, ...], per_class: int = 3, name: str = "hand") -> object:
    """``per_class`` training and one test sample per class; every pixel of a sample holds its label + 1."""
    y_train, y_test = np.repeat(np.arange(n_classes), per_class), np.arange(n_classes)
    x_train = np.broadcast_to((y_train + 1.0).reshape(-1, *[1] * len(shape)), (len(y_train), *shape)).copy()
    x_test = np.broadcast_to((y_test + 1.0).reshape(-1, *[1] * len(shape)), (len(y_test), *shape)).copy()
    return from_arrays(name, x_train, y_train, x_test, y_test)


def test_base_session_then_increments_of_m_classes_the_last_taking_the_rest() -> None:
    stream = SCENARIOS["base_increment"](labelled(8, (2,)), base_classes=3, increment=2, shuffle=False)
    assert [e.classes for e in stream] == [(0, 1, 2), (3, 4), (5, 6), (7,)]
    assert [len(e.train) for e in stream] == [9, 6, 6, 3] and stream.name == "hand class-incremental B3 Inc2"
    ordered = SCENARIOS["base_increment"](labelled(8, (2,)), 4, 4, class_order=[7, 6, 5, 4, 3, 2, 1, 0])
    assert [e.classes for e in ordered] == [(7, 6, 5, 4), (3, 2, 1, 0)]
    shuffled = [e.classes for e in SCENARIOS["base_increment"](labelled(8, (2,)), 2, 3, seed=5)]
    assert shuffled == [e.classes for e in SCENARIOS["base_increment"](labelled(8, (2,)), 2, 3, seed=5)]
    assert [len(c) for c in shuffled] == [2, 3, 3] and sorted(sum(shuffled, ())) == list(range(8))
    assert shuffled != [(0, 1), (2, 3, 4), (5, 6, 7)]  # seeded permutation by default, as in PyCIL
    with pytest.raises(ConfigError, match=r"scenario.base_classes must lie in \[1, 8\]"):
        SCENARIOS["base_increment"](labelled(8, (2,)), 9, 1)
    with pytest.raises(ConfigError, match="scenario.increment must be >= 1"):
        SCENARIOS["base_increment"](labelled(8, (2,)), 3, 0)


def target_file(tmp_path, n_classes: int, shape: tuple[int, ...]) -> dict:
    """A ``scenario.target`` table naming a dataset built by a function in a file (``dataset.name = python``)."""
    module = tmp_path / f"target_{n_classes}_{'x'.join(map(str, shape))}.py"
    module.write_text("from tests.data.test_protocol_scenarios import labelled\n\n"
                      f"def build():\n    return labelled({n_classes}, {shape}, per_class=2, name='second')\n")
    return {"name": "python", "factory": f"{module}:build"}


def test_transfer_resizes_the_target_and_offsets_its_labels(tmp_path) -> None:
    source = labelled(3, (1, 4, 4))
    stream = SCENARIOS["transfer"](source, target_file(tmp_path, 4, (1, 2, 2)), source_experiences=1, n_experiences=2)
    assert stream.input_shape == (1, 4, 4) and stream.n_classes == 7
    assert [e.classes for e in stream] == [(0, 1, 2), (3, 4), (5, 6)]
    for experience in stream:
        assert experience.train.x.shape[1:] == (1, 4, 4)
        # a constant image resized stays that constant: the target's value (its own label + 1) travels with it
        offset = 0 if experience.task_id == 0 else 3
        assert torch.equal(experience.train.x[:, 0, 0, 0], experience.train.y.float() - offset + 1)
    assert [len(e.train) for e in stream] == [9, 4, 4] and [len(e.test) for e in stream] == [3, 2, 2]
    alone = SCENARIOS["transfer"](source, target_file(tmp_path, 4, (1, 2, 2)), source_experiences=0, n_experiences=2)
    assert [e.classes for e in alone] == [(0, 1), (2, 3)] and alone.n_classes == 4 and alone.input_shape == (1, 4, 4)
    colour = SCENARIOS["transfer"](labelled(3, (3, 4, 4)), target_file(tmp_path, 4, (1, 2, 2)))
    assert colour[1].train.x.shape[1:] == (3, 4, 4)  # one channel repeated over three


def test_transfer_refuses_shapes_it_cannot_make_equal_in_one_line(tmp_path) -> None:
    cases = ((labelled(3, (5,)), target_file(tmp_path, 4, (1, 2, 2)),
              r"^scenario transfer: second inputs of shape \[1, 2, 2\] cannot be made \[5\] \(only images"),
             (labelled(3, (2, 4, 4)), target_file(tmp_path, 4, (3, 2, 2)),
              r"^scenario transfer: second has 3 channels, the stream 2"),
             (labelled(3, (1, 4, 4)), {"path": "x"}, r"^scenario.target must be a dataset table with a name"))
    for source, target, message in cases:
        with pytest.raises(ConfigError, match=message) as error:
            SCENARIOS["transfer"](source, target)
        assert "\n" not in str(error.value)


def test_transfer_from_digits_to_fashion_mnist_at_digits_shape() -> None:
    """The real pair: digits (8 x 8) then Fashion-MNIST shrunk to 8 x 8, labels 10-19."""
    path = "/usr/share/datasets/fashion-mnist"
    if not Path(path).is_dir():
        pytest.skip("the dataset-fashion-mnist package is not installed")
    from lifelong.data import digits

    stream = SCENARIOS["transfer"](digits(), {"name": "fashion_mnist", "path": path}, 1, 1)
    assert stream.n_classes == 20 and stream.input_shape == (1, 8, 8)
    assert stream[1].classes == tuple(range(10, 20)) and len(stream[1].train) == 60000
    assert 0.0 <= float(stream[1].train.x.min()) and float(stream[1].train.x.max()) <= 1.0
