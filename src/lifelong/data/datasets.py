"""Datasets as in-memory tensors with a fixed train/test split.

``digits`` is scikit-learn's ``load_digits``: 1,797 real 8x8 handwritten digits that ship inside the
package, so tests and the default run need no download (read without importing scikit-learn).
``synthetic`` makes seeded Gaussian clusters for fast tests.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lifelong.data.lazy import Inputs
from lifelong.data.split import train_test_indices
from lifelong.errors import DataError, MissingFileError


@dataclass(frozen=True)
class Dataset:
    """Train and test sets: ``x`` float (N, *input_shape) (tensors, or a lazy dataset's inputs,
    :mod:`lifelong.data.lazy`), ``y`` long (N,) in [0, n_classes)."""

    name: str
    x_train: Inputs
    y_train: torch.Tensor
    x_test: Inputs
    y_test: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def from_arrays(name: str, x_train: object, y_train: object, x_test: object, y_test: object,
                n_classes: int | None = None) -> Dataset:
    """A :class:`Dataset` from numpy arrays or tensors, checked: inputs finite, labels integer class ids.

    One rule for labels given as numbers: they are the class ids ``0..C-1`` themselves. Without
    ``n_classes`` every id from 0 to the largest must occur (in the training or the test set), so that
    no output of the model belongs to a class that does not exist; labels such as 10..15 or 0, 2, 4
    are refused with the fix (renumber them) rather than silently widening the model. With
    ``n_classes`` (a standard dataset whose class count is known, e.g. CIFAR-10) the ids must lie in
    ``[0, n_classes)``. Loaders of named labels (CSV cells, image sub-folders) number the names in
    sorted order before they get here."""
    xs, ys = [], []
    for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x_t = torch.as_tensor(_numbers(x, f"{name}: {part} inputs"), dtype=torch.float32)
        if x_t.ndim < 2 and x_t.numel():
            raise DataError(f"{name}: {part} inputs must have shape (samples, features...), got {tuple(x_t.shape)}; "
                            "reshape single features with x.reshape(-1, 1)")
        if not x_t.numel() and xs:
            x_t = x_t.reshape(0, *xs[0].shape[1:])  # an empty test set takes the training inputs' shape
        y_np = _numbers(y, f"{name}: {part} labels")
        if y_np.ndim != 1 or len(y_np) != len(x_t):
            raise DataError(f"{name}: {part} labels must be a 1-D array as long as the inputs "
                            f"({len(x_t)}), got shape {y_np.shape}")
        if len(y_np) and not np.issubdtype(y_np.dtype, np.integer):
            if not (np.all(np.isfinite(y_np)) and np.all(np.mod(y_np, 1) == 0)):
                raise DataError(f"{name}: {part} labels must be integer class ids, got dtype {y_np.dtype}")
        y_t = torch.as_tensor(y_np.astype(np.int64))
        if len(y_t) and int(y_t.min()) < 0:
            raise DataError(f"{name}: {part} labels must be >= 0, found {int(y_t.min())}")
        if not bool(torch.isfinite(x_t).all()):
            raise DataError(f"{name}: {part} inputs contain NaN or infinite values; clean them first")
        xs.append(x_t)
        ys.append(y_t)
    if len(ys[0]) == 0:
        raise DataError(f"{name}: the training set is empty")
    return Dataset(name, xs[0], ys[0], xs[1], ys[1], _class_count(name, torch.cat(ys), n_classes))


def _class_count(name: str, labels: torch.Tensor, n_classes: int | None) -> int:
    """The number of classes of ``labels`` (train and test together, non-negative), checked against the
    rule of :func:`from_arrays`."""
    largest = int(labels.max())
    if n_classes is not None:
        if largest >= n_classes:
            raise DataError(f"{name}: labels must lie in [0, {n_classes - 1}] ({n_classes} classes), found {largest}")
        return n_classes
    present = torch.unique(labels).tolist()
    if len(present) != largest + 1:
        missing = sorted(set(range(largest + 1)) - set(present))
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise DataError(f"{name}: labels must be the class ids 0..C-1, each present; found {len(present)} classes "
                        f"from {present[0]} to {largest}, missing {shown}; renumber them, e.g. "
                        "y = np.unique(y, return_inverse=True)[1] (over train and test together)")
    return largest + 1


def _numbers(values: object, what: str) -> np.ndarray:
    """``values`` as a numeric numpy array, or a :class:`DataError` saying why it is not one."""
    try:
        array = np.asarray(values)
    except ValueError as error:  # ragged nested lists
        raise DataError(f"{what} must form a rectangular array of numbers: {error}") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
        raise DataError(f"{what} must be real numbers, got dtype {array.dtype}; encode them as numbers first")
    return array


def digits(test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's handwritten digits (1,797 images of 8 x 8 pixels, 10 classes) as (1, 8, 8) images
    scaled to [0, 1]; stratified split with seed 0. The file is read from where scikit-learn keeps it,
    without importing scikit-learn (and scipy with it), and split by :func:`train_test_indices`, as
    scikit-learn's ``load_digits`` and ``train_test_split`` give it."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" \
        if spec is not None and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise MissingFileError("the digits dataset is the file scikit-learn installs (sklearn/datasets/data/"
                               "digits.csv.gz); install it with `pip install scikit-learn`")
    with gzip.open(path, mode="rt", encoding="utf-8") as lines:
        table = np.loadtxt(lines, delimiter=",")  # (1797, 65): 64 pixel values in 0..16, then the label
    x = table[:, :-1].reshape(-1, 1, 8, 8).astype(np.float32) / 16.0
    y = table[:, -1].astype(int)
    train, test = train_test_indices(y, test_fraction, seed=0)
    return from_arrays("digits", x[train], y[train], x[test], y[test])


def synthetic(n_classes: int = 10, n_features: int = 20, n_per_class: int = 100, spread: float = 1.0,
              test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Seeded Gaussian clusters: one centre per class drawn from N(0, 4 I), samples N(centre, spread^2 I)."""
    if n_classes < 2 or n_features < 1 or n_per_class < 2:
        raise DataError("dataset: synthetic needs n_classes >= 2, n_features >= 1 and n_per_class >= 2, "
                        f"got {n_classes}, {n_features}, {n_per_class}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"dataset.test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, size=(n_classes, n_features))
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[y] + rng.normal(0.0, spread, size=(len(y), n_features))
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    n_test_per_class = max(1, int(round(n_per_class * test_fraction)))
    if n_test_per_class >= n_per_class:
        raise DataError(f"dataset: test_fraction={test_fraction} of n_per_class={n_per_class} leaves no training "
                        "sample per class; lower dataset.test_fraction or raise dataset.n_per_class")
    test = np.zeros(len(y), dtype=bool)
    for c in range(n_classes):
        test[np.flatnonzero(y == c)[:n_test_per_class]] = True
    return from_arrays("synthetic", x[~test], y[~test], x[test], y[test])
