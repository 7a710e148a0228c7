"""Permuted and rotated Fashion-MNIST, task-aware: parameter isolation, gradient projection and hypernetworks
(issues 15 and 25) beside fine-tuning, regularisation, replay and the task-aware baselines.

    apt-get install -y dataset-fashion-mnist      # the original files, in /usr/share/datasets/fashion-mnist
    OMP_NUM_THREADS=1 python benchmarks/isolation.py --seeds 0,1,2 --workers 1 > docs/results/isolation.md

Every row of both row sets runs on the same task-aware stream (``domain_incremental(..., task_aware=True)``:
each sample comes with its task's index, at test time too). Every task holds all 10 classes, so the id
masks no class: it only matters to a method that picks parameters by task (DST, CLR, BN-only, the
hypernetworks and the per-task baselines). Settings are fixed before any run and are the same for every
row of a row set (none was chosen by looking at test accuracy), each strategy at its defaults unless the
row's label says otherwise; ``decay_epochs`` (DST) and ``interval_warmup_epochs`` (HyperInterval) are set
from ``--epochs``, as their docstrings ask, because a strategy does not see the runner's epochs.

- ``permuted``: GPM's published permuted-MNIST setting on Fashion-MNIST (Saha et al. 2021, ``main_pmnist.py``):
  ``--tasks`` tasks (10), an MLP 784-100-100-10 without biases or normalization, plain SGD lr 0.01 without
  momentum, batch 10, ``--epochs`` (5) per task, no clipping; GPM and CUBER with the paper's per-layer
  thresholds 0.95, 0.99, 0.99, no increment, 300 representation samples.
- ``rotated``: rotations by k x 36 degrees, ``--rotated-tasks`` tasks (5), the ``cnn`` of ``--channels``
  (32, 64) with BatchNorm (task-specific normalisation, ``bn_only``, needs one), the same optimizer. GPM and
  CUBER at their defaults (0.97 + 0.003 per task) with batch-statistics BatchNorm, as the official code's
  ``track_running_stats=False``, plus GPM variants that isolate what its forgetting comes from.

The task-aware baselines are defined here (they are baselines, not methods): *fine-tuning, head and norm
per task* trains the shared weights in every task, with a head and normalization layers of each task's own
(task-incremental fine-tuning); *a network per task* trains an independent copy of the model for each task
from the same initialisation; *joint* trains once on the union of the tasks. The hypernetworks train with
Adam at lr 0.001, as in their papers (their output regularizer is a sum over every generated weight).

Each task trains on the first ``--per-class`` training images of each class in the fixed shuffle of
``benchmarks/fmnist.py`` (the same subset for every row and seed; the seed draws the model's initialisation
and the batches) under its own fixed permutation or rotation, and is tested on the first
``--test-per-class`` test images of each class under the same transform. Prints, per row set, mean ± std
over seeds of the final accuracy (mean over tasks), average forgetting and backward transfer, the bytes
of the tensors a method keeps beyond the model (its state, ``memory_bytes()``, after the last task) and
training seconds per run; then, for the models trained directly, the first layer's drift (the relative
change of its output on task 0's test images from the end of task 0 to the end of the run) and, for GPM
and CUBER, how full each layer's basis is. Every finished run is appended to ``--results`` (JSON lines),
and a rerun with the same settings reuses it; a failing row shows its one-line error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from fmnist import PATH  # noqa: E402
from runs import finished_runs, record, row_results, spread, subset  # noqa: E402

from lifelong import OptimConfig, train  # noqa: E402
from lifelong.data import domain_incremental  # noqa: E402
from lifelong.data.files import fashion_mnist  # noqa: E402
from lifelong.data.streams import Batch, Experience, Stream  # noqa: E402
from lifelong.errors import LifelongError  # noqa: E402
from lifelong.models import cnn  # noqa: E402
from lifelong.models.classifier import Classifier  # noqa: E402
from lifelong.protocol.seeds import parse_seeds  # noqa: E402
from lifelong.runner.observers import Observer, TrainState  # noqa: E402
from lifelong.strategies import STRATEGIES, Strategy  # noqa: E402
from lifelong.strategies.base import OWN_TENSORS_FREEZE, Capabilities, ExperiencePlan, StrategyContext  # noqa: E402
from lifelong.strategies.parts.task_tables import (  # noqa: E402
    TaskTable,
    by_task,
    head_names,
    model_tensors,
    norm_names,
    parameter_names,
)


@dataclass
class PerTaskFineTuning(Strategy):
    """Task-incremental fine-tuning: the shared weights train in every experience (and forget), each task
    with its own head and normalization layers (copies of the first task's), selected by task id."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(task_ids=True, freeze=False, freeze_refusal=OWN_TENSORS_FREEZE)
    own: TaskTable = field(init=False, repr=False)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.own = TaskTable()

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        return ExperiencePlan(train_size=len(experiences[index].train), reset_optimizer=True)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.own.begin(model, experience.task_id, norm_names(model) + head_names(model))

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        own = self.own.tensors.of(self.own.current)
        return [{"params": self.own.tensors.trainable(self.own.current)
                 + [p for name, p in model.named_parameters() if name not in own]}]

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        shared = dict(model.named_parameters())
        return self.mask_logits(by_task(x, task, lambda part, t: self.own.run(model, part, t, shared)), task)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch.x, batch.y, batch.task)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.own.state()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.own.load(state, model)


