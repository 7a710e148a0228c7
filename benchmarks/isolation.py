"""Permuted and rotated Fashion-MNIST, 5 tasks: parameter isolation, gradient projection and hypernetworks
(issue 15) against fine-tuning, regularisation and replay.

    apt-get install -y dataset-fashion-mnist      # the original files, in /usr/share/datasets/fashion-mnist
    python benchmarks/isolation.py --seeds 0,1,2 --workers 2 > docs/results/isolation.md

Settings are fixed before any run and are the same for every strategy (none was chosen by looking at test
accuracy), each strategy with its default hyperparameters (ER with a memory of 200): SGD, lr 0.05,
momentum 0.9, batch 32, constant learning rate, gradient norm clipped to 1 (without it EWC's and SI's
penalties diverge at their default strengths), ``--epochs`` per task, no augmentation; the hypernetwork
alone is trained with Adam at lr 0.001 without clipping, as in its paper (under this SGD its output
regularizer, a sum over every generated weight, diverges on the MLP unclipped and learns slowly clipped;
Adam after clipping forgot three times more on the MLP); GPM and CUBER use SGD without momentum, as in
their papers (a velocity carries directions the projection removed). Permuted: an MLP
784-100-100-10 with BatchNorm; rotated: the ``cnn`` of ``--channels`` with BatchNorm (every row gets the
same model; BatchNorm because task-specific normalisation, ``bn_only``, needs one). Each task trains on
the first ``--per-class`` training images of each class in the fixed shuffle of ``benchmarks/fmnist.py``
(the same subset for every strategy and seed; the seed draws the model's initialisation and the batches)
under its own fixed permutation of the pixels or rotation by k x 36 degrees, and is tested on the first
``--test-per-class`` test images of each class under the same transform.

Stream per row: a method that picks its parameters by task id at test time (``Capabilities.task_ids``)
runs on the task-aware stream (``domain_incremental(..., task_aware=True)``: each test sample comes with
its task's index); every other method on the same stream without task ids. Every task holds all 10
classes, so the task id is no class mask: it only matters to a method that uses it. A row whose strategy
this build does not register says so instead of running. Prints a markdown table per stream: mean ± std
over seeds of final accuracy (mean over tasks), average forgetting and backward transfer, the bytes of the
tensors a method keeps beyond the model (its state: ``memory_bytes()``) divided by the number of tasks, and
training seconds per run. ``--workers`` runs that many runs at once, each on one thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

from fmnist import PATH, spread, subset  # noqa: E402

from lifelong import OptimConfig, train  # noqa: E402
from lifelong.data import domain_incremental  # noqa: E402
from lifelong.data.files import fashion_mnist  # noqa: E402
from lifelong.errors import LifelongError  # noqa: E402
from lifelong.models import cnn, mlp  # noqa: E402
from lifelong.protocol.seeds import parse_seeds  # noqa: E402
from lifelong.strategies import STRATEGIES  # noqa: E402

TASKS = 5
STREAMS = {"permutation": "Permuted Fashion-MNIST, MLP 784-100-100-10",
           "rotation": "Rotated Fashion-MNIST (k x 36 degrees), CNN"}
NORMS = {"batch": "with BatchNorm", "none": "without normalization"}


@dataclass(frozen=True)
class Row:
    label: str
    strategy: str
    settings: tuple[tuple[str, object], ...] = ()
    optim: tuple[tuple[str, object], ...] = ()
    """Changes to the shared optimizer settings (the label says so)."""


ROWS = [Row("naive", "naive"), Row("ewc", "ewc"), Row("si", "si"), Row("er (200)", "er", (("buffer_size", 200),)),
        Row("gpm (SGD, no momentum)", "gpm", optim=(("momentum", 0.0),)),
        Row("cuber (SGD, no momentum)", "cuber", optim=(("momentum", 0.0),)), Row("dst", "dst"), Row("clr", "clr"),
        Row("bn_only", "bn_only"),
        Row("hypernetwork (Adam 0.001, no clip)", "hypernetwork",
            optim=(("name", "adam"), ("lr", 0.001), ("momentum", 0.0), ("grad_clip", None)))]
OPTIM = {"lr": 0.05, "momentum": 0.9, "batch_size": 32, "grad_clip": 1.0}


def task_aware(row: Row) -> bool:
    """Whether the row runs on the task-aware stream: its strategy picks parameters by task id."""
    return STRATEGIES[row.strategy].CAPABILITIES.task_ids


def run(row: Row, transform: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    data = subset(fashion_mnist(PATH), args.per_class, args.test_per_class)
    stream = domain_incremental(data, TASKS, transform=transform, seed=7, task_aware=task_aware(row))
    torch.manual_seed(seed)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(100, 100), norm=args.norm) if transform == "permutation" \
        else cnn(stream.input_shape, stream.n_classes, channels=args.channels, norm=args.norm)
    strategy = STRATEGIES[row.strategy](**dict(row.settings))
    optim = OptimConfig(**{**OPTIM, **dict(row.optim)}, epochs=args.epochs)
    try:
        result = train(stream, model, strategy, optim, seed=seed, device="cpu")
    except LifelongError as error:  # a refused or failed run is reported in its row
        return {"error": str(error)}
    return {"final": result.metrics["final_accuracy"], "forgetting": result.metrics["forgetting"],
            "bwt": result.metrics["backward_transfer"], "kept": strategy.memory_bytes() / TASKS,
            "seconds": sum(c.seconds for c in result.costs)}


def table_row(row: Row, results: list[dict[str, Any]]) -> str:
    stream = "task-aware" if task_aware(row) else "without task ids"
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return f"| {row.label} | {stream} | failed: {errors[0]} | | | | |"
    return (f"| {row.label} | {stream} | {spread([r['final'] for r in results])} | "
            f"{spread([r['forgetting'] for r in results])} | {spread([r['bwt'] for r in results])} | "
            f"{results[0]['kept'] / 1024:,.1f} | {statistics.mean(r['seconds'] for r in results):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(row.strategy for row in ROWS),
                        help="strategies, by registry name, among " + ", ".join(row.strategy for row in ROWS))
    parser.add_argument("--streams", default="permutation,rotation")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=300, help="training images per class and task")
    parser.add_argument("--test-per-class", type=int, default=100, help="test images per class and task")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--channels", default="16,32", help="the rotated stream's cnn widths")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--norm", choices=sorted(NORMS), default="batch",
                        help="both models' normalization (bn_only needs one)")
    args = parser.parse_args()
    channels = args.channels
    args.channels = tuple(int(c) for c in channels.split(","))
    seeds, streams, names = parse_seeds(args.seeds), args.streams.split(","), args.rows.split(",")
    unknown = sorted(set(names) - {row.strategy for row in ROWS}) + sorted(set(streams) - set(STREAMS))
    if unknown:
        parser.error(f"unknown rows or streams {unknown}")
    rows = [row for row in ROWS if row.strategy in names]
    missing = [row for row in rows if row.strategy not in STRATEGIES]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {(row, transform, seed): pool.submit(run, row, transform, seed, args)
                   for transform in streams for row in rows if row not in missing for seed in seeds}
        print("# Permuted and rotated Fashion-MNIST: parameter isolation, gradient projection, hypernetworks\n")
        print(f"`python benchmarks/isolation.py --rows {args.rows} --streams {args.streams} --seeds {args.seeds} "
              f"--per-class {args.per_class} --test-per-class {args.test_per_class} --epochs {args.epochs} "
              f"--channels {channels} --norm {args.norm} --workers {args.workers}` "
              f"(torch {torch.__version__}, one thread per run)\n")
        print(f"{TASKS} tasks, each all 10 classes under its own transform: {args.per_class} training and "
              f"{args.test_per_class} test images per class and task. SGD lr 0.05, momentum 0.9 (unless the row "
              f"says otherwise), batch 32, constant learning rate, gradient norm clipped to 1, {args.epochs} epochs "
              "per task; every strategy "
              "at its defaults (ER: 200 samples). "
              "Stream: *task-aware* rows get each test sample's task id (methods that pick parameters by task), "
              "the others run without task ids (every task holds all classes, so the id masks nothing). Mean ± "
              "std over seeds; kept: the bytes of the tensors the method keeps beyond the model (`memory_bytes()`), "
              "per task; seconds: training per run.\n")
        for transform in streams:
            print(f"\n## {STREAMS[transform]} {NORMS[args.norm]}\n")
            print("| strategy | stream | final accuracy | forgetting | BWT | kept per task (KiB) | seconds |")
            print("|---|---|---|---|---|---|---|")
            for row in rows:
                if row in missing:
                    print(f"| {row.label} | - | not registered in this build | | | | |", flush=True)
                    continue
                print(table_row(row, [futures[row, transform, seed].result() for seed in seeds]), flush=True)
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
