"""Hugging Face ``datasets`` read from local files (``dataset.name = "hf"``): a folder that
``save_to_disk`` wrote, or Parquet, Arrow, JSON-lines, CSV or image files read through
``datasets.load_dataset(<builder>, data_files=...)`` (a folder: ``data_dir=...``), nothing downloaded.
``datasets`` is an optional dependency (``pip install 'lifelong[datasets]'``), imported only when such a
dataset is built.

Two kinds of dataset come out of it:

* Images (``image_column``, an ``Image`` feature, or a column of numeric arrays) and their classes
  (``label_column``): a lazy :class:`~lifelong.data.datasets.Dataset` (:mod:`lifelong.data.lazy`) whose
  tables stay memory-mapped Arrow files. Only the label column is read to build it (so scenarios split it
  by class without decoding a sample) and, for its input shape, the first image's header; each image is
  decoded by :func:`decode_image` when a batch holds it, through the ``DataLoader`` of every lazy dataset
  (``num_workers``, ``pin_memory``). A ``ClassLabel`` column keeps its class ids; other labels (numbers or
  names) are numbered in sorted order over both splits, as the CSV loader numbers its labels.
* Texts (``text_column``): a :class:`~lifelong.data.text.TextCorpus` for the ``text_domains`` scenario,
  one domain per dataset of ``path`` (a list of paths: one each, named after the file or folder) or, with
  ``domain_column``, per value of that column, in the order the values first appear. Its documents are
  split, tokenised and cut into windows as any text domain's (:func:`lifelong.data.text.text`).

A ``DatasetDict`` (``save_to_disk`` of one, or files whose names ``load_dataset`` reads as splits) gives
its ``train_split`` and ``test_split``; with no test split the training split is divided by a seeded
stratified draw (``test_fraction``), as ``image_folder`` divides a folder. Departures from reading the
dataset as ``datasets`` does: images are converted to RGB (or, with ``grayscale``, one channel; by
default the first image's mode decides) and resized to ``size`` (default: the first image's) in [0, 1],
(C, H, W); the dataset's own transforms (``set_transform``) are not applied: ``[augment]`` is.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset as MapDataset

from lifelong.data.adapter import from_dataset
from lifelong.data.corpora import TextDomain
from lifelong.data.datasets import Dataset
from lifelong.data.files import IMAGE_SUFFIXES, _split_indices, image_pixels
from lifelong.data.text import TextCorpus, text
from lifelong.errors import ConfigError, DataError, MissingFileError

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv",
            **dict.fromkeys(IMAGE_SUFFIXES, "imagefolder")}
"""The ``load_dataset`` builder of each file suffix (``dataset.builder`` when the suffix does not say)."""
SAVED = ("dataset_info.json", "state.json", "dataset_dict.json")
"""Files one of which marks a folder that ``save_to_disk`` wrote."""
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F", "P")
"""Pillow modes read as one channel when ``grayscale`` is not given (``P``: palette images, e.g. GIFs of
digits, are mostly grey; give ``grayscale = false`` for colour ones)."""


def datasets_module() -> Any:
    """``datasets``, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise ConfigError("dataset.name='hf' needs Hugging Face datasets: pip install 'lifelong[datasets]'") from None
    return datasets


@contextlib.contextmanager
def quiet(datasets: Any) -> Iterator[None]:
    """``datasets``' progress bars off for the block (a run shows its own), then as they were."""
    shown = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def _builder(path: Path, builder: str) -> str:
    """The ``load_dataset`` builder of ``path``: ``builder`` when given, else the one of its suffix (of the
    files in it, for a folder), or an error naming ``dataset.builder``."""
    allowed = sorted(set(BUILDERS.values()))
    if builder:
        if builder not in allowed:
            raise ConfigError(f"dataset.builder: unknown builder {builder!r}; allowed: {', '.join(allowed)}")
        return builder
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    found = sorted({BUILDERS[p.suffix.lower()] for p in files if p.suffix.lower() in BUILDERS})
    if len(found) != 1:
        what = f"files of several kinds ({', '.join(found)})" if found else "no file whose suffix names a builder"
        raise ConfigError(f"dataset.builder: {str(path)!r} holds {what} ({', '.join(sorted(BUILDERS))}); set "
                          f"dataset.builder to one of {', '.join(allowed)}")
    return found[0]