@dataclass
class NetworkPerTask(Strategy):
    """A separate network per task: each task trains its own copy of every parameter and buffer of the model,
    from the model's initial values, and its samples run through it."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(task_ids=True, freeze=False, freeze_refusal=OWN_TENSORS_FREEZE)
    own: TaskTable = field(init=False, repr=False)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.own = TaskTable()

    def plan(self, experiences: Sequence[Experience], index: int) -> ExperiencePlan:
        return ExperiencePlan(train_size=len(experiences[index].train), reset_optimizer=True)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.own.current = experience.task_id
        if experience.task_id not in self.own.tensors:  # the model's own tensors never train: its initial values
            self.own.tensors.create(experience.task_id, model_tensors(model), parameter_names(model).__contains__)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return self.own.parameter_groups(model)

    def logits(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        shared = self.own.shared(model)
        return self.mask_logits(by_task(x, task, lambda part, t: self.own.run(model, part, t, shared)), task)

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.loss(model, batch.x, batch.y, batch.task)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.own.state()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.own.load(state, model)


BASELINES: dict[str, type[Strategy]] = {"per_task_finetune": PerTaskFineTuning, "network_per_task": NetworkPerTask}
ADAM = (("name", "adam"), ("lr", 0.001))
CLIP = (("grad_clip", 1.0),)
PAPER_GPM = (("layer_thresholds", (0.95, 0.99, 0.99)), ("threshold_increment", 0.0), ("samples", 300))
BATCH_STATISTICS = (("batch_norm_statistics", True),)


@dataclass(frozen=True)
class Row:
    label: str
    strategy: str
    settings: tuple[tuple[str, object], ...] = ()
    optim: tuple[tuple[str, object], ...] = ()
    """Changes to the row set's optimizer (the label says so)."""


COMMON = [Row("naive (fine-tuning, shared head)", "naive"), Row("joint", "joint"),
          Row("fine-tuning, head and norm per task", "per_task_finetune"),
          Row("a network per task", "network_per_task"), Row("ewc", "ewc"), Row("si", "si"),
          Row("ewc (gradient norm clipped to 1)", "ewc", optim=CLIP),
          Row("si (gradient norm clipped to 1)", "si", optim=CLIP),
          Row("er (200)", "er", (("buffer_size", 200),))]
ISOLATION = [Row("dst", "dst"), Row("clr", "clr"), Row("bn_only", "bn_only"),
             Row("bn_only (a trained head per task)", "bn_only", (("train_head", True),)),
             Row("hypernetwork (Adam 0.001)", "hypernetwork", optim=ADAM),
             Row("hyperinterval (Adam 0.001)", "hypernetwork", (("embedding", "interval"),), ADAM)]
