"""A user's ``torch.utils.data.Dataset`` as a :class:`~lifelong.data.datasets.Dataset` that is read
lazily (:mod:`lifelong.data.lazy`): scenarios split it by its labels, the runner reads its batches
through a ``DataLoader`` with worker processes, and only the labels are held in memory.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as MapDataset

from lifelong.data.datasets import Dataset
from lifelong.data.lazy import LazyInputs, LazySource, LoaderSettings, read_sample
from lifelong.errors import ConfigError, DataError, MissingFileError


def _labels(dataset: MapDataset, targets: Any, name: str, part: str) -> torch.Tensor:
    """The labels of ``dataset``: ``targets`` when given, else the dataset's own ``targets`` attribute
    (the torchvision convention), else the label of every sample read once."""
    if targets is None:
        targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [read_sample(dataset, i, f"{name} {part}")[1] for i in range(len(dataset))]  # type: ignore[arg-type]
    values = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets)
    if values.ndim != 1 or len(values) != len(dataset):  # type: ignore[arg-type]
        raise DataError(f"{name}: {part} targets must be one label per sample ({len(dataset)}), got shape "  # type: ignore[arg-type]
                        f"{values.shape}")
    if len(values) and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0):
        raise DataError(f"{name}: {part} targets must be integer class ids >= 0, got dtype {values.dtype}"
                        + (f" and minimum {values.min()}" if np.issubdtype(values.dtype, np.number) else ""))
    return torch.as_tensor(values.astype(np.int64))


def _sample_shape(dataset: MapDataset, name: str, part: str) -> tuple[int, ...]:
    if not len(dataset):  # type: ignore[arg-type]
        raise DataError(f"{name}: the {part} dataset is empty")
    return tuple(np.asarray(read_sample(dataset, 0, f"{name} {part}")[0]).shape)


def from_dataset(train: MapDataset, test: MapDataset, *, train_targets: Any = None, test_targets: Any = None,
                 n_classes: int | None = None, input_shape: Sequence[int] | None = None, name: str = "dataset",
                 num_workers: int = 0, pin_memory: bool = False) -> Dataset:
    """A lazily read :class:`Dataset` from two map-style datasets yielding ``(input, label)``.

    ``train_targets`` and ``test_targets`` (one integer label per sample) let scenarios split the data
    by class without reading a sample; without them the datasets' ``targets`` attribute is used, or
    every sample is read once for its label. ``num_workers`` worker processes read batches (0: the main
    process) and ``pin_memory`` page-locks them for fast copies to a GPU; the workers persist for the
    run. Inputs must all have one shape, ``input_shape`` (default: the first sample's, read once);
    ``n_classes`` defaults to the largest label + 1.
    """
    settings = LoaderSettings(num_workers=num_workers, pin_memory=pin_memory)
    labels = [_labels(train, train_targets, name, "train"), _labels(test, test_targets, name, "test")]
    if input_shape is not None:
        shape = tuple(int(side) for side in input_shape)
    else:
        shape = _sample_shape(train, name, "train")
        if len(test) and _sample_shape(test, name, "test") != shape:  # type: ignore[arg-type]
            raise DataError(f"{name}: test inputs have shape {_sample_shape(test, name, 'test')}, train inputs {shape}")
    largest = max(int(y.max()) for y in labels if len(y))
    classes = n_classes if n_classes is not None else largest + 1
    if classes <= largest:
        raise DataError(f"{name}: n_classes={classes} but a label is {largest}; raise n_classes")
    inputs = [LazyInputs(LazySource(dataset, y, shape, settings, f"{name} {part}"), torch.arange(len(y)))
              for dataset, y, part in ((train, labels[0], "train"), (test, labels[1], "test"))]
    return Dataset(name, inputs[0], labels[0], inputs[1], labels[1], classes)


def with_loader(dataset: Dataset, settings: LoaderSettings) -> Dataset:
    """``dataset`` read with other loader settings (workers, pinned memory); a dataset in memory is
    returned as it is."""
    parts = {}
    for field in ("x_train", "x_test"):
        inputs = getattr(dataset, field)
        if isinstance(inputs, LazyInputs):
            source = inputs.source
            parts[field] = LazyInputs(LazySource(source.dataset, source.targets, source.sample_shape, settings,
                                                 source.name), inputs.positions)
    return dataclasses.replace(dataset, **parts)


def _factory(reference: str) -> Any:
    """The callable named by ``module:function`` or ``path/to/file.py:function``."""
    module_name, _, function = reference.partition(":")
    if not module_name or not function:
        raise ConfigError(f"dataset.factory must be 'module:function' or 'path/to/file.py:function', got {reference!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise MissingFileError(f"dataset.factory: no such file {module_name!r}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ConfigError(f"dataset.factory: cannot import {module_name!r} ({error}); put it on PYTHONPATH or "
                              "give a file path 'path/to/file.py:function'") from None
    if not callable(getattr(module, function, None)):
        raise ConfigError(f"dataset.factory: {module_name!r} has no function {function!r}")
    return getattr(module, function)


def python(factory: str, options: dict[str, Any] | None = None, num_workers: int = 0,
           pin_memory: bool = False) -> Dataset:
    """A dataset built by the user's own code, for the command line: ``factory`` names a function
    (``module:function`` or ``path/to/file.py:function``) called with ``options`` that returns a
    :class:`Dataset` (e.g. from :func:`from_dataset`, or :func:`~lifelong.data.datasets.from_arrays`).
    A lazy one is read with ``num_workers`` worker processes and ``pin_memory``."""
    if num_workers < 0:
        raise ConfigError(f"dataset.num_workers must be >= 0 (0 reads in the main process), got {num_workers}")
    built = _factory(factory)(**(options or {}))
    if not isinstance(built, Dataset):
        raise ConfigError(f"dataset.factory: {factory!r} returned a {type(built).__name__}; return a "
                          "lifelong Dataset (lifelong.from_dataset or lifelong.from_arrays)")
    return with_loader(built, LoaderSettings(num_workers=num_workers, pin_memory=pin_memory))