def load_splits(path: str, builder: str = "") -> dict[str, Any]:
    """The splits (name -> ``datasets.Dataset``, memory-mapped) of the local dataset at ``path``: a folder
    ``save_to_disk`` wrote (a ``Dataset``: one split, ``train``), or files read by ``load_dataset`` with
    ``builder`` (default: inferred from the suffixes, :data:`BUILDERS`)."""
    datasets = datasets_module()
    where = Path(path).expanduser()
    if not where.exists():
        raise MissingFileError(f"dataset.path: no such file or folder {path!r}; nothing is downloaded: give a folder "
                               "written by save_to_disk, or Parquet / Arrow / JSON-lines / image files")
    try:
        with quiet(datasets):
            if where.is_dir() and not builder and any((where / name).is_file() for name in SAVED):
                loaded = datasets.load_from_disk(str(where))
            elif where.is_dir():
                loaded = datasets.load_dataset(_builder(where, builder), data_dir=str(where))
            else:
                loaded = datasets.load_dataset(_builder(where, builder), data_files=str(where))
    except (ConfigError, MissingFileError):
        raise
    except Exception as error:  # datasets' and pyarrow's own errors: unreadable or inconsistent files
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataError(f"dataset.path: datasets cannot read {path!r} ({first})") from None
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def _column(table: Any, field: str, name: str, path: str) -> str:
    """``name``, checked to be a column of ``table``, or an error naming ``dataset.<field>`` and the columns."""
    if name not in table.column_names:
        raise DataError(f"dataset.{field}: {path!r} has no column {name!r}; columns: {', '.join(table.column_names)}")
    return name


def column_values(table: Any, name: str) -> list[Any]:
    """The values of one column of ``table``, read alone (the other columns, images included, are not)."""
    return list(table.select_columns([name]).with_format(None)[:][name])


def _labels(parts: Sequence[Any], column: str, path: str) -> tuple[list[np.ndarray], int, list[str]]:
    """The class ids of ``column`` in every part, the number of classes and their names: a ``ClassLabel``'s
    own ids, or the values numbered in sorted order (numbers by value, then names) over all parts."""
    feature = parts[0].features[column]
    classes = isinstance(feature, datasets_module().ClassLabel)
    values = [column_values(part, column) for part in parts]
    for part_values in values:  # a ClassLabel writes a missing label as -1
        missing = next((row for row, value in enumerate(part_values) if value is None or (classes and value == -1)),
                       None)
        if missing is not None:
            raise DataError(f"dataset.label_column: row {missing} of {path!r} has no {column!r} label; give every "
                            "row a label or drop the unlabelled ones")
    if classes:
        return [np.asarray(v, dtype=np.int64) for v in values], int(feature.num_classes), list(feature.names)
    every = [value for part_values in values for value in part_values]
    names = sorted(set(every), key=lambda v: (not isinstance(v, int | float), v if isinstance(v, int | float) else 0,
                                              str(v)))
    ids = {value: index for index, value in enumerate(names)}
    return [np.asarray([ids[v] for v in part_values], dtype=np.int64) for part_values in values], len(names), \
        [str(name) for name in names]


def _image_header(value: dict[str, Any]) -> tuple[str, tuple[int, int]]:
    """The mode and (height, width) of an undecoded ``Image`` value, from its header alone."""
    from PIL import Image

    with Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]) as image:
        return image.mode, (image.height, image.width)


def decode_image(value: dict[str, Any], shape: tuple[int, int], grayscale: bool) -> np.ndarray:
    """An undecoded ``Image`` value (``{"bytes", "path"}``) as (C, H, W) float32 in [0, 1] of ``shape``
    (:func:`~lifelong.data.files.image_pixels`): the one place the images of an ``hf`` dataset are decoded."""
    from PIL import Image

    source = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
    try:
        with Image.open(source) as image:
            return image_pixels(image, shape, grayscale)
    except (OSError, TypeError, ValueError) as error:
        raise DataError(f"dataset.path: an image of the hf dataset is not readable ({error}); fix or remove its "
                        "row") from None


