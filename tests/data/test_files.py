"""Loaders of user files and standard dataset files, on small files written here in the same formats;
the CSV and image-folder paths end to end through the CLI."""

from __future__ import annotations

import gzip
import pickle
import re
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from lifelong import DataError, MissingFileError
from lifelong.cli import main
from lifelong.data.files import cifar10, cifar100, csv, fashion_mnist, image_folder, mnist, read_idx, split_arrays
from lifelong.runner.results import ResultsStore


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def test_idx_files_plain_and_gzipped(tmp_path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 5], dtype=np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", images, compress=True)
    write_idx(raw / "train-labels-idx1-ubyte", labels, compress=False)
    write_idx(raw / "t10k-images-idx3-ubyte", images[:2], compress=True)
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:2], compress=True)
    data = mnist(str(tmp_path))
    assert data.input_shape == (1, 28, 28) and data.n_classes == 6
    assert torch.allclose(data.x_train[3, 0], torch.as_tensor(images[3] / 255.0, dtype=torch.float32))
    assert data.y_test.tolist() == [0, 1]
    assert np.array_equal(read_idx(raw / "train-labels-idx1-ubyte"), labels)


def test_missing_standard_files_say_which_where_and_from_where(tmp_path) -> None:
    with pytest.raises(MissingFileError) as error:
        fashion_mnist(str(tmp_path))
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte" in message and str(tmp_path / "FashionMNIST" / "raw") in message
    assert "zalandoresearch" in message
    with pytest.raises(MissingFileError, match=r"data_batch_1, .*test_batch.*cs\.toronto\.edu"):
        cifar10(str(tmp_path / "nowhere"))


def test_cifar_python_batches(tmp_path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8), b"labels": [1, 9]}
        (folder / name).write_bytes(pickle.dumps(batch))
    data = cifar10(str(tmp_path))
    assert data.input_shape == (3, 32, 32) and len(data.y_train) == 10 and len(data.y_test) == 2
    first = pickle.loads((folder / "data_batch_1").read_bytes())[b"data"][0]
    assert torch.allclose(data.x_train[0, 0, 0, :3], torch.as_tensor(first[:3] / 255.0, dtype=torch.float32))
    hundred = tmp_path / "cifar-100-python"
    hundred.mkdir()
    for name in ("train", "test"):
        batch = {b"data": rng.integers(0, 256, size=(3, 3072), dtype=np.uint8), b"fine_labels": [0, 50, 99],
                 b"coarse_labels": [0, 1, 2]}
        (hundred / name).write_bytes(pickle.dumps(batch))
    assert cifar100(str(tmp_path)).n_classes == 100


def test_split_arrays_from_tensors_is_stratified_and_seeded() -> None:
    x, y = torch.arange(40.0).reshape(20, 2), torch.arange(20) % 2
    data = split_arrays(x, y, test_fraction=0.5, seed=3)
    assert sorted(data.y_test.tolist()) == [0] * 5 + [1] * 5
    assert torch.equal(data.x_test, split_arrays(x, y, test_fraction=0.5, seed=3).x_test)
    with pytest.raises(DataError, match="class ids"):
        split_arrays(x, y.float() - 0.5)


def write_csv(path, rows: int = 60) -> None:
    rng = np.random.default_rng(0)
    lines = ["f1,species,f2"]
    for i in range(rows):
        label = ["setosa", "versicolor", "virginica"][i % 3]
        lines.append(f"{rng.normal(i % 3 * 4):.3f},{label},{rng.normal(-(i % 3) * 4):.3f}")
    path.write_text("\n".join(lines) + "\n")


def test_csv_labels_are_numbered_and_errors_name_the_column(tmp_path) -> None:
    file = tmp_path / "table.csv"
    write_csv(file)
    data = csv(str(file), label_column="species")
    assert data.input_shape == (2,) and data.n_classes == 3 and len(data.y_test) == 15
    with pytest.raises(DataError, match="label_column: 'kind' is not a column.*f1, species, f2"):
        csv(str(file), label_column="kind")
    file.write_text("a,label\nx,1\n")
    with pytest.raises(DataError, match="column 'a', row 2.*'x', not a number"):
        csv(str(file))


def test_csv_through_the_cli(tmp_path, capsys) -> None:
    file = tmp_path / "table.csv"
    write_csv(file)
    db = tmp_path / "runs.db"
    argv = ["run", "--db", str(db), "--set", "dataset.name=csv", "--set", f'dataset.path="{file}"',
            "--set", "dataset.label_column=species", "--set", "scenario.n_experiences=3",
            "--set", "model.hidden=[16]", "--set", "optim.epochs=2", "--set", "run.progress=false"]
    assert main(argv) == 0
    assert "classes" in capsys.readouterr().out
    record = ResultsStore(db).runs()[-1]
    assert record.status == "finished" and record.config["dataset"]["label_column"] == "species"
    missing = ["run", "--db", str(db), "--set", "dataset.name=csv", "--set", f'dataset.path="{tmp_path}/no.csv"']
    assert main(missing) == 2
    assert "no such CSV file" in capsys.readouterr().err


def test_image_folder_through_the_cli(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(rng.normal(60 + 120 * c, 20, size=(6, 6, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    (tmp_path / "images" / "dog" / "notes.txt").write_text("not an image")
    data = image_folder(str(tmp_path / "images"), size=[4, 4])
    assert data.input_shape == (3, 4, 4) and data.n_classes == 2 and len(data.y_train) + len(data.y_test) == 16
    argv = ["scenarios", "--set", "dataset.name=image_folder", "--set", f'dataset.path="{tmp_path / "images"}"',
            "--set", "dataset.grayscale=true", "--set", "scenario.n_experiences=2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "images class-incremental 2" in out
    assert len(re.findall(r"│ 6\s+│ 2\s+│", out)) == 2  # 6 training and 2 test images per class
    db = tmp_path / "runs.db"
    assert main(["run", "--db", str(db), "--set", "dataset.name=image_folder",
                 "--set", f'dataset.path="{tmp_path / "images"}"', "--set", "scenario.n_experiences=2",
                 "--set", "model.name=cnn", "--set", "model.channels=[4]", "--set", "optim.epochs=1",
                 "--set", "run.progress=false"]) == 0
    assert ResultsStore(db).runs()[-1].status == "finished"


def test_scenarios_command_lists_builders_and_parameters(capsys) -> None:
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    for text in ("si_blurry", "disjoint_ratio=0.5", "few_shot", "k_shot=5", "hierarchical", "recurring",
                 "image_folder", "cifar100"):
        assert text in out
    assert main(["scenarios", "--set", "scenario.name=si_blurry", "--set", "scenario.disjoint_ratio=2"]) == 2
