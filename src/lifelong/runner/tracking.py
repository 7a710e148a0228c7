"""Experiment tracking: observers that log a run's scalars to a CSV file, TensorBoard event files, an
MLflow tracking store or an offline Weights & Biases run, as ``run.log = ["csv", "tensorboard", "mlflow",
"wandb"]`` asks.

What is logged, at the run's optimizer step: every ``every_steps`` steps ``train/loss``, ``train/lr``
and ``train/batch_size``; after each experience its row of the accuracy matrix, ``accuracy/exp_<j>``
(accuracy on experience ``j``'s test set), and its cost, ``cost/<field>`` (seconds, samples, steps,
memory, FLOPs: :class:`~lifelong.metrics.compute.ExperienceCost`); after the last experience the run's
metrics, ``metrics/<name>`` (:func:`~lifelong.metrics.accuracy_matrix.summary`).

A step only appends three numbers to a list; the writing happens at the end of each experience, after
its training clock has stopped, so tracking costs no training time (a TensorBoard scalar costs about
0.1 ms to write, a tenth of a step of the digits MLP). TensorBoard, MLflow and W&B are optional extras
(``pip install 'lifelong[tensorboard]'``, ``'lifelong[mlflow]'``, ``'lifelong[wandb]'``); asking for one that
is not installed is a :class:`~lifelong.errors.ConfigError` naming the ``pip install`` to run, raised
before training.
"""

from __future__ import annotations

import csv
import importlib
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

from lifelong.config import Tracker
from lifelong.data.text import validation_bytes_per_token
from lifelong.errors import ConfigError
from lifelong.metrics.objectives import matrix_summary, metric_name
from lifelong.runner.observers import Observer, RunContext, TrainState

Record = tuple[int, str, float]
"""One logged scalar: ``(step, name, value)``."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` of the optional extra ``extra``, or say which ``pip install`` brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"run.log: {extra!r} needs the optional package {extra}; install it with "
                          f"pip install 'lifelong[{extra}]'") from None


class ScalarLog(Observer):
    """Base of the tracking observers: collects the scalars (module docstring) and hands them to
    :meth:`write` at the end of each experience, then :meth:`close` after the last. Only the main
    process of a data-parallel run logs."""

    def __init__(self, every_steps: int = 10) -> None:
        if every_steps < 1:
            raise ConfigError(f"run.log_every_steps must be >= 1, got {every_steps}")
        self.every_steps = every_steps
        self.records: list[Record] = []
        self.context: RunContext | None = None
        self.active = False

    def on_run_start(self, context: RunContext) -> None:
        self.context, self.records = context, []
        self.active = context.world.is_main
        if self.active:
            self.open(context)

    def on_step(self, state: TrainState) -> None:
        if self.active and state.step % self.every_steps == 0:
            self.records += [(state.step, "train/loss", state.loss), (state.step, "train/lr", state.lr),
                             (state.step, "train/batch_size", float(state.batch_size))]

    def on_experience_end(self, state: TrainState, accuracies: list[float]) -> None:
        if not self.active:
            return
        context = self.context
        assert context is not None, "on_run_start was not called"
        step = state.step
        objective = context.stream.objective
        self.records += [(step, f"{metric_name(objective)}/exp_{j}", float(a)) for j, a in enumerate(accuracies)]
        self.records += [(step, f"cost/{name}", float(value)) for name, value in context.costs[-1].as_dict().items()
                         if value is not None]  # MFU without a peak is n/a, not a number
        last = len(context.rows) == (1 if context.strategy.capabilities.joint else len(context.stream))
        if last:
            sizes = [len(test) for test in context.test_sets]
            metrics = matrix_summary(objective, context.rows, context.initial, sizes,
                                     bytes_per_token=validation_bytes_per_token(context.stream))
            self.records += [(step, f"metrics/{name}", float(value)) for name, value in metrics.items()
                             if isinstance(value, float | int)]
        self.write(self.records)
        self.records = []
        if last:
            self.close()

    def open(self, context: RunContext) -> None:
        """Prepare the destination, before training."""

    def write(self, records: Sequence[Record]) -> None:
        """Write ``records`` (in the order they were logged)."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the log after the last experience."""


class CSVLog(ScalarLog):
    """``step,name,value`` rows appended to a CSV file (its header written when the file is new); needs
    nothing beyond Python."""

    def __init__(self, path: str | Path, every_steps: int = 10) -> None:
        super().__init__(every_steps)
        self.path = Path(path)

    def open(self, context: RunContext) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.write_rows([("step", "name", "value")])

    def write(self, records: Sequence[Record]) -> None:
        self.write_rows(records)

    def write_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as file:
            csv.writer(file).writerows(rows)