class ArrowInputs(MapDataset):
    """The rows ``rows`` of one input column of a memory-mapped ``datasets.Dataset`` with their class ids
    ``targets``: ``(input, label)`` read when a sample is asked for. An ``Image`` column is decoded by
    :func:`decode_image` (resized to ``shape``); a column of numeric arrays is each sample as it is."""

    def __init__(self, table: Any, column: str, rows: np.ndarray, targets: np.ndarray, shape: tuple[int, ...],
                 grayscale: bool) -> None:
        self.image = type(table.features[column]).__name__ == "Image"
        if self.image:
            table = table.cast_column(column, datasets_module().Image(decode=False))
        self.table, self.column = table.select_columns([column]), column
        self.rows, self.targets, self.shape, self.grayscale = rows, targets, shape, grayscale

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        value = self.table[int(self.rows[index])][self.column]
        if self.image:
            return decode_image(value, self.shape[1:], self.grayscale), int(self.targets[index])  # type: ignore[arg-type]
        return np.asarray(value, dtype=np.float32), int(self.targets[index])


def _input_shape(table: Any, column: str, size: Sequence[int] | None, grayscale: bool | None) -> tuple[tuple[int, ...],
                                                                                                         bool]:
    """The (C, H, W) of the decoded images of ``column`` and whether they are read as one channel, from
    ``size`` and ``grayscale`` or the first image's header; for an array column, the first row's shape."""
    first = table.select_columns([column])
    if type(table.features[column]).__name__ != "Image":
        return tuple(np.shape(first.with_format(None)[0][column])), False
    value = first.cast_column(column, datasets_module().Image(decode=False))[0][column]
    try:
        mode, found = _image_header(value)
    except (OSError, TypeError, ValueError) as error:
        raise DataError(f"dataset.path: the first image of column {column!r} is not readable ({error})") from None
    one = mode in GRAYSCALE_MODES if grayscale is None else grayscale
    height, width = (int(side) for side in size) if size is not None else found
    return (1 if one else 3, height, width), one


def _image_dataset(path: str, splits: dict[str, Any], image_column: str, label_column: str, train_split: str,
                   test_split: str, size: Sequence[int] | None, grayscale: bool | None, test_fraction: float,
                   seed: int, num_workers: int, pin_memory: bool) -> Dataset:
    train = _split(splits, "train_split", train_split, path)
    if not image_column:
        images = [name for name, feature in train.features.items() if type(feature).__name__ == "Image"]
        if len(images) != 1:
            raise DataError(f"dataset.image_column: give the column of the inputs (or dataset.text_column, of texts); "
                            f"{path!r} has columns {', '.join(train.column_names)}")
        image_column = images[0]
    parts = [train] + ([splits[test_split]] if test_split in splits and test_split != train_split else [])
    for part in parts:
        _column(part, "image_column", image_column, path)
        _column(part, "label_column", label_column, path)
    labels, n_classes, names = _labels(parts, label_column, path)
    if len(parts) == 2:
        rows = [np.arange(len(parts[0])), np.arange(len(parts[1]))]
    else:
        rows = list(_split_indices(Path(path).name, labels[0], test_fraction, seed, names))
        parts, labels = [train, train], [labels[0][rows[0]], labels[0][rows[1]]]
    shape, one = _input_shape(train, image_column, size, grayscale)
    sets = [ArrowInputs(part, image_column, r, y, shape, one) for part, r, y in zip(parts, rows, labels, strict=True)]
    return from_dataset(sets[0], sets[1], train_targets=labels[0], test_targets=labels[1], n_classes=n_classes,
                        input_shape=shape, name=Path(path).name, num_workers=num_workers, pin_memory=pin_memory)


