"""Transfer from one dataset to another as a scenario: the classes of the configured dataset (the source),
then those of a second one (the target), as one class-incremental stream.

The two must share one input shape, so images are resized (bilinear, antialiased when shrinking) to the
source's shape or to ``input_shape``, and a one-channel image is repeated over the channels of a colour
stream (digits to Fashion-MNIST's 28 x 28 and back, MNIST beside CIFAR); inputs that are not images must
already have equal shapes. The target's labels are offset by the source's class count so that the two
label sets never collide. This is the cross-dataset protocol of e.g. "pretrain on one dataset, continue on
another" (the 5-datasets benchmark of Ebrahimi et al. 2020 concatenates datasets the same way); with
``source_experiences = 0`` the stream is the target alone, at the source's input shape, for a model
pretrained on the source by ``lifelong pretrain`` (:mod:`lifelong.protocol.pretrain`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lifelong.config import Component, build
from lifelong.data.catalog import DATASETS
from lifelong.data.datasets import Dataset
from lifelong.data.lazy import Inputs, LazyInputs
from lifelong.data.sampling import class_experiences, ordered_classes, split_classes
from lifelong.data.streams import Stream
from lifelong.errors import ConfigError


def transfer(dataset: Dataset, target: dict[str, Any], source_experiences: int = 1, n_experiences: int = 1,
             input_shape: Sequence[int] | None = None, shuffle: bool = False, seed: int = 0) -> Stream:
    """The source's classes (``dataset``) in ``source_experiences`` experiences, then the classes of the
    ``target`` dataset (a table like the dataset section, e.g. ``{name = "digits"}``) in ``n_experiences``, all
    at ``input_shape`` (default: the source's); target labels offset by the source's class count (none
    when ``source_experiences`` is 0 and the stream is the target alone). ``shuffle``: each dataset's
    classes in a seeded order."""
    if not isinstance(target, dict) or not isinstance(target.get("name"), str):
        raise ConfigError(f"scenario.target must be a dataset table with a name, e.g. {{name = \"digits\"}}, "
                          f"got {target!r}")
    if source_experiences < 0:
        raise ConfigError(f"scenario.source_experiences must be >= 0, got {source_experiences}")
    if input_shape is not None and (not input_shape or min(input_shape) < 1):
        raise ConfigError(f"scenario.input_shape must be a list of positive sizes, e.g. [1, 28, 28], got {input_shape}")
    second = build("scenario.target", DATASETS, Component(**target))
    shape = tuple(input_shape) if input_shape is not None else dataset.input_shape
    moved = resized(second, shape)
    target_groups = split_classes(ordered_classes(moved, None, shuffle, seed), n_experiences)
    if source_experiences == 0:
        return Stream(class_experiences(moved, target_groups), moved.n_classes, shape,
                      name=f"{second.name} at {dataset.name}'s shape {list(shape)}, {n_experiences} experiences")
    source = resized(dataset, shape)
    if source_experiences > len(ordered_classes(source, None, False, seed)):
        raise ConfigError(f"scenario.source_experiences must be at most {source.name}'s number of classes, "
                          f"got {source_experiences}")
    offset = source.n_classes
    combined = Dataset(f"{source.name}+{second.name}", torch.cat([source.x_train, moved.x_train]),
                       torch.cat([source.y_train, moved.y_train + offset]),
                       torch.cat([source.x_test, moved.x_test]), torch.cat([source.y_test, moved.y_test + offset]),
                       offset + moved.n_classes)
    source_groups = split_classes(ordered_classes(source, None, shuffle, seed), source_experiences)
    groups = source_groups + [tuple(c + offset for c in group) for group in target_groups]
    return Stream(class_experiences(combined, groups), combined.n_classes, shape,
                  name=f"{source.name} -> {second.name} transfer {source_experiences}+{n_experiences}")


def resized(dataset: Dataset, shape: tuple[int, ...]) -> Dataset:
    """``dataset`` with its inputs at ``shape`` (the module's rules), or itself when they already are."""
    if dataset.input_shape == shape:
        return dataset
    return Dataset(dataset.name, resize_inputs(dataset.x_train, shape, dataset.name), dataset.y_train,
                   resize_inputs(dataset.x_test, shape, dataset.name), dataset.y_test, dataset.n_classes)


def resize_inputs(x: Inputs, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """Images (N, C, H, W) at ``shape`` (C', H', W'): channels repeated from one, then bilinear resizing."""
    have = list(x.shape[1:])
    if isinstance(x, LazyInputs):
        raise ConfigError(f"scenario transfer: {name} is a lazy dataset of shape {have}, which is not resized; hold "
                          f"it in memory (ll.from_arrays) or give it the shape {list(shape)}")
    if len(shape) != 3 or x.ndim != 4:
        raise ConfigError(f"scenario transfer: {name} inputs of shape {have} cannot be made {list(shape)} (only "
                          "images (C, H, W) are resized); use datasets of equal shapes or set scenario.input_shape")
    if x.shape[1] != shape[0]:
        if x.shape[1] != 1:
            raise ConfigError(f"scenario transfer: {name} has {x.shape[1]} channels, the stream {shape[0]} (only "
                              "one channel is repeated to more); set scenario.input_shape")
        x = x.expand(-1, shape[0], -1, -1)
    if tuple(x.shape[2:]) != shape[1:]:
        x = F.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()
