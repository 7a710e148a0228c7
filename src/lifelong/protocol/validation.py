"""What a tuning trial trains on: the tuning stream's dataset with its test set replaced by a stratified
share of its training set (Cha and Cho 2024: never tune on the data a method is scored on). Used by
:mod:`lifelong.protocol.tune` here and by the launchers' jobs (:mod:`lifelong.protocol.launchers`) on other
machines."""

from __future__ import annotations

from sklearn.model_selection import train_test_split

from lifelong.config import RunConfig, build
from lifelong.data.catalog import DATASETS
from lifelong.data.datasets import Dataset
from lifelong.errors import ConfigError
from lifelong.experiment import Parts, build_model, build_strategy, build_stream

__all__ = ["check_tunable", "tuning_parts", "validation_split"]


def validation_split(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """The dataset with its test set replaced by a stratified ``fraction`` of its training set (and
    that part removed from training): what tuning may score on without seeing test data."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation_fraction must lie in (0, 1), got {fraction}")
    check_tunable(dataset)
    index = list(range(len(dataset.y_train)))
    train_index, validation_index = train_test_split(index, test_size=fraction, random_state=seed,
                                                     stratify=dataset.y_train.numpy())
    return Dataset(f"{dataset.name}-validation", dataset.x_train[train_index], dataset.y_train[train_index],
                   dataset.x_train[validation_index], dataset.y_train[validation_index], dataset.n_classes)


def tuning_parts(config: RunConfig, fraction: float, seed: int) -> Parts:
    """The stream, model and strategy of a tuning trial's run: the configured dataset with its test set
    replaced by the validation split (:func:`validation_split`), so the trial is scored on training data."""
    dataset = validation_split(build("dataset", DATASETS, config.dataset), fraction, seed)
    stream = build_stream(config, dataset=dataset)
    return stream, build_model(config, stream), build_strategy(config)


def check_tunable(dataset: object) -> None:
    """The protocol carves its validation split out of a labelled dataset's training set and maximises an
    accuracy: a text corpus, scored by its loss, is refused in one line."""
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"lifelong tune carves its validation split out of a labelled dataset's training set and "
                          f"maximises an accuracy; dataset {getattr(dataset, 'name', dataset)!r} is not one (a text "
                          "corpus is scored by its loss): compare settings with lifelong sweep or --seeds instead")
