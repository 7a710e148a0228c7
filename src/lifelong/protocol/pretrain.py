"""Pretraining within the library (``lifelong pretrain``): plain supervised training of the configured model
on the configured dataset, or on some of its classes (a base session), saved as a backbone file.

No pretrained weights can be downloaded here, so a method that starts from a pretrained backbone (SimpleCIL,
RanPAC, SLCA, prompts and adapters: the PILOT and PyCIL setting, Zhou et al. 2023) starts from one the
library trained: this module trains it, through the one runner (a single experience of the chosen classes,
cross-entropy, the run's ``[optim]`` and ``[augment]`` settings), and writes the backbone with
:func:`~lifelong.models.weights.save_backbone`: a file that ``model.weights`` and the strategies'
``backbone_path`` load, and a sidecar JSON with the model and its settings, the dataset, the classes, the
seed and the accuracies. A Hugging Face model (``model.name = "hf"``) can be written instead, or too, as a
``save_pretrained`` folder (``run.save_pretrained``), which ``model.path`` reads back: backbone and head. Accuracy is measured on the training samples and on a stratified validation split
held out of the *training* set, so the dataset's test split stays unseen for the continual run that follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lifelong.config import Component, RunConfig, build
from lifelong.data.catalog import DATASETS
from lifelong.data.sampling import present_classes
from lifelong.data.split import train_test_indices
from lifelong.data.streams import Experience, Stream, TensorSet
from lifelong.data.text import TextCorpus
from lifelong.errors import ConfigError
from lifelong.experiment import build_model, build_stream, check_settings, resolve_config, run_config
from lifelong.models.weights import check_backbone_output, save_backbone
from lifelong.runner.evaluation import accuracy
from lifelong.strategies.naive import Naive


@dataclass(frozen=True)
class PretrainResult:
    """Where the backbone was written and how well the pretrained model classifies its classes."""

    path: Path | None
    """The backbone file (None without ``--output``)."""
    sidecar: Path | None
    classes: list[int]
    train_accuracy: float
    validation_accuracy: float
    train_samples: int
    validation_samples: int
    seconds: float


def base_classes(config: RunConfig) -> list[int]:
    """The classes of the first experience of the configured scenario (its base session)."""
    return list(build_stream(config)[0].classes)


def pretrain(config: RunConfig, output: str | Path | None, classes: Sequence[int] | None = None,
             validation_fraction: float = 0.1, progress: bool = False) -> PretrainResult:
    """Train the configured model on ``classes`` of the configured dataset (default: all) for
    ``optim.epochs`` epochs and write its backbone to ``output`` (``.safetensors`` by the suffix, else
    ``torch.save``) with a sidecar ``<stem>.json``, and (``run.save_pretrained``, a Hugging Face model) the
    whole model as a ``save_pretrained`` folder; one of the two at least. The head covers every class of the
    dataset; a backbone file holds only the backbone. ``model.freeze`` is the continual run's and is ignored
    here (the whole model trains); ``model.weights`` is honoured (pretraining continues from the file)."""
    model_params = {k: v for k, v in config.model.params.items() if k != "freeze"}
    config = config.model_copy(update={"model": Component(name=config.model.name, **model_params)})
    check_settings(config)
    if output is None and not config.run.save_pretrained:
        raise ConfigError("lifelong pretrain writes a backbone file (--output FILE) or a Hugging Face folder "
                          "(--set run.save_pretrained=FOLDER, model.name='hf'); give one of them")
    if output is not None:
        check_backbone_output(output)
    if not 0.0 < validation_fraction < 1.0:
        raise ConfigError(f"--validation-fraction must lie in (0, 1), got {validation_fraction}")
    dataset = build("dataset", DATASETS, config.dataset)
    if isinstance(dataset, TextCorpus):
        raise ConfigError(f"lifelong pretrain trains a classifier's backbone on labelled samples; dataset "
                          f"{config.dataset.name!r} is a text corpus: continue pre-training a language model with "
                          "lifelong run (scenario text_domains) instead")
    present = present_classes(dataset)
    chosen = sorted(set(classes)) if classes is not None else present
    unknown = sorted(set(chosen) - set(present))
    if not chosen or unknown:
        raise ConfigError(f"--classes must name classes of {dataset.name} ({present[0]}-{present[-1]}), "
                          f"got {list(classes or [])}")
    members = np.flatnonzero(np.isin(dataset.y_train.numpy(), chosen))
    train_part, validation_part = train_test_indices(dataset.y_train.numpy()[members], validation_fraction,
                                                     seed=config.run.seed)
    train_index, validation_index = members[np.sort(train_part)], members[np.sort(validation_part)]
    experience = Experience(
        train=TensorSet.of(dataset.x_train[train_index], dataset.y_train[train_index], 0),
        test=TensorSet.of(dataset.x_train[validation_index], dataset.y_train[validation_index], 0),
        classes=tuple(chosen), task_id=0, name="pretraining classes " + ",".join(map(str, chosen)))
    stream = Stream((experience,), dataset.n_classes, dataset.input_shape, name=f"{dataset.name} pretraining")
    model, strategy = build_model(config, stream), Naive()
    result = run_config(config, progress=progress, prepared=(stream, model, strategy))
    train_accuracy = accuracy(model, strategy, experience.train)
    validation_accuracy = float(result.matrix[0, 0])
    seconds = sum(cost.seconds for cost in result.costs)
    if output is None:
        return PretrainResult(None, None, chosen, train_accuracy, validation_accuracy, len(train_index),
                              len(validation_index), seconds)
    resolved = resolve_config(config)
    sidecar = save_backbone(model, output, {
        "model": resolved["model"], "dataset": resolved["dataset"], "input_shape": list(dataset.input_shape),
        "n_classes": dataset.n_classes, "classes": chosen, "seed": config.run.seed, "optim": resolved["optim"],
        "augment": resolved["augment"], "validation_fraction": validation_fraction,
        "train_samples": len(train_index), "validation_samples": len(validation_index),
        "train_accuracy": train_accuracy, "validation_accuracy": validation_accuracy, "seconds": seconds,
    })
    return PretrainResult(Path(output), sidecar, chosen, train_accuracy, validation_accuracy, len(train_index),
                          len(validation_index), seconds)
