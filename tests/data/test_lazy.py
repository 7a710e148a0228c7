"""A user's map-style Dataset read lazily through a DataLoader with worker processes: the run equals the
same run on tensors in memory, bit for bit, without ever loading the whole dataset."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset as MapDataset

from lifelong import OptimConfig, ResultsStore, class_incremental, from_dataset, mlp, synthetic, train
from lifelong.data import domain_incremental
from lifelong.data.lazy import LazyInputs
from lifelong.errors import ConfigError, DataError
from lifelong.strategies import STRATEGIES


class Counting(MapDataset):
    """Samples of tensors in memory, with a read counter shared by the DataLoader's worker processes."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, wrong_label_at: int | None = None) -> None:
        self.x, self.y, self.wrong_label_at = x, y, wrong_label_at
        self.reads = multiprocessing.Value("i", 0)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with self.reads.get_lock():
            self.reads.value += 1
        label = int(self.y[index]) + (1 if index == self.wrong_label_at else 0)
        return self.x[index], label


@pytest.fixture(scope="module")
def data():
    return synthetic(n_classes=6, n_features=8, n_per_class=40, spread=0.5, seed=0)


def lazy(data, workers: int = 2, **kwargs):
    train_set, test_set = Counting(data.x_train, data.y_train, **kwargs), Counting(data.x_test, data.y_test)
    dataset = from_dataset(train_set, test_set, train_targets=data.y_train, test_targets=data.y_test,
                           name="counting", num_workers=workers)
    return dataset, train_set, test_set


def run(stream, name, settings):
    torch.manual_seed(0)
    return train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,)), STRATEGIES[name](**settings),
                 OptimConfig(epochs=2), seed=0)


@pytest.mark.parametrize(("name", "settings"), [("naive", {}), ("er", {"buffer_size": 30}),
                                                ("icarl", {"buffer_size": 30}), ("gdumb", {"buffer_size": 30}),
                                                ("ewc", {"lam": 10.0}), ("ncm", {"adapt_experiences": 1})])
def test_a_lazy_dataset_with_workers_trains_exactly_as_tensors_do(data, name, settings, monkeypatch) -> None:
    loads: list[int] = []
    original = LazyInputs.load
    monkeypatch.setattr(LazyInputs, "load", lambda self, batch_size=256: loads.append(len(self)) or
                        original(self, batch_size))
    dataset, train_set, test_set = lazy(data)
    stream = class_incremental(dataset, 3)
    assert all(isinstance(e.train.x, LazyInputs) for e in stream)
    result = run(stream, name, settings)
    reference = run(class_incremental(data, 3), name, settings)
    assert np.array_equal(result.matrix, reference.matrix)
    assert [c.steps for c in result.costs] == [c.steps for c in reference.costs]
    # the data is never held whole: what is read at once is at most a memory's worth of chosen samples
    assert max(loads, default=0) <= settings.get("buffer_size", 0)
    if name == "gdumb":  # it trains on its memory: only the samples it keeps are ever read
        assert train_set.reads.value <= 1 + 2 + 3 * 30
    else:  # every batch trained on is read from the dataset
        assert train_set.reads.value >= sum(c.samples for c in result.costs)
    assert test_set.reads.value >= 4 * len(data.y_test)  # the untrained model and each experience are evaluated


@pytest.mark.parametrize(("name", "settings"), [("er", {"buffer_size": 30}), ("derpp", {"buffer_size": 30}),
                                                ("agem", {"buffer_size": 30}), ("gdumb", {"buffer_size": 30})])
@pytest.mark.filterwarnings("ignore:strategy AGEM projects")
def test_a_memory_that_keeps_positions_trains_as_one_that_keeps_samples(data, name, settings) -> None:
    """Replay from positions reads the chosen samples again from the dataset: the same values, so the
    same run, in 8 bytes a sample instead of the sample's inputs (here 8 floats, 32 bytes)."""
    results, reads = {}, {}
    for keeps in ("samples", "positions"):
        dataset, train_set, _ = lazy(data, workers=0)
        results[keeps] = run(class_incremental(dataset, 3), name, {**settings, "memory_keeps": keeps})
        reads[keeps] = train_set.reads.value
    samples, positions = results["samples"], results["positions"]
    assert np.array_equal(positions.matrix, samples.matrix)
    kept = 30 * (8 * 4 - 8)  # a float32 input of 8 features less a long position, for each of 30 samples
    assert samples.costs[-1].memory_bytes - positions.costs[-1].memory_bytes == kept
    if name != "gdumb":  # each replayed batch is read again; GDumb reads its memory once an epoch either way
        assert reads["positions"] > reads["samples"]


def test_a_memory_keeps_positions_only_of_a_lazy_dataset(data) -> None:
    with pytest.raises(ConfigError, match="memory_keeps = 'positions' keeps positions in a lazy dataset"):
        run(class_incremental(data, 3), "er", {"memory_keeps": "positions"})
    with pytest.raises(ConfigError, match="strategy.memory_keeps must be one of samples, positions, got 'indices'"):
        STRATEGIES["gdumb"](memory_keeps="indices")


