"""User data from files: a CSV table, a folder of images in class sub-folders, and the standard files of
MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 read with numpy from a local folder (no torchvision, no
download). A missing file raises :class:`MissingFileError` naming the files, where they were looked
for and where to get them.
"""

from __future__ import annotations

import csv as csv_module
import gzip
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch.utils.data import Dataset as MapDataset

from lifelong.data.adapter import from_dataset
from lifelong.data.datasets import Dataset, from_arrays
from lifelong.data.split import train_test_indices
from lifelong.errors import ConfigError, DataError, MissingFileError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

logger = logging.getLogger(__name__)


def _split_indices(name: str, y: np.ndarray, test_fraction: float, seed: int,
                   class_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of a seeded train/test split of labels ``y``, stratified by class. Every
    class must end up in both parts: a class with one sample (or one that the fraction leaves without a
    test sample) would make an experience whose test set is empty, so it is refused here, naming the
    class, rather than scored as nothing."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"dataset.test_fraction must lie in (0, 1), got {test_fraction}")
    if len(y) == 0:
        raise DataError(f"{name}: no samples to split; x and y are empty")

    def label(class_id: int) -> str:
        return repr(class_names[class_id]) if class_names is not None else str(class_id)

    counts = np.bincount(y)
    rare = [int(c) for c in np.flatnonzero((counts > 0) & (counts < 2))]
    if rare:
        raise DataError(f"{name}: class {label(rare[0])} has a single sample; every class needs at least 2 (one to "
                        "train on, one to test on): add samples or drop the class")
    try:
        train, test = train_test_indices(y, test_fraction, seed, stratify=True)
    except DataError as error:  # more classes than test (or training) samples
        raise DataError(f"{name}: cannot split {len(y)} samples of {int((counts > 0).sum())} classes with "
                        f"dataset.test_fraction={test_fraction} ({error}); change the fraction or add "
                        "samples") from None
    for part, labels in (("test", y[test]), ("training", y[train])):
        absent = sorted(set(np.flatnonzero(counts).tolist()) - set(np.unique(labels).tolist()))
        if absent:
            raise DataError(f"{name}: class {label(absent[0])} ({counts[absent[0]]} samples) gets no {part} sample "
                            f"with dataset.test_fraction={test_fraction}; change the fraction or add samples")
    return train, test


def _split(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int,
           class_names: Sequence[str] | None = None) -> Dataset:
    """A seeded train/test split of arrays, stratified by class (:func:`_split_indices`)."""
    train, test = _split_indices(name, y, test_fraction, seed, class_names)
    return from_arrays(name, x[train], y[train], x[test], y[test])


def _directory(path: str, what: str) -> Path:
    folder = Path(path).expanduser()
    if folder.is_file():
        raise DataError(f"dataset.path: {str(folder)!r} is a file; give the folder of {what}")
    if not folder.is_dir():
        raise MissingFileError(f"dataset.path: no such folder {str(folder)!r} (the folder of {what})")
    return folder


def split_arrays(x: object, y: object, test_fraction: float = 0.25, seed: int = 0, name: str = "arrays") -> Dataset:
    """A :class:`Dataset` from one pair of numpy arrays or tensors ``x`` (N, ...) and ``y`` (N,) of class
    ids ``0..C-1`` (the rule of :func:`~lifelong.data.datasets.from_arrays`), split into train and test
    sets by a seeded draw, stratified by class; every class needs two samples or more."""
    y_np = np.asarray(y)
    if y_np.ndim != 1:
        raise DataError(f"{name}: y must be a 1-D array of class ids, got shape {y_np.shape}")
    if len(y_np) and not (np.issubdtype(y_np.dtype, np.number) or y_np.dtype == np.bool_):
        raise DataError(f"{name}: y must hold class ids 0, 1, 2, ... as numbers, got dtype {y_np.dtype} "
                        f"(e.g. {y_np[0]!r}); number the classes first, e.g. y = np.unique(y, return_inverse=True)[1]")
    try:
        x_np = np.asarray(x, dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise DataError(f"{name}: x must be an array of numbers (N, features...): {error}") from None
    if len(y_np) != len(x_np):
        raise DataError(f"{name}: y must be as long as x ({len(x_np)} samples), got {len(y_np)} labels")
    if len(y_np) and (not np.all(np.isfinite(y_np)) or not np.all(np.mod(y_np, 1) == 0) or y_np.min() < 0):
        raise DataError(f"{name}: y must hold class ids 0, 1, 2, ...; got values from {y_np.min()} to {y_np.max()}")
    return _split(name, x_np, y_np.astype(np.int64), test_fraction, seed)


def csv(path: str, label_column: str = "label", test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """A CSV file (UTF-8) with a header row: ``label_column`` holds the class (any values, numbered in
    sorted order: numbers by value, then the other names), every other column a numeric feature.
    Blank lines are skipped; any other row needs as many fields as the header and a label."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise DataError(f"dataset.path: {str(file)!r} is a directory; give the path of a CSV file")
    if not file.is_file():
        raise MissingFileError(f"dataset.path: no such CSV file {str(file)!r}")
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv_module.reader(handle)
            rows = [(reader.line_num, row) for row in reader if row]
    except UnicodeDecodeError as error:
        raise DataError(f"dataset.path: {str(file)!r} is not a text CSV file (byte {error.start} is not UTF-8); "
                        "give a CSV file saved as UTF-8") from None
    except csv_module.Error as error:
        raise DataError(f"dataset.path: {str(file)!r} is not a readable CSV file ({error})") from None
    if len(rows) < 2:
        raise DataError(f"dataset.path: {str(file)!r} needs a header row and at least one data row")
    header, body = rows[0][1], rows[1:]
    if label_column not in header:
        raise DataError(f"dataset.label_column: {label_column!r} is not a column of {str(file)!r}; "
                        f"columns: {', '.join(header)}")
    label_at = header.index(label_column)
    features = [i for i in range(len(header)) if i != label_at]
    x = np.empty((len(body), len(features)), dtype=np.float32)
    labels = []
    for r, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"dataset.path: row {line} of {str(file)!r} has {len(row)} fields, the header "
                            f"{len(header)}")
        label = row[label_at].strip()
        if not label:
            raise DataError(f"dataset.path: row {line} of {str(file)!r} has an empty {label_column!r} cell; give it a "
                            "label or remove the row")
        labels.append(label)
        for j, i in enumerate(features):
            value = _number(row[i])
            if value is None:
                raise DataError(f"dataset.path: column {header[i]!r}, row {line} of {str(file)!r} is "
                                f"{row[i]!r}, not a number; features must be numeric")
            x[r, j] = value
    names = sorted(set(labels), key=lambda v: (_number(v) is None, _number(v) or 0.0, v))
    y = np.array([names.index(v) for v in labels], dtype=np.int64)
    return _split(file.stem, x, y, test_fraction, seed, class_names=names)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


SKIP_UNREADABLE = "fix or remove it, or set dataset.skip_unreadable=true to skip such files"
"""What to do with an unreadable image of a folder read up front."""
LAZY_UNREADABLE = ("fix or remove it (dataset.lazy=true reads each image when it is used; skipping unreadable files "
                   "with dataset.skip_unreadable=true needs dataset.lazy=false, which reads every file up front)")
"""What to do with an unreadable image of a lazily read folder, which cannot skip it (its samples are counted)."""


def read_image(file: Path, shape: tuple[int, int] | None, grayscale: bool) -> np.ndarray:
    """One image file as (C, H, W) float32 in [0, 1], resized to ``shape`` = (height, width) when given;
    a file Pillow cannot read (corrupt, truncated) is a :class:`DataError` naming it."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            return image_pixels(image, shape, grayscale)
    except OSError as error:  # Pillow's UnidentifiedImageError and truncated files are OSErrors
        raise DataError(f"dataset.path: {str(file)!r} is not a readable image ({error})") from None


def image_pixels(image: PILImage, shape: tuple[int, int] | None, grayscale: bool) -> np.ndarray:
    """An open Pillow image as (C, H, W) float32 in [0, 1]: one channel (``grayscale``) or three (RGB),
    resized bilinearly to ``shape`` = (height, width) when given. Decoding it may raise ``OSError``."""
    from PIL import Image

    image = image.convert("L" if grayscale else "RGB")
    if shape is not None and (image.height, image.width) != shape:
        image = image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return pixels[None] if grayscale else pixels.transpose(2, 0, 1)


def read_image_or_say(file: Path, shape: tuple[int, int] | None, grayscale: bool, remedy: str) -> np.ndarray:
    """:func:`read_image`, its error completed with what to do about the file (``remedy``)."""
    try:
        return read_image(file, shape, grayscale)
    except DataError as error:
        raise DataError(f"{error}; {remedy}") from None


class ImageFiles(MapDataset):
    """Image files read when a sample is asked for (``image_folder(..., lazy=True)``): ``(image (C, H, W),
    label)`` of ``files[i]`` resized to ``shape``."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], shape: tuple[int, int], grayscale: bool) -> None:
        self.files, self.targets, self.shape, self.grayscale = list(files), list(labels), shape, grayscale

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return read_image_or_say(self.files[index], self.shape, self.grayscale, LAZY_UNREADABLE), self.targets[index]


def image_folder(path: str, size: Sequence[int] | None = None, grayscale: bool = False,
                 test_fraction: float = 0.25, seed: int = 0, skip_unreadable: bool = False, lazy: bool = False,
                 num_workers: int = 0, pin_memory: bool = False) -> Dataset:
    """Images in one sub-folder per class (``path/<class>/<image>``, the ImageFolder layout), read with
    Pillow, scaled to [0, 1] as (C, H, W), resized to ``size`` = (height, width) (default: the first
    image's). With ``path/train`` and ``path/test`` sub-folders those are the split. A file that Pillow
    cannot read (corrupt, truncated) is an error naming it; ``skip_unreadable`` skips such files
    instead and says how many.

    ``lazy`` lists the files and reads none but the first (for its size): the images are read in
    batches when trained on and evaluated, through a ``DataLoader`` with ``num_workers`` worker processes
    (and ``pin_memory``), as any lazy dataset (:func:`lifelong.data.adapter.from_dataset`). An unreadable
    file is then named when it is read (``skip_unreadable`` needs the eager mode, which reads every file)."""
    if size is not None and (len(size) != 2 or any(side < 1 for side in size)):
        raise ConfigError(f"dataset.size must be [height, width], two positive integers, got {list(size)}")
    if lazy and skip_unreadable:
        raise ConfigError("dataset.skip_unreadable needs every file read up front: set dataset.lazy=false, or "
                          "remove the unreadable files")
    root = _directory(path, "images in class sub-folders")
    parts = [root / "train", root / "test"] if (root / "train").is_dir() and (root / "test").is_dir() else [root]
    class_names = sorted(d.name for d in parts[0].iterdir() if d.is_dir())
    if not class_names:
        raise DataError(f"dataset.path: {str(parts[0])!r} has no class sub-folders; expected "
                        "path/<class name>/<image files>")
    listed = [[(file, label) for label, name in enumerate(class_names)
               for file in (sorted((part / name).iterdir()) if (part / name).is_dir() else [])
               if file.suffix.lower() in IMAGE_SUFFIXES] for part in parts]
    for part, files in zip(parts, listed, strict=True):
        if not files:
            raise DataError(f"dataset.path: no images ({', '.join(IMAGE_SUFFIXES)}) under {str(part)!r}")
    remedy = LAZY_UNREADABLE if lazy else SKIP_UNREADABLE
    shape: tuple[int, int] = tuple(size) if size is not None else \
        tuple(read_image_or_say(listed[0][0][0], None, grayscale, remedy).shape[1:])  # type: ignore[assignment]
    if lazy:
        return _lazy_image_folder(root.name, listed, shape, grayscale, test_fraction, seed, class_names, num_workers,
                                  pin_memory)
    arrays: list[tuple[np.ndarray, np.ndarray]] = []
    skipped: list[Path] = []
    for part, files in zip(parts, listed, strict=True):
        images, labels = [], []
        for file, label in files:
            try:
                images.append(read_image(file, shape, grayscale))
            except DataError as error:
                if not skip_unreadable:
                    raise DataError(f"{error}; {SKIP_UNREADABLE}") from None
                skipped.append(file)
                continue
            labels.append(label)
        if not images:
            raise DataError(f"dataset.path: no readable images ({', '.join(IMAGE_SUFFIXES)}) under {str(part)!r}")
        arrays.append((np.stack(images), np.asarray(labels, dtype=np.int64)))
    if skipped:
        logger.warning("dataset.path: skipped %d unreadable image(s) under %r (first: %r)", len(skipped), str(root),
                       str(skipped[0]))
    if len(arrays) == 2:
        return from_arrays(root.name, arrays[0][0], arrays[0][1], arrays[1][0], arrays[1][1])
    return _split(root.name, arrays[0][0], arrays[0][1], test_fraction, seed, class_names=class_names)


def _lazy_image_folder(name: str, listed: list[list[tuple[Path, int]]], shape: tuple[int, int], grayscale: bool,
                       test_fraction: float, seed: int, class_names: Sequence[str], num_workers: int,
                       pin_memory: bool) -> Dataset:
    """The listed files as a lazy dataset: split by their labels alone when there is no test folder."""
    if len(listed) == 1:
        labels = np.asarray([label for _, label in listed[0]], dtype=np.int64)
        train, test = _split_indices(name, labels, test_fraction, seed, class_names)
        listed = [[listed[0][i] for i in train], [listed[0][i] for i in test]]
    sets = [ImageFiles([f for f, _ in files], [label for _, label in files], shape, grayscale) for files in listed]
    return from_dataset(sets[0], sets[1], train_targets=sets[0].targets, test_targets=sets[1].targets,
                        n_classes=len(class_names), input_shape=(1 if grayscale else 3, *shape), name=name,
                        num_workers=num_workers, pin_memory=pin_memory)


def _find(root: Path, names: Sequence[str], subfolders: Sequence[str], dataset: str, source: str) -> list[Path]:
    """Each of ``names`` (or its ``.gz``) in ``root`` or one of its ``subfolders``, or a MissingFileError."""
    folders = [root] + [root / s for s in subfolders]
    found, missing = [], []
    for name in names:
        hit = next((f / n for f in folders for n in (name, name + ".gz") if (f / n).is_file()), None)
        if hit is None:
            missing.append(name)
        else:
            found.append(hit)
    if missing:
        raise MissingFileError(f"dataset.path: {dataset} files missing: {', '.join(missing)} (or .gz); looked in "
                               f"{', '.join(str(f) for f in folders)}; download them from {source} into {root}")
    return found


def _open(file: Path) -> bytes:
    return gzip.open(file).read() if file.suffix == ".gz" else file.read_bytes()


def read_idx(file: Path) -> np.ndarray:
    """An idx-ubyte array (the MNIST format: zero bytes, type 0x08, rank, big-endian sizes, uint8 data)."""
    data = _open(file)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"dataset.path: {str(file)!r} is not an idx-ubyte file of unsigned bytes")
    rank = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=rank, offset=4))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if values.size != int(np.prod(shape)):
        raise DataError(f"dataset.path: {str(file)!r} holds {values.size} values, its header says {shape}")
    return values.reshape(shape)


def _idx_dataset(name: str, path: str, subfolder: str, source: str) -> Dataset:
    root = Path(path).expanduser()
    files = _find(root, ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                         "t10k-labels-idx1-ubyte"], ["raw", f"{subfolder}/raw", subfolder], name, source)
    x_train, y_train, x_test, y_test = (read_idx(f) for f in files)
    return from_arrays(name, x_train[:, None] / np.float32(255.0), y_train, x_test[:, None] / np.float32(255.0),
                       y_test)


def mnist(path: str = "data") -> Dataset:
    """MNIST from its four idx-ubyte(.gz) files in ``path`` (or ``path/MNIST/raw``), as (1, 28, 28) in [0, 1]."""
    return _idx_dataset("mnist", path, "MNIST", "https://yann.lecun.com/exdb/mnist/")


def fashion_mnist(path: str = "data") -> Dataset:
    """Fashion-MNIST from its four idx-ubyte(.gz) files in ``path`` (or ``path/FashionMNIST/raw``)."""
    return _idx_dataset("fashion_mnist", path, "FashionMNIST",
                        "https://github.com/zalandoresearch/fashion-mnist (data/fashion)")


def _cifar(name: str, path: str, folder: str, train: Sequence[str], label_key: bytes, n_classes: int) -> Dataset:
    root = Path(path).expanduser()
    files = _find(root, [*train, "test_batch" if len(train) > 1 else "test"], [folder], name,
                  "https://www.cs.toronto.edu/~kriz/cifar.html (the python version, unpacked)")
    parts = []
    for file in files:
        batch = pickle.loads(_open(file), encoding="bytes")  # noqa: S301 - the user's own dataset file
        if b"data" not in batch or label_key not in batch:
            raise DataError(f"dataset.path: {str(file)!r} is not a CIFAR python batch (no {label_key!r} key)")
        parts.append((np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32),
                      np.asarray(batch[label_key], dtype=np.int64)))
    x_train = np.concatenate([p[0] for p in parts[:-1]]) / np.float32(255.0)
    y_train = np.concatenate([p[1] for p in parts[:-1]])
    return from_arrays(name, x_train, y_train, parts[-1][0] / np.float32(255.0), parts[-1][1], n_classes=n_classes)


def cifar10(path: str = "data") -> Dataset:
    """CIFAR-10 from ``data_batch_1..5`` and ``test_batch`` in ``path`` (or ``path/cifar-10-batches-py``)."""
    return _cifar("cifar10", path, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], b"labels", 10)


def cifar100(path: str = "data") -> Dataset:
    """CIFAR-100 (fine labels) from ``train`` and ``test`` in ``path`` (or ``path/cifar-100-python``)."""
    return _cifar("cifar100", path, "cifar-100-python", ["train"], b"fine_labels", 100)
