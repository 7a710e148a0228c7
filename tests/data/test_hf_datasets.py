"""Hugging Face datasets from local files (``dataset.name = "hf"``, :mod:`lifelong.data.hf`): 40 tiny images
saved with ``save_to_disk`` and as Parquet are read lazily (building the stream reads the label column
alone; an image is decoded only when a batch holds it), trained class-incrementally through the API and
the command line as the same images in memory train; texts with a domain column make a ``text_domains``
stream; a bad column or a missing package is one line naming the fix."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from lifelong import OptimConfig, ResultsStore, class_incremental, from_arrays, mlp, train
from lifelong.cli import main
from lifelong.data import hf as hf_data
from lifelong.data.hf import hf
from lifelong.data.lazy import LazyInputs
from lifelong.data.text import TextCorpus
from lifelong.errors import ConfigError, DataError, MissingFileError
from lifelong.strategies import Naive
from tests.runner.test_text_runs import documents

datasets = pytest.importorskip("datasets", reason="the datasets extra is not installed")

LABELS = np.arange(40) % 4
"""Ten images of each of the classes 0-3, in turn."""


def pixels() -> np.ndarray:
    """(40, 6, 6) uint8 images: noise around 60, and class ``c``'s quadrant of the image bright (around 200),
    easy to tell apart."""
    generator = np.random.default_rng(0)
    images = generator.normal(60, 12, (40, 6, 6))
    for index, label in enumerate(LABELS):
        row, column = divmod(int(label), 2)
        images[index, 3 * row:3 * row + 3, 3 * column:3 * column + 3] += 140
    return np.clip(images, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The images as a ``save_to_disk`` folder (``disk``) and a Parquet file, and texts of two domains as
    JSON lines; ``datasets``' cache (the Arrow copy ``load_dataset`` makes of a file) inside it, for the module."""
    from PIL import Image

    root = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(root / "cache"))
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcd"))})
        table = datasets.Dataset.from_dict({"image": [Image.fromarray(p) for p in pixels()], "label": LABELS.tolist()},
                                           features=features)
        table.save_to_disk(str(root / "disk"))
        table.to_parquet(str(root / "images.parquet"))
        with (root / "notes.jsonl").open("w", encoding="utf-8") as file:
            for abc, xyz in zip(documents("abc", 60, 0), documents("xyz", 60, 1), strict=True):
                file.write(json.dumps({"text": abc, "lang": "abc"}) + "\n" + json.dumps({"text": xyz, "lang": "xyz"}) + "\n")
        yield root


@pytest.fixture
def decoded(monkeypatch) -> list[int]:
    """How many images :func:`lifelong.data.hf.decode_image` has decoded (the loaders read in this process)."""
    count = [0]
    decode = hf_data.decode_image

    def counted(*args):
        count[0] += 1
        return decode(*args)

    monkeypatch.setattr(hf_data, "decode_image", counted)
    return count


def run(stream):
    torch.manual_seed(0)
    return train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,)), Naive(),
                 OptimConfig(lr=0.5, epochs=3, batch_size=8), seed=0)


@pytest.mark.parametrize("name", ["disk", "images.parquet"])
def test_images_train_lazily_decoding_only_what_is_read(folder, name, decoded, monkeypatch) -> None:
    data = hf(str(folder / name))
    stream = class_incremental(data, 2)
    assert decoded[0] == 0  # the labels alone split it: no image decoded yet
    assert isinstance(data.x_train, LazyInputs) and data.input_shape == (1, 6, 6) and data.n_classes == 4
    # a stratified quarter is tested (2 or 3 of each class's 10): 30 + 10 samples, classes {0, 1} then {2, 3}
    tested = torch.bincount(data.y_test, minlength=4)
    assert len(data.y_train) == 30 and int(tested.sum()) == 10 and set(tested.tolist()) <= {2, 3}
    assert [e.classes for e in stream] == [(0, 1), (2, 3)]
    assert [len(e.test) for e in stream] == [int(tested[:2].sum()), int(tested[2:].sum())]
    result = run(stream)
    drawn = sum(cost.samples for cost in result.costs)
    # each drawn sample decoded once, 2 more for the model check, the 10 test images at 3 evaluations
    assert drawn == 3 * 30 and decoded[0] == drawn + 2 + 3 * 10
    assert result.matrix[0, 0] >= 0.8 and result.matrix[1, 1] >= 0.8  # each experience learned
    # the images are the pixels / 255, and in memory they train to the same matrix, bit for bit
    x_train, x_test = data.x_train.load(), data.x_test.load()
    rows = data.x_train.source.dataset.rows
    assert torch.equal(x_train[:, 0], torch.as_tensor(pixels()[rows] / np.float32(255.0)))
    assert torch.equal(data.y_train, torch.as_tensor(LABELS[rows]))
    memory = run(class_incremental(from_arrays("memory", x_train, data.y_train, x_test, data.y_test), 2))
    assert np.array_equal(result.matrix, memory.matrix)