class TensorBoardLog(ScalarLog):
    """TensorBoard event files in ``folder`` (``tensorboard --logdir`` on it or a parent shows them),
    written with ``torch.utils.tensorboard``; needs ``pip install 'lifelong[tensorboard]'``."""

    def __init__(self, folder: str | Path, every_steps: int = 10) -> None:
        super().__init__(every_steps)
        self.folder = Path(folder)
        self.writer_class = require("torch.utils.tensorboard", "tensorboard").SummaryWriter
        self.writer: Any = None

    def open(self, context: RunContext) -> None:
        self.writer = self.writer_class(log_dir=str(self.folder))

    def write(self, records: Sequence[Record]) -> None:
        for step, name, value in records:
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowLog(ScalarLog):
    """One MLflow run in experiment ``experiment`` of the tracking store at ``tracking_uri``, tagged with
    the stream and the strategy; needs ``pip install 'lifelong[mlflow]'``.

    :func:`trackers` puts the store in a local SQLite file, ``sqlite:///<folder>/mlflow.db`` (browse it
    with ``mlflow ui --backend-store-uri`` and that URI): MLflow 3 keeps its ``./mlruns`` file store in
    maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true`` is set; a ``file:`` URI
    still works for whoever sets that."""

    #: MLflow takes at most this many metrics in one ``log_batch``.
    BATCH = 1000

    def __init__(self, tracking_uri: str, experiment: str = "lifelong", run_name: str | None = None,
                 every_steps: int = 10) -> None:
        super().__init__(every_steps)
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.mlflow = require("mlflow", "mlflow")
        self.client: Any = None
        self.run_id = ""

    def open(self, context: RunContext) -> None:
        self.client = self.mlflow.tracking.MlflowClient(tracking_uri=self.tracking_uri)
        found = self.client.get_experiment_by_name(self.experiment)
        experiment = found.experiment_id if found is not None else self.client.create_experiment(self.experiment)
        tags = {"stream": context.stream.name, "strategy": type(context.strategy).__name__}
        self.run_id = self.client.create_run(experiment, run_name=self.run_name, tags=tags).info.run_id

    def write(self, records: Sequence[Record]) -> None:
        metric = self.mlflow.entities.Metric
        stamp = int(time.time() * 1000)
        metrics = [metric(name, value, stamp, step) for step, name, value in records]
        for begin in range(0, len(metrics), self.BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[begin:begin + self.BATCH])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbLog(ScalarLog):
    """One Weights & Biases run in offline mode, in project ``project``, named ``run_name`` and configured
    with the stream and the strategy: ``wandb`` writes it under ``folder/wandb/offline-run-<time>-<id>/``
    (its ``.wandb`` file) and sends nothing anywhere, whatever ``WANDB_MODE`` says; ``wandb sync`` on that
    folder uploads it, if ever wanted. Each step's scalars are one ``log`` call at that step (W&B's
    ``_step`` is the run's optimizer step). Needs ``pip install 'lifelong[wandb]'``."""

    def __init__(self, folder: str | Path, project: str = "lifelong", run_name: str | None = None,
                 every_steps: int = 10) -> None:
        super().__init__(every_steps)
        self.folder, self.project, self.run_name = Path(folder), project, run_name
        self.wandb = require("wandb", "wandb")
        self.run: Any = None

    def open(self, context: RunContext) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        settings = self.wandb.Settings(console="off", silent=True, save_code=False, disable_git=True)
        self.run = self.wandb.init(mode="offline", dir=str(self.folder), project=self.project, name=self.run_name,
                                   config={"stream": context.stream.name, "strategy": type(context.strategy).__name__},
                                   settings=settings)

    def write(self, records: Sequence[Record]) -> None:
        for step, group in itertools.groupby(records, key=lambda record: record[0]):
            self.run.log({name: value for _, name, value in group}, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS: tuple[str, ...] = get_args(Tracker)
"""The names ``run.log`` takes."""


def check_folder(folder: Path) -> None:
    """Refuse, before anything is written, a log folder that cannot be made because a file stands where it
    or one of its parents would be (``mkdir`` would fail mid-run with ``NotADirectoryError``)."""
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise ConfigError(f"run.log_dir: {str(part)!r} is a file, so the logs cannot be written in "
                                  f"{str(folder)!r}; set run.log_dir to a folder (or move the file)")
            return


def trackers(names: Sequence[str], folder: str | Path, run_name: str, every_steps: int = 10) -> list[ScalarLog]:
    """The observers ``names`` ask for, writing under ``folder``: ``<run_name>.csv``, TensorBoard files
    in ``tensorboard/<run_name>/``, MLflow runs named ``run_name`` in ``mlflow.db``, offline W&B runs
    named ``run_name`` in ``wandb/``."""
    folder = Path(folder)
    unknown = sorted(set(names) - set(TRACKERS))
    if unknown:
        raise ConfigError(f"run.log: unknown tracker(s) {unknown}; choose among {list(TRACKERS)}")
    made: dict[str, ScalarLog] = {}
    for name in dict.fromkeys(names):
        check_folder(folder / "tensorboard" if name == "tensorboard" else folder)
        if name == "csv":
            made[name] = CSVLog(folder / f"{run_name}.csv", every_steps)
        elif name == "tensorboard":
            made[name] = TensorBoardLog(folder / "tensorboard" / run_name, every_steps)
        elif name == "wandb":
            made[name] = WandbLog(folder, run_name=run_name, every_steps=every_steps)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            made[name] = MLflowLog(f"sqlite:///{(folder / 'mlflow.db').resolve()}", run_name=run_name,
                                   every_steps=every_steps)
    return list(made.values())
