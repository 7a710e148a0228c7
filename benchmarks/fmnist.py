"""Split Fashion-MNIST, the reference image benchmark: the whole strategy catalogue on class-incremental 5 x 2
classes, the task-aware methods on the task-incremental split, and a domain-incremental rotated set; a
reduced ResNet-18 and the ``fashion_mnist`` augmentation preset.

    apt-get install -y dataset-fashion-mnist      # the original files, in /usr/share/datasets/fashion-mnist
    OMP_NUM_THREADS=1 python benchmarks/fmnist.py --seeds 0,1,2 --workers 2 \\
        --results docs/results/fmnist-runs.jsonl > docs/results/fmnist.md

Settings, fixed before any run and the same for every strategy (no value is chosen by looking at a test
image): the **full** training set (60,000 images) and the 10,000-image test set; the reduced ResNet-18 of
GEM/DER with ``--width`` 8 filters (chosen once, before any catalogue run, for 2 CPU cores:
``benchmarks/fmnist_epochs.py`` scored joint training on a held-out split of the training set); SGD lr 0.05,
momentum 0.9, batch 32, cosine decay over each experience, ``--epochs`` 3 per experience (joint at 3 epochs
reaches 0.906 on 6,000 held-out training images, ``docs/results/fmnist-defaults.md``); the ``fashion_mnist``
augmentation preset (2-pixel crops, flips, the training set's mean and std; crops only on the rotated set,
where a mirror is another rotation's neighbour). The gradient-projection methods (A-GEM, GPM, CUBER) take
their papers' plain SGD update (momentum 0: momentum keeps the directions the projection removed, which the
runner warns of), and the hypernetwork its paper's Adam (:data:`PAPER_OPTIMIZERS`). The weight-anchoring
penalties (EWC, SI, MAS) hold their importance below the stiffness SGD steps stably
(:func:`lifelong.strategies.parts.penalties.importance_ceiling`; without it MAS, SI and EWC diverged in
the first catalogue). Every strategy weight comes from ``lifelong tune`` on class-incremental *digits*
(``benchmarks/tune_defaults.py``, ``docs/results/fmnist-defaults.md``: :data:`TUNED`); SI's tuned values are
its code defaults; SLCA, GPM and CUBER run at their papers' values. Memory sizes (200, 500) are budgets.

Each row: mean ± std over seeds of the final accuracy (mean over experiences), the average forgetting,
iCaRL's average incremental accuracy, training seconds and GFLOPs per run (FLOPs as ``optim.count_flops``
counts them, replayed batches and the strategies' own passes included). A method that diverges or refuses
is reported in its row with its one-line error. Runs go seed by seed, so a partial table holds every row of
its first seeds; every finished run is appended to ``--results`` (JSON lines) and a rerun with the same
settings reuses it. ``--dataset digits --epochs 1`` runs every row on digits in minutes, to check the rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lifelong import OptimConfig, train
from lifelong.data import class_incremental, domain_incremental, task_incremental
from lifelong.data.augment import PRESETS, Augment
from lifelong.data.datasets import Dataset, digits
from lifelong.data.files import fashion_mnist
from lifelong.data.streams import Stream
from lifelong.errors import LifelongError
from lifelong.models.resnet import resnet18
from lifelong.protocol.seeds import parse_seeds
from lifelong.strategies import STRATEGIES

sys.path.insert(0, str(Path(__file__).parent))
from runs import accuracy_flops_figure, finished_runs, record, row_results, spread  # noqa: E402

PATH = "/usr/share/datasets/fashion-mnist"

TUNED: dict[str, dict[str, Any]] = {
    "ewc": {"lam": 12.3}, "mas": {"lam": 0.0373}, "l2": {"lam": 2.18},
    "lwf": {"alpha": 0.75, "temperature": 3.68}, "der": {"alpha": 0.897}, "derpp": {"alpha": 0.31, "beta": 1.79},
    "uer": {"cosine_scale": 4.17}, "fetril": {"weight_decay": 3.65e-6}}
"""``lifelong tune``'s choices on class-incremental digits (``docs/results/fmnist-defaults.md``)."""

PROJECTING = ("agem", "gpm", "cuber")
"""Strategies that project each step's gradient: trained with their papers' plain SGD (momentum 0)."""

PAPER_OPTIMIZERS: dict[str, dict[str, Any]] = {"hypernetwork": {"name": "adam", "lr": 1e-3}}
"""Strategies trained with their paper's optimizer: the hypernetwork's generated weights are a product of
its layers and diverged under SGD 0.05 with momentum in 2 of 3 seeds; von Oswald et al. (2020) train it with
Adam at 1e-3."""


@dataclass(frozen=True)
class Row:
    label: str
    scenario: str
    strategy: str
    memory: int | None = None

    def settings(self) -> dict[str, Any]:
        return {**TUNED.get(self.strategy, {}), **({"buffer_size": self.memory} if self.memory else {})}