ROWS = {
    "permuted": [*COMMON, Row("gpm (0.95, 0.99, 0.99)", "gpm", PAPER_GPM),
                 Row("cuber (0.95, 0.99, 0.99)", "cuber", PAPER_GPM), *ISOLATION],
    "rotated": [*COMMON, Row("gpm (batch-statistics BN)", "gpm", BATCH_STATISTICS),
                Row("gpm (running-statistics BN)", "gpm"),
                Row("gpm (batch-statistics BN, conv1 0.995)", "gpm",
                    (*BATCH_STATISTICS, ("layer_thresholds", (0.995, 0.97, 0.97)))),
                Row("cuber (batch-statistics BN)", "cuber", BATCH_STATISTICS), *ISOLATION],
}
TITLES = {"permuted": "Permuted Fashion-MNIST in GPM's permuted-MNIST setting (MLP 784-100-100-10, no biases, "
                      "no normalization)",
          "rotated": "Rotated Fashion-MNIST (k x 36 degrees), CNN with BatchNorm"}
OPTIM = {"name": "sgd", "lr": 0.01, "momentum": 0.0, "batch_size": 10, "grad_clip": None}
DIRECT = ("naive", "ewc", "si", "er", "gpm", "cuber")
"""Strategies that train the model's own weights across tasks (its first layer's drift means what it says)."""


def paper_mlp(n_classes: int) -> Classifier:
    """GPM's permuted-MNIST network: 784-100-100-10, ReLU, no biases, no normalization."""
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(784, 100, bias=False), nn.ReLU(),
                             nn.Linear(100, 100, bias=False), nn.ReLU())
    model = Classifier(backbone, 100, n_classes)
    model.head = nn.Linear(100, n_classes, bias=False)
    return model


def first_layer(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d))


class FirstLayerDrift(Observer):
    """The relative change of the first layer's output on task 0's test inputs, from the end of task 0 to the
    end of each later experience (the model's own weights)."""

    def __init__(self, model: nn.Module, stream: Stream) -> None:
        self.model, self.x = model, stream[0].test.x
        self.reference: torch.Tensor | None = None
        self.drift = 0.0

    @torch.no_grad()
    def on_experience_end(self, state: TrainState, accuracies: list[float]) -> None:
        layer = first_layer(self.model)
        out = layer(self.x.flatten(1) if isinstance(layer, nn.Linear) else self.x)
        if self.reference is None:
            self.reference = out.clone()
        else:
            self.drift = float((out - self.reference).norm() / self.reference.norm())


def make_stream(name: str, args: argparse.Namespace) -> Stream:
    data = subset(fashion_mnist(PATH), args.per_class, args.test_per_class)
    if name == "permuted":
        return domain_incremental(data, args.tasks, transform="permutation", seed=7, task_aware=True)
    return domain_incremental(data, args.rotated_tasks, transform="rotation", seed=7, task_aware=True)


def strategy_of(row: Row, args: argparse.Namespace) -> Strategy:
    settings = dict(row.settings)
    if row.strategy == "dst":
        settings["decay_epochs"] = args.epochs
    if row.strategy == "hypernetwork" and settings.get("embedding") == "interval":
        settings["interval_warmup_epochs"] = args.epochs / 2
    return {**STRATEGIES, **BASELINES}[row.strategy](**settings)


