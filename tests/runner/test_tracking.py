"""Experiment tracking: each observer writes what the run measured, read back with the destination's
own reader (the csv module, TensorBoard's event reader, the MLflow client) or format (W&B's transaction
log of its own protocol-buffer records)."""

from __future__ import annotations

import csv
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import pytest
import torch

from lifelong import ConfigError, Naive, OptimConfig, RunConfig, class_incremental, mlp, run_config, train
from lifelong.runner.tracking import CSVLog, MLflowLog, TensorBoardLog, WandbLog, trackers
from tests.runner.recorder import StepRecorder

# two experiences of 90 samples, batches of 16: 6 steps each (5 of 16, one of 10), 12 in the run;
# logged every 5 steps: the loss at steps 5 and 10
OPTIM = OptimConfig(lr=0.05, batch_size=16, epochs=1)


def run_with(small_data, *observers):
    stream = class_incremental(small_data, 2)
    torch.manual_seed(0)
    result = train(stream, mlp(stream.input_shape, stream.n_classes, hidden=(16,)), Naive(), OPTIM, seed=0,
                   observers=list(observers))
    return result


def expected_scalars(result) -> dict[str, list[tuple[int, float]]]:
    """What every tracker logs for the run of :func:`run_with`: name -> [(step, value)]."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for index, (row, cost) in enumerate(zip(result.matrix.tolist(), result.costs, strict=True)):
        step = 6 * (index + 1)
        for j, accuracy in enumerate(row):
            expected.setdefault(f"accuracy/exp_{j}", []).append((step, accuracy))
        for name, value in cost.as_dict().items():
            if value is not None:  # MFU without a peak is not logged
                expected.setdefault(f"cost/{name}", []).append((step, float(value)))
    for name in ("final_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer"):
        expected[f"metrics/{name}"] = [(12, result.metrics[name])]
    return expected


def same_series(logged: list[tuple[int, float]], expected: list[tuple[int, float]], rel: float = 1e-12) -> bool:
    """The same steps, and values equal within ``rel``."""
    return [step for step, _ in logged] == [step for step, _ in expected] and \
        [value for _, value in logged] == pytest.approx([value for _, value in expected], rel=rel)


def test_csv_log_holds_every_scalar(small_data, tmp_path) -> None:
    result = run_with(small_data, CSVLog(tmp_path / "run.csv", every_steps=5))
    with (tmp_path / "run.csv").open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["step", "name", "value"]
    logged: dict[str, list[tuple[int, float]]] = {}
    for step, name, value in rows[1:]:
        logged.setdefault(name, []).append((int(step), float(value)))
    assert [step for step, _ in logged["train/loss"]] == [5, 10]
    assert logged["train/lr"] == [(5, 0.05), (10, 0.05)] and logged["train/batch_size"] == [(5, 16.0), (10, 16.0)]
    for name, values in expected_scalars(result).items():
        assert same_series(logged[name], values), name


def test_tensorboard_log_is_read_back_by_tensorboard(small_data, tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_with(small_data, TensorBoardLog(tmp_path / "tb", every_steps=5))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [5, 10]
    for name, values in expected_scalars(result).items():
        logged = [(event.step, event.value) for event in events.Scalars(name)]
        assert same_series(logged, values, rel=1e-6), name  # event files hold float32


def test_mlflow_log_is_read_back_by_the_mlflow_client(small_data, tmp_path) -> None:
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    observer = MLflowLog(uri, run_name="naive-seed0", every_steps=5)
    result = run_with(small_data, observer)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(observer.run_id)
    assert run.info.run_name == "naive-seed0" and run.info.status == "FINISHED"
    assert run.data.tags["stream"] == "synthetic class-incremental 2" and run.data.tags["strategy"] == "Naive"
    assert [metric.step for metric in client.get_metric_history(observer.run_id, "train/loss")] == [5, 10]
    for name, values in expected_scalars(result).items():
        logged = sorted((metric.step, metric.value) for metric in client.get_metric_history(observer.run_id, name))
        assert same_series(logged, values), name


WANDB_BLOCK = 32768
"""Bytes of a block of W&B's transaction log (the LevelDB log format): a record never starts in a block's
last 6 bytes, which are padding, and one longer than its block goes on in the next (parts FIRST, MIDDLE, LAST)."""


def wandb_records(path: Path) -> list:
    """The records of a ``.wandb`` transaction log, each checked against its CRC-32 and parsed as W&B's own
    ``Record`` message: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then records of a 7-byte header
    (CRC-32 of the type byte and the data, data length, type: 1 full, 2 first, 3 middle, 4 last part) and
    their data."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:7] == struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
    records, pending, position = [], b"", 7
    while True:
        if WANDB_BLOCK - position % WANDB_BLOCK < 7:
            position += WANDB_BLOCK - position % WANDB_BLOCK
        if position + 7 > len(data):
            return records
        checksum, length, kind = struct.unpack_from("<IHB", data, position)
        part = data[position + 7:position + 7 + length]
        assert zlib.crc32(bytes([kind]) + part) == checksum and kind in (1, 2, 3, 4)
        pending, position = pending + part, position + 7 + length
        if kind in (1, 4):
            records.append(Record.FromString(pending))
            pending = b""