REHEARSAL = ("er", "derpp", "der", "er_ace", "icarl", "gdumb", "agem", "uer")
CLASS_ROWS = [Row("joint", "class", "joint"), Row("naive", "class", "naive"),
              *(Row(f"{name} (500)", "class", name, 500) for name in REHEARSAL),
              *(Row(name, "class", name) for name in ("lwf", "ewc", "si", "mas", "l2", "ncm", "slca", "fetril", "gpm",
                                                       "cuber", "cumulative")),
              *(Row(f"{name} (200)", "class", name, 200) for name in REHEARSAL)]
TASK_ROWS = [Row("joint", "task", "joint"), Row("naive", "task", "naive"), Row("er (500)", "task", "er", 500),
             *(Row(name, "task", name) for name in ("ewc", "si", "lwf", "gpm", "cuber", "dst", "clr", "bn_only",
                                                     "hypernetwork"))]
DOMAIN_ROWS = [Row("joint", "domain", "joint"), Row("naive", "domain", "naive"), Row("er (500)", "domain", "er", 500),
               Row("derpp (500)", "domain", "derpp", 500),
               *(Row(name, "domain", name) for name in ("ewc", "si", "lwf", "gpm"))]
ROWS = CLASS_ROWS + TASK_ROWS + DOMAIN_ROWS
TITLES = {"class": "Class-incremental, 5 experiences of 2 classes (no task id at test time)",
          "task": "Task-incremental, the same split with each sample's task id (logits masked to its task's "
                  "classes): the task-aware isolation methods",
          "domain": "Domain-incremental, 5 rotations"}


def load(name: str) -> Dataset:
    return fashion_mnist(PATH) if name == "fashion_mnist" else digits()


def stream_of(row: Row, args: argparse.Namespace) -> Stream:
    dataset = load(args.dataset)
    if row.scenario == "class":
        return class_incremental(dataset, 5)
    if row.scenario == "task":
        return task_incremental(dataset, 5)
    rotated = domain_incremental(dataset, 5, transform="rotation", max_rotation=args.rotation, seed=7)
    # each rotation trains on its own fifth of the training set (a fixed shuffle), so a domain run costs what a
    # class-incremental one does, and is tested on the first --domain-test test images of that shuffle
    train_order = torch.randperm(len(dataset.y_train), generator=torch.Generator().manual_seed(0))
    test_order = torch.randperm(len(dataset.y_test), generator=torch.Generator().manual_seed(0))[:args.domain_test]
    return dataclasses.replace(rotated, experiences=tuple(
        dataclasses.replace(e, train=e.train.subset(train_order[k::5].sort().values),
                            test=e.test.subset(test_order.sort().values))
        for k, e in enumerate(rotated.experiences)))


def augmentation(row: Row, dataset: str) -> Augment | None:
    if dataset != "fashion_mnist":
        return Augment(crop_padding=1, mean=(0.3,), std=(0.4,))
    preset = PRESETS["fashion_mnist"]
    if row.scenario == "domain":  # a mirrored rotation is another rotation's neighbour: crops only
        return Augment(crop_padding=preset.crop_padding, mean=preset.mean, std=preset.std)
    return preset


