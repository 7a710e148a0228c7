"""User data from files: a CSV table, a folder of images in class sub-folders, and the standard files of
MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 read with numpy from a local folder (no torchvision, no
download). A missing file raises :class:`MissingFileError` naming the files, where they were looked
for and where to get them.
"""

from __future__ import annotations

import csv as csv_module
import gzip
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lifelong.data.datasets import Dataset, from_arrays
from lifelong.data.split import train_test_indices
from lifelong.errors import DataError, MissingFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _split(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Dataset:
    """A seeded train/test split, stratified by class where every class has two samples or more."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"dataset.test_fraction must lie in (0, 1), got {test_fraction}")
    counts = np.bincount(y)
    train, test = train_test_indices(y, test_fraction, seed, stratify=bool(counts[counts > 0].min() >= 2))
    return from_arrays(name, x[train], y[train], x[test], y[test])


def _directory(path: str, what: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise MissingFileError(f"dataset.path: no such folder {str(folder)!r} (the folder of {what})")
    return folder


def split_arrays(x: object, y: object, test_fraction: float = 0.25, seed: int = 0, name: str = "arrays") -> Dataset:
    """A :class:`Dataset` from one pair of numpy arrays or tensors ``x`` (N, ...) and ``y`` (N,) of class
    ids, split into train and test sets by a seeded draw, stratified by class."""
    x_np, y_np = np.asarray(x, dtype=np.float32), np.asarray(y)
    if y_np.ndim != 1 or len(y_np) != len(x_np):
        raise DataError(f"{name}: y must be a 1-D array as long as x ({len(x_np)}), got shape {y_np.shape}")
    if len(y_np) and (not np.all(np.mod(y_np, 1) == 0) or y_np.min() < 0):
        raise DataError(f"{name}: y must hold class ids 0, 1, 2, ...; got values from {y_np.min()} to {y_np.max()}")
    return _split(name, x_np, y_np.astype(np.int64), test_fraction, seed)


def csv(path: str, label_column: str = "label", test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """A CSV file with a header row: ``label_column`` holds the class (any values, numbered in sorted
    order), every other column a numeric feature."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingFileError(f"dataset.path: no such CSV file {str(file)!r}")
    with file.open(newline="") as handle:
        rows = list(csv_module.reader(handle))
    if len(rows) < 2:
        raise DataError(f"dataset.path: {str(file)!r} needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    if label_column not in header:
        raise DataError(f"dataset.label_column: {label_column!r} is not a column of {str(file)!r}; "
                        f"columns: {', '.join(header)}")
    label_at = header.index(label_column)
    features = [i for i in range(len(header)) if i != label_at]
    labels = [row[label_at].strip() for row in body]
    names = sorted(set(labels), key=lambda v: (_number(v) is None, _number(v) or 0.0, v))
    y = np.array([names.index(v) for v in labels], dtype=np.int64)
    x = np.empty((len(body), len(features)), dtype=np.float32)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"dataset.path: row {r + 2} of {str(file)!r} has {len(row)} fields, the header {len(header)}")
        for j, i in enumerate(features):
            value = _number(row[i])
            if value is None:
                raise DataError(f"dataset.path: column {header[i]!r}, row {r + 2} of {str(file)!r} is "
                                f"{row[i]!r}, not a number; features must be numeric")
            x[r, j] = value
    return _split(file.stem, x, y, test_fraction, seed)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def image_folder(path: str, size: Sequence[int] | None = None, grayscale: bool = False,
                 test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Images in one sub-folder per class (``path/<class>/<image>``, the ImageFolder layout), read with
    Pillow, scaled to [0, 1] as (C, H, W), resized to ``size`` = (height, width) (default: the first
    image's). With ``path/train`` and ``path/test`` sub-folders those are the split."""
    from PIL import Image

    root = _directory(path, "images in class sub-folders")
    parts = [root / "train", root / "test"] if (root / "train").is_dir() and (root / "test").is_dir() else [root]
    class_names = sorted(d.name for d in parts[0].iterdir() if d.is_dir())
    if not class_names:
        raise DataError(f"dataset.path: {str(parts[0])!r} has no class sub-folders; expected "
                        "path/<class name>/<image files>")
    arrays: list[tuple[np.ndarray, np.ndarray]] = []
    shape: tuple[int, int] | None = tuple(size) if size is not None else None  # type: ignore[assignment]
    for part in parts:
        images, labels = [], []
        for label, name in enumerate(class_names):
            for file in sorted((part / name).iterdir()) if (part / name).is_dir() else []:
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                with Image.open(file) as image:
                    image = image.convert("L" if grayscale else "RGB")
                    if shape is None:
                        shape = (image.height, image.width)
                    if (image.height, image.width) != shape:
                        image = image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
                    pixels = np.asarray(image, dtype=np.float32) / 255.0
                images.append(pixels[None] if grayscale else pixels.transpose(2, 0, 1))
                labels.append(label)
        if not images:
            raise DataError(f"dataset.path: no images ({', '.join(IMAGE_SUFFIXES)}) under {str(part)!r}")
        arrays.append((np.stack(images), np.asarray(labels, dtype=np.int64)))
    if len(arrays) == 2:
        return from_arrays(root.name, arrays[0][0], arrays[0][1], arrays[1][0], arrays[1][1])
    return _split(root.name, arrays[0][0], arrays[0][1], test_fraction, seed)


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


def _cifar(name: str, path: str, folder: str, train: Sequence[str], label_key: bytes) -> Dataset:
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
    return from_arrays(name, x_train, y_train, parts[-1][0] / np.float32(255.0), parts[-1][1])


def cifar10(path: str = "data") -> Dataset:
    """CIFAR-10 from ``data_batch_1..5`` and ``test_batch`` in ``path`` (or ``path/cifar-10-batches-py``)."""
    return _cifar("cifar10", path, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], b"labels")


def cifar100(path: str = "data") -> Dataset:
    """CIFAR-100 (fine labels) from ``train`` and ``test`` in ``path`` (or ``path/cifar-100-python``)."""
    return _cifar("cifar100", path, "cifar-100-python", ["train"], b"fine_labels")