def child_processes() -> list[str]:
    """The command lines of this process's child processes (Linux's ``/proc``; none found elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rsplit(")", 1)[1].split()[1]  # after the name: state, parent id
            if parent == str(os.getpid()):
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError):  # a process that ended while being read
            continue
    return found


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    """W&B offline, every folder of its own (settings, cache, logs) under ``tmp_path``; its service process,
    which outlives a finished run for later ones in the same process, stopped after the test."""
    wandb = pytest.importorskip("wandb", reason="the wandb extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for variable in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))
    yield
    wandb.teardown()
    assert not [command for command in child_processes() if "wandb" in command]


def test_wandb_log_is_read_back_from_its_offline_run_folder(small_data, tmp_path, offline_wandb) -> None:
    recorder = StepRecorder()
    result = run_with(small_data, WandbLog(tmp_path / "logs", run_name="naive-seed0", every_steps=5), recorder)
    (folder,) = (tmp_path / "logs" / "wandb").glob("offline-run-*")
    (log,) = folder.glob("run-*.wandb")
    records = wandb_records(log)
    kinds = [record.WhichOneof("record_type") for record in records]
    assert kinds[0] == "header" and kinds[-1] == "exit" and records[-1].exit.exit_code == 0
    (run,) = [record.run for record in records if record.HasField("run")]
    assert run.display_name == "naive-seed0" and run.project == "lifelong"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["stream"] == "synthetic class-incremental 2" and config["strategy"] == "Naive"
    logged: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if record.HasField("history"):
            for item in record.history.item:  # a flat name, as its one-part nested key
                (name,) = item.nested_key or [item.key]
                logged.setdefault(name, []).append((record.history.step.num, json.loads(item.value_json)))
    assert [step for step, _ in logged["_step"]] == [5, 6, 10, 12]  # one log call per step that logged
    losses = [(step["step"], step["loss"]) for step in recorder.steps if step["step"] in (5, 10)]
    assert same_series(logged["train/loss"], losses) and logged["train/lr"] == [(5, 0.05), (10, 0.05)]
    for name, values in expected_scalars(result).items():
        assert same_series(logged[name], values), name


def test_config_log_writes_under_the_log_folder(tmp_path) -> None:
    config = RunConfig.model_validate({
        "dataset": {"name": "synthetic", "n_classes": 4, "n_features": 8, "n_per_class": 20},
        "scenario": {"name": "class_incremental", "n_experiences": 2},
        "model": {"name": "mlp", "hidden": [8]}, "strategy": {"name": "naive"},
        "optim": {"epochs": 1}, "run": {"log": ["csv"], "db": str(tmp_path / "runs.db"), "checkpoint": False}})
    run_config(config)
    logs = list((tmp_path / "runs-logs").glob("naive-seed0-*.csv"))
    assert len(logs) == 1 and "metrics/final_accuracy" in logs[0].read_text()


def test_a_missing_extra_names_the_pip_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ConfigError, match=r"pip install 'lifelong\[tensorboard\]'"):
        trackers(["tensorboard"], tmp_path, "run")
    with pytest.raises(ConfigError, match="unknown tracker"):
        trackers(["neptune"], tmp_path, "run")
    with pytest.raises(ConfigError, match="log_every_steps"):
        CSVLog(tmp_path / "x.csv", every_steps=0)