def run(row: Row, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration's figures, or its one-line error (a diverged run is reported in its row)."""
    torch.set_num_threads(1)
    stream = stream_of(row, args)
    torch.manual_seed(seed)
    model = resnet18(stream.input_shape, stream.n_classes, nf=args.width)
    optim = OptimConfig(**{"lr": 0.05, "momentum": 0.0 if row.strategy in PROJECTING else 0.9,
                           **PAPER_OPTIMIZERS.get(row.strategy, {})},
                        batch_size=32, epochs=args.epochs, schedule="cosine", count_flops=True)
    try:
        result = train(stream, model, STRATEGIES[row.strategy](**row.settings()), optim, seed=seed, device=args.device,
                       augment=augmentation(row, args.dataset), channels_last=True)
    except (LifelongError, RuntimeError, ValueError) as error:  # the row shows it; the table goes on
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    metrics = result.metrics
    return {"final": metrics["final_accuracy"], "forgetting": metrics["forgetting"],
            "incremental": metrics["average_incremental_accuracy"],
            "seconds": sum(c.seconds for c in result.costs), "flops": sum(c.flops for c in result.costs)}


def print_table(rows: list[Row], results: Any, title: str, figure: Path | None = None) -> None:
    """The scenario's table, and with ``figure`` its final accuracy against GFLOPs, linked below it."""
    print(f"\n## {title}\n")
    points = []
    print("| strategy | final accuracy | forgetting | average incremental accuracy | seconds | GFLOPs | seeds |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        found = results(row)
        if found is None:
            continue
        print(f"| {row.label} | {spread([r['final'] for r in found])} | {spread([r['forgetting'] for r in found])} | "
              f"{spread([r['incremental'] for r in found])} | {statistics.mean(r['seconds'] for r in found):.0f} | "
              f"{statistics.mean(r['flops'] for r in found) / 1e9:.0f} | {len(found)} |", flush=True)
        points.append((row.strategy, row.memory, statistics.mean(r["flops"] for r in found) / 1e9,
                       statistics.mean(r["final"] for r in found)))
    if figure is not None and points:
        accuracy_flops_figure(points, figure, f"Split Fashion-MNIST, {rows[0].scenario}-incremental",
                              "final accuracy (mean over seeds)")
        print(f"\n![final accuracy against GFLOPs, {rows[0].scenario}-incremental]({figure.parent.name}/{figure.name})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=8, help="nf, the ResNet-18's first width (20: GEM)")
    parser.add_argument("--rotation", type=float, default=180.0, help="largest rotation of the domain set")
    parser.add_argument("--domain-test", type=int, default=2000, help="test images under each rotation")
    parser.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, or digits to check the rows")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cuda: every run on the GPU (several workers share it)")
    parser.add_argument("--scenarios", default="class,task,domain")
    parser.add_argument("--rows", default="", help="row labels to run, separated by semicolons (default: all)")
    parser.add_argument("--figures", type=Path, default=None,
                        help="folder for one PNG per table, final accuracy against GFLOPs (linked from the tables)")
    parser.add_argument("--available", action="store_true",
                        help="print the finished runs only (a row's seeds so far), training nothing")
    parser.add_argument("--results", type=Path, default=Path("fmnist-runs.jsonl"),
                        help="each finished run is appended here, and a rerun with the same settings reuses it")
    args = parser.parse_args()
    seeds, scenarios = parse_seeds(args.seeds), args.scenarios.split(",")
    chosen = [r for r in ROWS if r.scenario in scenarios and (not args.rows or r.label in args.rows.split(";"))]
    settings = {"version": 2, "epochs": args.epochs, "width": args.width, "rotation": args.rotation,
                "dataset": args.dataset, "domain_test": args.domain_test, "tuned": TUNED,
                **({} if args.device == "cpu" else {"device": args.device})}  # CPU runs keep their record
    done = finished_runs(args.results, settings)
    started = time.perf_counter()
    # CUDA cannot be used in a forked child: GPU workers start fresh interpreters
    context = multiprocessing.get_context("spawn" if args.device != "cpu" else None)
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures: dict[tuple[Row, int], Future] = {}
        for seed in seeds:  # seed by seed: a run cut short still holds every row of its first seeds
            for row in chosen:
                if args.available or (row.scenario, row.label, seed) in done:
                    continue
                future = pool.submit(run, row, seed, args)
                future.add_done_callback(lambda f, row=row, seed=seed:
                                         record(args.results, settings, row.scenario, row.label, seed, f))
                futures[row, seed] = future

        def results(row: Row) -> list[dict[str, Any]] | None:
            ran = [s for s in seeds if (row.scenario, row.label, s) in done or (row, s) in futures]
            return row_results(done, futures, row.scenario, row, row.label, ran, 7) if ran else None

        print("# Split Fashion-MNIST: the strategy catalogue on a reduced ResNet-18\n")
        print(f"`OMP_NUM_THREADS=1 python benchmarks/fmnist.py --seeds {args.seeds} --epochs {args.epochs} "
              f"--width {args.width} --rotation {args.rotation:g} --dataset {args.dataset} "
              f"--results {args.results}" + (f" --device {args.device}" if args.device != "cpu" else "")
              + f"` (torch {torch.__version__}, one thread per run"
              + (f", {torch.cuda.get_device_name()}, {args.workers} runs sharing it" if args.device == "cuda" else "")
              + ")\n")
        print(f"All 60,000 training and 10,000 test images (digits with `--dataset digits`). SGD lr 0.05, momentum "
              f"0.9 (0 for {', '.join(PROJECTING)}: their papers' update; "
              + ", ".join(f"{name}: {values['name']} {values['lr']:g}" for name, values in PAPER_OPTIMIZERS.items())
              + ", its paper's optimizer), batch 32, cosine decay over each "
              f"experience, {args.epochs} epoch(s) per experience; reduced ResNet-18 nf={args.width}, channels-last; "
              "augmentation preset `fashion_mnist`. Strategy weights tuned on digits, never on Fashion-MNIST: "
              + ", ".join(f"{name} " + ", ".join(f"{k}={v:g}" for k, v in values.items())
                          for name, values in TUNED.items())
              + ". Mean ± std over the seeds in the last column; seconds and GFLOPs per run (training only).\n")
        for scenario in scenarios:
            title = TITLES[scenario] + (f" of k x {args.rotation / 5:g} degrees, all 10 classes in each; each "
                                        "rotation trains on its own fifth of the training set (12,000 images) and "
                                        f"is tested on {args.domain_test} test images under it (crops, no flips)"
                                        if scenario == "domain" else "")
            print_table([r for r in chosen if r.scenario == scenario], results, title,
                        args.figures / f"{scenario}.png" if args.figures else None)
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
