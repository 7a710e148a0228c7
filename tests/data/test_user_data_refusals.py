"""User data that used to give a silently wrong result or a traceback (issue 18): every case is now a
one-line :class:`LifelongError` naming the row, class, file or field and the fix."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from lifelong import ConfigError, DataError, from_arrays, split_arrays
from lifelong.data.files import csv, image_folder


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def test_a_class_with_one_sample_is_refused_not_scored_as_an_empty_test_set() -> None:
    # 6 classes of 30 samples and class 6 with 1: it cannot be both trained and tested. Before, the split
    # lost its stratification and experience 6 got an empty test set (scored 0.0)
    y = np.concatenate([np.repeat(np.arange(6), 30), [6]])
    x = np.random.default_rng(0).normal(size=(len(y), 4))
    with pytest.raises(DataError) as error:
        split_arrays(x, y)
    assert "class 6 has a single sample" in one_line(error) and "at least 2" in str(error.value)
    # two samples per class and a fraction of 1/4: stratification gives every class a test sample;
    # 2 samples of each of 8 classes with test_fraction 0.1 (2 test samples for 8 classes) cannot
    y = np.repeat(np.arange(8), 2)
    with pytest.raises(DataError) as error:
        split_arrays(np.zeros((16, 2)), y, test_fraction=0.1)
    assert "test_fraction=0.1" in one_line(error)


def test_labels_that_are_not_0_to_c_minus_1_are_refused_everywhere() -> None:
    # labels 10..15 made a 16-class model (10 outputs for classes that do not exist); 0, 2, ..., 10 an
    # 11-class one. One rule for numeric labels: the class ids 0..C-1 themselves
    x = np.random.default_rng(0).normal(size=(24, 3))
    for labels, missing in ((np.repeat(np.arange(10, 16), 4), "missing 0, 1, 2, 3, 4, ..."),
                            (np.repeat(np.arange(0, 12, 2), 4), "missing 1, 3, 5, 7, 9")):
        with pytest.raises(DataError) as error:
            split_arrays(x, labels)
        assert missing in one_line(error) and "np.unique(y, return_inverse=True)" in str(error.value)
        with pytest.raises(DataError, match="labels must be the class ids 0..C-1"):
            from_arrays("mine", x, labels, x[:4], labels[:4])
    # a class present in the test set only still counts as present: 0..2 over both parts is complete
    data = from_arrays("mine", x[:4], [0, 0, 1, 1], x[:3], [0, 1, 2])
    assert data.n_classes == 3


def test_split_arrays_refuses_string_labels_and_empty_arrays() -> None:
    with pytest.raises(DataError) as error:
        split_arrays(np.zeros((4, 2)), np.array(["cat", "dog", "cat", "dog"]))
    assert "as numbers, got dtype <U3" in one_line(error) and "np.unique" in str(error.value)
    with pytest.raises(DataError) as error:
        split_arrays(np.zeros((0, 2)), np.zeros(0))
    assert "x and y are empty" in one_line(error)
    with pytest.raises(DataError) as error:
        split_arrays([["a", "b"]], [0])
    assert "x must be an array of numbers" in one_line(error)


def test_csv_rows_name_the_row_for_empty_labels_and_ragged_rows(tmp_path) -> None:
    file = tmp_path / "table.csv"
    # row 4 has an empty label: it became a class of its own ("") before
    file.write_text("f1,f2,label\n1,2,a\n3,4,b\n5,6,\n7,8,a\n9,10,b\n")
    with pytest.raises(DataError) as error:
        csv(str(file))
    assert "row 4 of" in one_line(error) and "empty 'label' cell" in str(error.value)
    # a short row (2 fields) raised IndexError while reading its label
    file.write_text("f1,f2,label\n1,2,a\n3,4\n")
    with pytest.raises(DataError) as error:
        csv(str(file))
    assert "row 3 of" in one_line(error) and "has 2 fields, the header 3" in str(error.value)
    # blank lines are skipped, and row numbers stay those of the file
    file.write_text("f1,f2,label\n1,2,a\n\n3,4,b\n1,2,a\n3,4,b\n5,6,x\n")
    with pytest.raises(DataError, match="class .x. has a single sample"):
        csv(str(file))


def test_a_binary_file_or_a_directory_as_csv_is_named(tmp_path) -> None:
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError) as error:
        csv(str(binary))
    assert "is not a text CSV file (byte 128 is not UTF-8)" in one_line(error)
    with pytest.raises(DataError) as error:
        csv(str(tmp_path))
    assert "is a directory" in one_line(error)


def image_classes(root, per_class: int = 3) -> None:
    for name, colour in (("cats", 40), ("dogs", 200)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((6, 6, 3), colour + i, dtype=np.uint8)).save(root / name / f"{i}.png")


def test_corrupt_and_truncated_images_are_named_or_skipped_with_a_count(tmp_path, caplog) -> None:
    image_classes(tmp_path)
    (tmp_path / "cats" / "garbage.png").write_bytes(b"not an image at all")
    whole = (tmp_path / "dogs" / "0.png").read_bytes()
    (tmp_path / "dogs" / "cut.png").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(DataError) as error:
        image_folder(str(tmp_path))
    assert "garbage.png' is not a readable image" in one_line(error) and "skip_unreadable" in str(error.value)
    (tmp_path / "cats" / "garbage.png").unlink()
    with pytest.raises(DataError, match="cut.png' is not a readable image"):
        image_folder(str(tmp_path))
    (tmp_path / "cats" / "garbage.png").write_bytes(b"not an image at all")
    with caplog.at_level(logging.WARNING):
        data = image_folder(str(tmp_path), skip_unreadable=True)
    # 3 readable images per class, split 1/4 for testing with stratification: 2 + 2 train, 1 + 1 test
    assert len(data.y_train) == 4 and len(data.y_test) == 2
    assert "skipped 2 unreadable image(s)" in caplog.text


@pytest.mark.parametrize("size", [[8], [0, 0], [4, -1], [2, 3, 4]])
def test_image_size_must_be_two_positive_integers(tmp_path, size) -> None:
    image_classes(tmp_path)
    with pytest.raises(ConfigError) as error:
        image_folder(str(tmp_path), size=size)
    assert f"dataset.size must be [height, width], two positive integers, got {size}" in one_line(error)
    assert image_folder(str(tmp_path), size=[3, 2]).input_shape == (3, 3, 2)


def test_csv_class_names_still_numbered_in_sorted_order(tmp_path) -> None:
    # the named-label rule beside the numeric one: values numbered in sorted order (numbers by value)
    file = tmp_path / "t.csv"
    file.write_text("f,label\n" + "".join(f"{i},{label}\n" for i, label in enumerate(["10", "2", "b", "a"] * 3)))
    data = csv(str(file), test_fraction=0.34)
    # sorted names: 2, 10, a, b -> ids 0..3; each row's feature is its index, so label = index % 4 mapping
    order = {"10": 1, "2": 0, "b": 3, "a": 2}
    features = torch.cat([data.x_train[:, 0], data.x_test[:, 0]]).long().tolist()
    labels = torch.cat([data.y_train, data.y_test]).tolist()
    assert all(order[["10", "2", "b", "a"][f % 4]] == y for f, y in zip(features, labels, strict=True))