def test_a_lazy_dataset_is_not_transformed_per_experience_behind_the_users_back(data) -> None:
    dataset, train_set, _ = lazy(data, workers=0)
    before = train_set.reads.value  # from_dataset reads one sample for the input shape
    with pytest.raises(ConfigError, match="apply the transform in the Dataset's __getitem__"):
        domain_incremental(dataset, 3)
    assert train_set.reads.value == before


def test_a_label_that_disagrees_with_the_targets_is_an_error_naming_the_sample(data) -> None:
    dataset, _, _ = lazy(data, workers=0, wrong_label_at=5)
    with pytest.raises(DataError, match="sample 5 has label"):
        run(class_incremental(dataset, 3), "naive", {})


def test_targets_are_taken_from_the_dataset_when_not_given(data) -> None:
    train_set, test_set = Counting(data.x_train, data.y_train), Counting(data.x_test, data.y_test)
    dataset = from_dataset(train_set, test_set)  # no targets: each label is read once
    assert torch.equal(dataset.y_train, data.y_train) and dataset.n_classes == 6
    assert train_set.reads.value == len(data.y_train) + 1  # one read per label, one for the input shape
    with pytest.raises(DataError, match="targets must be one label per sample"):
        from_dataset(train_set, test_set, train_targets=[0, 1])


USER_DATA = '''
import multiprocessing, pathlib, torch
from torch.utils.data import Dataset
import lifelong as ll

class Counting(Dataset):
    def __init__(self, x, y, log):
        self.x, self.y, self.log = x, y, log
    def __len__(self):
        return len(self.y)
    def __getitem__(self, index):
        with open(self.log, "a") as log:
            log.write("r")
        return self.x[index], int(self.y[index])

def build(log):
    data = ll.synthetic(n_classes=6, n_features=8, n_per_class=40, spread=0.5, seed=0)
    return ll.from_dataset(Counting(data.x_train, data.y_train, log), Counting(data.x_test, data.y_test, log),
                           train_targets=data.y_train, test_targets=data.y_test, name="user")
'''


def test_a_user_dataset_trains_through_the_command_line_with_workers(tmp_path) -> None:
    (tmp_path / "user_data.py").write_text(textwrap.dedent(USER_DATA))
    log = tmp_path / "reads.log"
    done = subprocess.run(
        [sys.executable, "-m", "lifelong", "run", "--db", str(tmp_path / "runs.db"), "--no-checkpoint",
         "--set", "dataset.name=python", "--set", f"dataset.factory={tmp_path / 'user_data.py'}:build",
         "--set", f'dataset.options={{log = "{log}"}}', "--set", "dataset.num_workers=2",
         "--set", "scenario.n_experiences=3", "--set", "model.hidden=[16]", "--set", "optim.epochs=1",
         "--set", "strategy.name=er", "--set", "strategy.buffer_size=30", "--set", "run.progress=false"],
        capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    record = ResultsStore(tmp_path / "runs.db").runs()[0]
    assert record.status == "finished" and record.metrics["final_accuracy"] > 0.5
    assert len(log.read_text()) >= 180  # the training samples were read from the user's dataset


def write_images(folder, per_class: int = 12) -> None:
    """Two classes of 8x8 grey images: dark noise and bright noise."""
    from PIL import Image

    generator = np.random.default_rng(0)
    for label, (name, level) in enumerate((("dark", 40), ("bright", 200))):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(level + generator.normal(0, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def test_a_lazy_image_folder_reads_files_only_when_trained_on(tmp_path, monkeypatch) -> None:
    from lifelong.data import files

    write_images(tmp_path / "images")
    reads: list[str] = []
    original = files.read_image
    monkeypatch.setattr(files, "read_image", lambda file, shape, grayscale: reads.append(file.name) or
                        original(file, shape, grayscale))
    lazy_data = files.image_folder(str(tmp_path / "images"), grayscale=True, lazy=True, num_workers=0)
    assert len(reads) == 1  # the first image, for the size; nothing else is read to build the dataset
    eager = files.image_folder(str(tmp_path / "images"), grayscale=True)
    assert torch.equal(lazy_data.y_train, eager.y_train) and torch.equal(lazy_data.y_test, eager.y_test)
    results = [run(class_incremental(d, 2), "er", {"buffer_size": 6}) for d in (lazy_data, eager)]
    assert np.array_equal(results[0].matrix, results[1].matrix)


def test_an_unreadable_image_in_a_lazy_folder_is_named_in_one_line(tmp_path) -> None:
    from lifelong.data import files

    write_images(tmp_path / "images")
    (tmp_path / "images" / "bright" / "5.png").write_bytes(b"not an image")
    dataset = files.image_folder(str(tmp_path / "images"), grayscale=True, lazy=True, num_workers=2)
    with pytest.raises(DataError, match=r"5\.png' is not a readable image") as error:
        run(class_incremental(dataset, 2), "naive", {})
    assert "\n" not in str(error.value)
