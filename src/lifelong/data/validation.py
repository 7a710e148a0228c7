"""Checks that a stream's data can be trained on, run when a :class:`~lifelong.data.streams.Stream` is
built, so that a mistake in the data surfaces as one :class:`~lifelong.errors.DataError` naming the
experience and the fix, instead of a shape error or a silent zero accuracy deep inside training.

The checks take plain tensors and values, not the stream's types: :mod:`lifelong.data.streams` calls
them from its constructors (``Stream`` walks its experiences there), so this module sits below it and
imports nothing of it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lifelong.data.lazy import LazyInputs
from lifelong.errors import DataError


def check_tensors(x: object, y: object, task: object) -> None:
    """The types a :class:`TensorSet` needs: tensors (or a lazy dataset's inputs), floating-point inputs or
    integer ones (token ids of a text stream, (N, L)), integer labels and task ids."""
    if isinstance(x, LazyInputs):
        x = torch.zeros((0, *x.shape[1:]))  # its type and shape are what a dataset view declares
    for name, value in (("x", x), ("y", y), ("task", task)):
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{name} must be a torch.Tensor, got {type(value).__name__}; convert it with "
                            "torch.as_tensor or build the dataset with from_arrays")
    assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and isinstance(task, torch.Tensor)
    if x.dtype.is_complex or x.dtype == torch.bool or x.ndim < 1:
        raise DataError(f"inputs x must be a floating-point tensor (N, ...) or integer token ids (N, L), got dtype "
                        f"{x.dtype} and shape {tuple(x.shape)}; convert with x.float()")
    for name, value in (("labels y", y), ("task ids", task)):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise DataError(f"{name} must be an integer tensor, got dtype {value.dtype}; convert with .long()")


def check_set(x: torch.Tensor, y: torch.Tensor, where: str, n_classes: int, input_shape: tuple[int, ...]) -> None:
    """Of a sample set with inputs ``x`` and labels ``y``: labels in ``[0, n_classes)``, inputs of
    ``input_shape`` and finite (a lazy dataset's inputs are not read here: their shape and labels are
    checked on every batch read, and a non-finite input stops training at its first loss)."""
    if not len(y):
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= n_classes:
        raise DataError(f"{where} labels must lie in [0, {n_classes - 1}], found [{low}, {high}]; relabel the "
                        "data or raise n_classes")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(f"{where} inputs have shape {tuple(x.shape[1:])}, the stream declares "
                        f"{tuple(input_shape)}")
    if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise DataError(f"{where} inputs contain NaN or infinite values; clean or impute them before building "
                        "the stream")


def check_task_classes(test_labels: torch.Tensor, classes: Sequence[int], index: int) -> None:
    """In a task-incremental stream every test label of an experience (``test_labels``) must be one of
    its task's ``classes``: the logits of the others are masked, so such samples could never be predicted."""
    stray = sorted(set(test_labels.tolist()) - set(classes))
    if stray:
        raise DataError(f"experience {index}: test labels {stray} are never trained in its task (classes "
                        f"{list(classes)}); in a task-incremental stream drop those test samples or "
                        "add the classes to the experience")


def check_stream_shape(experiences: Sequence[object], n_classes: int) -> None:
    """A stream has at least one experience and at least one class."""
    if not experiences:
        raise DataError("a stream needs at least one experience")
    if n_classes < 1:
        raise DataError(f"a stream needs n_classes >= 1, got {n_classes}")