def _split(splits: dict[str, Any], field: str, name: str, path: str) -> Any:
    """The split ``name`` of ``splits``; the only one when there is one and ``name`` is not among them."""
    if name in splits:
        return splits[name]
    if len(splits) == 1:
        return next(iter(splits.values()))
    raise DataError(f"dataset.{field}: {path!r} has no split {name!r}; splits: {', '.join(splits)}")


def _text_domains(paths: Sequence[str], builder: str, text_column: str, domain_column: str,
                  train_split: str) -> list[TextDomain]:
    """The documents of ``text_column`` grouped into domains: one per path, or per value of
    ``domain_column`` (in the order the values first appear)."""
    grouped: dict[str, list[str]] = {}
    for path in paths:
        table = _split(load_splits(path, builder), "train_split", train_split, path)
        texts = column_values(table, _column(table, "text_column", text_column, path))
        if domain_column:
            feature = table.features[_column(table, "domain_column", domain_column, path)]
            raw = column_values(table, domain_column)
            domains = [feature.int2str(v) if hasattr(feature, "int2str") else str(v) for v in raw]
        else:
            domains = [Path(path).stem] * len(texts)
        for row, (document, domain) in enumerate(zip(texts, domains, strict=True)):
            if not isinstance(document, str):
                raise DataError(f"dataset.text_column: row {row} of {path!r} holds {type(document).__name__}, not "
                                f"text, in column {text_column!r}; give the column of the texts")
            if document.strip():
                grouped.setdefault(domain, []).append(document)
    return [TextDomain(name, tuple(documents)) for name, documents in grouped.items()]


def hf(path: str | list[str], builder: str = "", image_column: str = "", text_column: str = "",
       label_column: str = "label", domain_column: str = "", train_split: str = "train", test_split: str = "test",
       size: Sequence[int] | None = None, grayscale: bool | None = None, test_fraction: float = 0.25, seed: int = 0,
       num_workers: int = 0, pin_memory: bool = False, tokenizer: str = "byte", bpe_vocab_size: int = 4096,
       validation_fraction: float = 0.1, save_tokenizer: str = "") -> Dataset | TextCorpus:
    """A Hugging Face dataset from local files (module docstring): images of ``image_column`` (default: the
    only ``Image`` column) classified by ``label_column``, read lazily, split by ``train_split`` /
    ``test_split`` or by ``test_fraction`` with ``seed``, resized to ``size``; or, with ``text_column``,
    text domains (per path, or per value of ``domain_column``) for ``scenario.name = "text_domains"``,
    tokenised as :func:`lifelong.data.text.text` does (``tokenizer``, ``bpe_vocab_size``,
    ``validation_fraction``, ``save_tokenizer``). ``builder``: the ``load_dataset`` builder of files whose
    suffix does not name it."""
    if image_column and text_column:
        raise ConfigError(f"dataset.text_column: a dataset is images (image_column={image_column!r}) or texts "
                          f"(text_column={text_column!r}), not both; drop one")
    if size is not None and (len(size) != 2 or any(side < 1 for side in size)):
        raise ConfigError(f"dataset.size must be [height, width], two positive integers, got {list(size)}")
    if num_workers < 0:
        raise ConfigError(f"dataset.num_workers must be >= 0 (0 reads in the main process), got {num_workers}")
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(paths):
        raise ConfigError("dataset.path: give the folder save_to_disk wrote, or the dataset's files")
    if text_column:
        return text(_text_domains(paths, builder, text_column, domain_column, train_split), tokenizer,
                    bpe_vocab_size, validation_fraction, seed, save_tokenizer)
    if domain_column:
        raise ConfigError("dataset.domain_column groups texts into domains; it needs dataset.text_column")
    if len(paths) != 1:
        raise ConfigError(f"dataset.path: a list of paths is read as one text domain each (with dataset.text_column); "
                          f"give one path for images, got {len(paths)}")
    return _image_dataset(paths[0], load_splits(paths[0], builder), image_column, label_column, train_split,
                          test_split, size, grayscale, test_fraction, seed, num_workers, pin_memory)