def test_a_class_incremental_run_from_the_command_line(folder, decoded, tmp_path, monkeypatch, capsys) -> None:
    db = str(tmp_path / "runs.db")
    assert main(["run", "--db", db, "--set", "dataset.name=hf", "--set", f'dataset.path="{folder / "disk"}"',
                 "--set", "scenario.n_experiences=2", "--set", "strategy.name=naive", "--set", "model.hidden=[16]",
                 "--set", "optim.epochs=1", "--set", "optim.batch_size=8", "--set", "run.checkpoint=false"]) == 0
    assert "accuracy matrix" in capsys.readouterr().out
    record = ResultsStore(db).get(1)
    assert record.status == "finished" and np.asarray(record.rows).shape == (2, 2)
    assert record.config["dataset"]["path"] == str(folder / "disk") and record.config["dataset"]["label_column"] == "label"
    drawn = sum(experience["cost"]["samples"] for experience in record.experiences)
    # the command checks the model twice (before it prints anything, and where training places it): 2 x 2
    assert drawn == 30 and decoded[0] == drawn + 2 * 2 + 3 * 10


def test_texts_with_a_domain_column_make_a_text_domains_run(folder, tmp_path, monkeypatch, capsys) -> None:
    corpus = hf(str(folder / "notes.jsonl"), text_column="text", domain_column="lang")
    assert isinstance(corpus, TextCorpus) and [d.name for d in corpus.domains] == ["abc", "xyz"]
    assert [len(d.train) + len(d.validation) for d in corpus.domains] == [60, 60]  # 6 validation documents each
    assert set(corpus.domains[1].train) <= set(documents("xyz", 60, 1))
    db = str(tmp_path / "runs.db")
    assert main(["run", "--db", db, "--set", "dataset.name=hf", "--set", f'dataset.path="{folder / "notes.jsonl"}"',
                 "--set", "dataset.text_column=text", "--set", "dataset.domain_column=lang",
                 "--set", "scenario.name=text_domains", "--set", "scenario.context=16",
                 "--set", "scenario.train_tokens=1600", "--set", "scenario.validation_tokens=400",
                 "--set", "model.name=gpt", "--set", "model.d_model=32", "--set", "model.n_layers=1",
                 "--set", "model.n_heads=2", "--set", "strategy.name=naive", "--set", "optim.name=adam",
                 "--set", "optim.lr=0.01", "--set", "optim.epochs=3", "--set", "run.checkpoint=false"]) == 0
    assert "loss matrix" in capsys.readouterr().out
    loss = np.asarray(ResultsStore(db).get(1).rows)
    assert loss[0, 0] < 2.0 and loss[1, 1] < 2.0  # each domain learned (untrained: about ln 257 = 5.5)
    assert loss[1, 0] > loss[0, 0] + 0.5  # and the first forgotten by naive fine-tuning


def test_one_domain_per_dataset_without_a_domain_column(folder, tmp_path, monkeypatch) -> None:
    paths = []
    for name in ("abc", "xyz"):
        datasets.Dataset.from_dict({"text": list(documents(name, 20, 0))}).to_parquet(str(tmp_path / f"{name}.parquet"))
        paths.append(str(tmp_path / f"{name}.parquet"))
    corpus = hf(paths, text_column="text")
    assert [d.name for d in corpus.domains] == ["abc", "xyz"] and len(corpus.domains[0].validation) == 2


def test_bad_columns_paths_and_a_missing_package_are_one_line_errors(folder, monkeypatch) -> None:
    disk = str(folder / "disk")
    with pytest.raises(DataError, match=r"^dataset\.label_column: .* has no column 'labels'; columns: image, label$"):
        hf(disk, label_column="labels")
    with pytest.raises(DataError, match=r"^dataset\.image_column: .* has no column 'img'; columns: image, label$"):
        hf(disk, image_column="img")
    with pytest.raises(DataError, match=r"^dataset\.text_column: .* has no column 'body'; columns: text, lang$"):
        hf(str(folder / "notes.jsonl"), text_column="body")
    with pytest.raises(DataError, match=r"^dataset\.text_column: row 0 .* holds int, not text"):
        hf(disk, text_column="label")
    with pytest.raises(ConfigError, match=r"^dataset\.builder: unknown builder 'xml'; allowed: arrow, csv, imagefolder"):
        hf(disk, builder="xml")
    with pytest.raises(MissingFileError, match="nothing is downloaded"):
        hf(str(folder / "absent"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if datasets were not installed
    with pytest.raises(ConfigError, match=r"^dataset.name='hf' needs Hugging Face datasets: "
                                          r"pip install 'lifelong\[datasets\]'$"):
        hf(disk)
