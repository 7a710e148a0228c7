"""Scenario builders: ``(dataset, parameters, seed) -> Stream``.

* class-incremental: classes split into experiences, one head over all classes, no task id at test
  time (van de Ven & Tolias, "Three scenarios for continual learning", 2019);
* task-incremental: the same split, with the task id given at training and test time so logits are
  masked to the task's classes;
* base session + increments ("B-k Inc-m" of PyCIL/PILOT): class-incremental with a larger first
  experience, the usual protocol of methods that start from a pretrained or base-trained backbone;
* transfer (:mod:`lifelong.data.transfer`): the classes of one dataset, then those of another, resized
  to one input shape;
* domain-incremental: every experience holds all classes under its own input transform (pixel
  permutation, as in permuted MNIST, Goodfellow et al. 2013; or rotation);
* text_domains: one language-modelling experience per text domain, a budget of tokens each
  (:mod:`lifelong.data.text`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lifelong.data.blurry import si_blurry
from lifelong.data.datasets import Dataset
from lifelong.data.fewshot import few_shot
from lifelong.data.hierarchical import hierarchical
from lifelong.data.lazy import LazyInputs
from lifelong.data.recurring import recurring
from lifelong.data.sampling import class_experiences, ordered_classes, split_classes
from lifelong.data.streams import Experience, Stream, TensorSet
from lifelong.data.text import text_domains
from lifelong.data.transfer import transfer
from lifelong.errors import ConfigError


def _by_classes(dataset: Dataset, groups: Sequence[tuple[int, ...]], task_aware: bool, label: str) -> Stream:
    kind = "task" if task_aware else "class"
    return Stream(class_experiences(dataset, groups), dataset.n_classes, dataset.input_shape, task_aware,
                  name=f"{dataset.name} {kind}-incremental {label}")


def class_incremental(dataset: Dataset, n_experiences: int = 5, class_order: Sequence[int] | None = None,
                      shuffle: bool = False, seed: int = 0) -> Stream:
    """New classes in every experience; one head over all classes; no task id at test time."""
    groups = split_classes(ordered_classes(dataset, class_order, shuffle, seed), n_experiences)
    return _by_classes(dataset, groups, task_aware=False, label=str(n_experiences))


def task_incremental(dataset: Dataset, n_experiences: int = 5, class_order: Sequence[int] | None = None,
                     shuffle: bool = False, seed: int = 0) -> Stream:
    """The class-incremental split with task ids known at training and test time (masked logits)."""
    groups = split_classes(ordered_classes(dataset, class_order, shuffle, seed), n_experiences)
    return _by_classes(dataset, groups, task_aware=True, label=str(n_experiences))


def base_increment(dataset: Dataset, base_classes: int, increment: int, class_order: Sequence[int] | None = None,
                   shuffle: bool = True, seed: int = 0, task_aware: bool = False) -> Stream:
    """"B-k Inc-m": a base session of ``base_classes`` classes, then ``increment`` new classes per experience,
    the last taking what remains when the rest does not divide (PyCIL's ``DataManager``, Zhou et al. 2023;
    PILOT). The order is a seeded permutation of the classes by default, as in PyCIL (which fixes seed
    1993 and shuffles by it); ``class_order`` gives it explicitly. ``task_aware``: the task-incremental
    variant (task ids at test time)."""
    order = ordered_classes(dataset, class_order, shuffle, seed)
    if not 1 <= base_classes <= len(order):
        raise ConfigError(f"scenario.base_classes must lie in [1, {len(order)}] (the number of classes), "
                          f"got {base_classes}")
    if increment < 1:
        raise ConfigError(f"scenario.increment must be >= 1 (new classes per experience after the base session), "
                          f"got {increment}")
    groups = [tuple(order[:base_classes])] + [tuple(order[start:start + increment])
                                              for start in range(base_classes, len(order), increment)]
    return _by_classes(dataset, groups, task_aware, label=f"B{base_classes} Inc{increment}")


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate images (N, C, H, W) by ``degrees`` about their centre (bilinear, zero padding)."""
    angle = math.radians(degrees)
    theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0],
                          [math.sin(angle), math.cos(angle), 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def domain_incremental(dataset: Dataset, n_experiences: int = 5, transform: str = "permutation",
                       max_rotation: float = 180.0, seed: int = 0, task_aware: bool = False) -> Stream:
    """All classes in every experience, each experience under its own input transform.

    ``permutation``: experience 0 sees the original inputs, each later one a seeded fixed permutation
    of the input features. ``rotation``: experience k rotates images by ``k * max_rotation / n``
    degrees (inputs must be images (C, H, W)). ``task_aware``: each sample's experience index is given
    at test time too (the task-incremental permuted/rotated MNIST of the parameter-isolation papers), for
    methods that pick parameters by task; otherwise the model must serve every domain unaided.
    """
    if n_experiences < 1:
        raise ConfigError(f"scenario.n_experiences must be >= 1, got {n_experiences}")
    if transform not in ("permutation", "rotation"):
        raise ConfigError(f"scenario.transform must be 'permutation' or 'rotation', got {transform!r}")
    if transform == "rotation" and len(dataset.input_shape) != 3:
        raise ConfigError(f"scenario.transform='rotation' needs image inputs (C, H, W), "
                          f"dataset {dataset.name} has shape {dataset.input_shape}; use 'permutation'")
    if isinstance(dataset.x_train, LazyInputs):
        raise ConfigError(f"scenario domain_incremental transforms every input of {dataset.name}, which is a lazy "
                          "dataset read when trained on; apply the transform in the Dataset's __getitem__ and "
                          "build the stream with task_incremental or class_incremental, or hold the data in memory "
                          "(ll.from_arrays)")
    generator = torch.Generator().manual_seed(seed)
    n_features = int(np.prod(dataset.input_shape))
    classes = tuple(sorted(set(dataset.y_train.tolist())))
    experiences = []
    for task_id in range(n_experiences):
        if transform == "permutation":
            perm = torch.arange(n_features) if task_id == 0 else torch.randperm(n_features, generator=generator)

            def apply(x: torch.Tensor, perm: torch.Tensor = perm) -> torch.Tensor:
                return x.reshape(len(x), -1)[:, perm].reshape(x.shape)
            name = "identity" if task_id == 0 else f"permutation {task_id}"
        else:
            degrees = task_id * max_rotation / n_experiences

            def apply(x: torch.Tensor, degrees: float = degrees) -> torch.Tensor:
                return rotate(x, degrees) if degrees else x.clone()
            name = f"rotation {degrees:g}"
        experiences.append(Experience(
            train=TensorSet.of(apply(dataset.x_train), dataset.y_train, task_id),
            test=TensorSet.of(apply(dataset.x_test), dataset.y_test, task_id),
            classes=classes, task_id=task_id, name=name,
        ))
    kind = "task-aware domain-incremental" if task_aware else "domain-incremental"
    return Stream(tuple(experiences), dataset.n_classes, dataset.input_shape, task_aware=task_aware,
                  name=f"{dataset.name} {kind} {transform} {n_experiences}")


SCENARIOS = {
    "class_incremental": class_incremental,
    "task_incremental": task_incremental,
    "domain_incremental": domain_incremental,
    "si_blurry": si_blurry,
    "few_shot": few_shot,
    "hierarchical": hierarchical,
    "recurring": recurring,
    "text_domains": text_domains,
    "base_increment": base_increment,
    "transfer": transfer,
}