def run(name: str, row: Row, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run's figures, or its one-line error."""
    torch.set_num_threads(1)
    stream = make_stream(name, args)
    torch.manual_seed(seed)
    model = paper_mlp(stream.n_classes) if name == "permuted" else \
        cnn(stream.input_shape, stream.n_classes, channels=args.channels, norm="batch")
    strategy = strategy_of(row, args)
    optim = OptimConfig(**{**OPTIM, **dict(row.optim)}, epochs=args.epochs)
    drift = FirstLayerDrift(model, stream)
    try:
        result = train(stream, model, strategy, optim, seed=seed, device="cpu", observers=[drift])
    except (LifelongError, RuntimeError, ValueError) as error:  # a refused or failed run is reported in its row
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    figures = {"final": result.metrics["final_accuracy"], "forgetting": result.metrics.get("forgetting"),
               "bwt": result.metrics.get("backward_transfer"), "bytes": strategy.memory_bytes(),
               "seconds": sum(c.seconds for c in result.costs), "drift": drift.drift}
    subspaces = getattr(strategy, "subspaces", None)
    if subspaces is not None:
        figures["fill"] = {layer: [basis.shape[1], basis.shape[0]] for layer, basis in subspaces.bases.items()}
    return figures


def table_row(label: str, results: list[dict[str, Any]]) -> str:
    return (f"| {label} | {spread([r['final'] for r in results])} | {spread([r['forgetting'] for r in results])} | "
            f"{spread([r['bwt'] for r in results])} | {statistics.mean(r['bytes'] for r in results):,.0f} | "
            f"{statistics.mean(r['seconds'] for r in results):.0f} |")


def diagnostics(rows: list[Row], results: Callable[[Row], list[dict[str, Any]] | None]) -> None:
    print("\n| strategy | first-layer drift on task 0 | basis columns / dimensions per layer (seed 0) |")
    print("|---|---|---|")
    for row in rows:
        found = results(row) if row.strategy in DIRECT else None
        if found is None:
            continue
        fill = ", ".join(f"{layer} {k}/{d}" for layer, (k, d) in found[0].get("fill", {}).items()) or "-"
        print(f"| {row.label} | {spread([r['drift'] for r in found])} | {fill} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="permuted,rotated")
    parser.add_argument("--rows", default="", help="row labels to run, separated by semicolons (default: all)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tasks", type=int, default=10, help="tasks of the permuted row set")
    parser.add_argument("--rotated-tasks", type=int, default=5, help="tasks of the rotated row set")
    parser.add_argument("--per-class", type=int, default=300, help="training images per class and task")
    parser.add_argument("--test-per-class", type=int, default=100, help="test images per class and task")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--channels", default="32,64", help="the rotated row set's cnn widths")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--results", type=Path, default=Path("isolation-runs.jsonl"),
                        help="each finished run is appended here, and a rerun with the same settings reuses it")
    args = parser.parse_args()
    channels = args.channels
    args.channels = tuple(int(c) for c in channels.split(","))
    seeds, streams = parse_seeds(args.seeds), args.streams.split(",")
    unknown = sorted(set(streams) - set(ROWS))
    if unknown:
        parser.error(f"unknown row sets {unknown}")
    chosen = {name: [row for row in ROWS[name] if not args.rows or row.label in args.rows.split(";")]
              for name in streams}
    settings = {"version": 2, "tasks": args.tasks, "rotated_tasks": args.rotated_tasks, "per_class": args.per_class,
                "test_per_class": args.test_per_class, "epochs": args.epochs, "channels": list(args.channels)}
    done = finished_runs(args.results, settings)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        futures: dict[tuple[Any, int], Future] = {}
        for seed in seeds:  # seed by seed: a run cut short still holds every row of its first seeds
            for name in streams:
                for row in chosen[name]:
                    if (name, row.label, seed) in done:
                        continue
                    future = pool.submit(run, name, row, seed, args)
                    future.add_done_callback(lambda f, name=name, row=row, seed=seed:
                                             record(args.results, settings, name, row.label, seed, f))
                    futures[(name, row), seed] = future
        print("# Permuted and rotated Fashion-MNIST, task-aware: parameter isolation, gradient projection, "
              "hypernetworks\n")
        print(f"`OMP_NUM_THREADS=1 python benchmarks/isolation.py --streams {args.streams} --seeds {args.seeds} "
              f"--tasks {args.tasks} --rotated-tasks {args.rotated_tasks} --per-class {args.per_class} "
              f"--test-per-class {args.test_per_class} --epochs {args.epochs} --channels {channels} "
              f"--workers {args.workers}` (torch {torch.__version__}, one thread per run)\n")
        print(f"Every row on the task-aware stream (each sample's task id given; every task holds all 10 classes, "
              f"so the id masks nothing). {args.per_class} training and {args.test_per_class} test images per class "
              f"and task. Plain SGD, lr 0.01, no momentum, batch 10, constant learning rate, no clipping, "
              f"{args.epochs} epochs per task (GPM's permuted-MNIST setting), unless the row says otherwise. "
              "Mean ± std over seeds; bytes: the tensors the method keeps beyond the model after the last task "
              "(`memory_bytes()`); seconds: training per run.\n")
        for name in streams:
            tasks = args.tasks if name == "permuted" else args.rotated_tasks
            print(f"\n## {TITLES[name]}, {tasks} tasks\n")
            print("| strategy | final accuracy | forgetting | BWT | bytes kept | seconds |")
            print("|---|---|---|---|---|---|")
            found: dict[Row, list[dict[str, Any]] | None] = {}
            for row in chosen[name]:
                found[row] = row_results(done, futures, name, (name, row), row.label, seeds, 6)
                if found[row] is not None:
                    print(table_row(row.label, found[row]), flush=True)
            diagnostics(chosen[name], found.get)
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
