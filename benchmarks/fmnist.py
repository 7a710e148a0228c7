"""Split Fashion-MNIST, the reference image benchmark: class-incremental 5 x 2 classes and a
domain-incremental rotated set, a reduced ResNet-18, random crops and flips, every strategy family.

    apt-get install -y dataset-fashion-mnist      # the original files, in /usr/share/datasets/fashion-mnist
    python benchmarks/fmnist.py --seeds 0,1,2 --workers 2 > docs/results/fmnist.md

Settings are fixed before any run and are the same for every strategy (no value is chosen by looking
at test accuracy): SGD, lr 0.05, momentum 0.9, batch 32, cosine decay over each experience, ``--epochs``
per experience, the ``fashion_mnist`` augmentation preset (2-pixel crops, flips, the training set's mean
and std), the reduced ResNet-18 of GEM/DER with ``--width`` filters in the channels-last format. The
width, the subset and the epochs were sized for 2 CPU cores with joint training scored on held-out
*training* images (``--per-class 3000 --width 8 --epochs 3``: 0.885 on 300 held-out images per class;
2000: 0.865; width 20 at 1000: 0.816 against 0.810 for width 8, at three times the time). On 2 CPU cores
the full 60,000 training images do not fit a catalogue of 3 seeds x 16 configurations, so each
class-incremental run trains on the first ``--per-class`` training images of each class in a fixed
shuffle (the same subset for every strategy and seed; the seed draws the model's initialisation, the
batches and the augmentation) and is tested on the full 10,000-image test set. The domain-incremental
set repeats its subset under each of 5 rotations, so it takes ``--domain-per-class`` images per class
and ``--domain-test`` test images. ``--workers`` runs that many configurations at once, each on
one thread. Prints a markdown table per scenario: mean ± std over seeds of final accuracy (mean over
experiences) and average forgetting, training seconds and FLOPs per run.
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

import numpy as np
import torch

from lifelong import OptimConfig, from_arrays, train
from lifelong.data import class_incremental, domain_incremental
from lifelong.data.augment import PRESETS
from lifelong.data.datasets import Dataset
from lifelong.data.files import fashion_mnist
from lifelong.errors import LifelongError
from lifelong.models.resnet import resnet18
from lifelong.protocol.seeds import parse_seeds
from lifelong.strategies import STRATEGIES

sys.path.insert(0, str(Path(__file__).parent))
from runs import finished_runs, record, row_results, spread  # noqa: E402

PATH = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class Row:
    label: str
    scenario: str
    strategy: str
    settings: tuple[tuple[str, object], ...] = ()


CLASS_ROWS = [Row("naive", "class", "naive"), Row("joint", "class", "joint"), Row("lwf", "class", "lwf"),
              Row("ewc", "class", "ewc")] + [
    Row(f"{name} ({memory})", "class", name, (("buffer_size", memory),))
    for memory in (200, 500) for name in ("er", "der", "derpp", "er_ace", "icarl", "gdumb")]
DOMAIN_ROWS = [Row("naive", "domain", "naive"), Row("joint", "domain", "joint"), Row("ewc", "domain", "ewc"),
               Row("lwf", "domain", "lwf"), Row("er (500)", "domain", "er", (("buffer_size", 500),)),
               Row("derpp (500)", "domain", "derpp", (("buffer_size", 500),))]


def first(labels: np.ndarray, per_class: int, n_classes: int) -> np.ndarray:
    """Indices of the first ``per_class`` samples of each class in a fixed shuffle, in order."""
    order = np.random.default_rng(0).permutation(len(labels))
    return np.sort(np.concatenate([order[labels[order] == c][:per_class] for c in range(n_classes)]))


def subset(dataset: Dataset, per_class: int, test_per_class: int | None = None) -> Dataset:
    """The first ``per_class`` training images of each class in a fixed shuffle, and as many test images
    (all of them when ``test_per_class`` is None)."""
    kept = first(dataset.y_train.numpy(), per_class, dataset.n_classes)
    tested = np.arange(len(dataset.y_test)) if test_per_class is None else \
        first(dataset.y_test.numpy(), test_per_class, dataset.n_classes)
    return from_arrays("fashion_mnist", dataset.x_train[kept].numpy(), dataset.y_train[kept].numpy(),
                       dataset.x_test[tested].numpy(), dataset.y_test[tested].numpy())


def run(row: Row, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration's figures, or its one-line error (a diverged run is reported in its row)."""
    torch.set_num_threads(1)
    full = fashion_mnist(PATH)
    if row.scenario == "class":
        stream = class_incremental(subset(full, args.per_class), 5)
    else:
        stream = domain_incremental(subset(full, args.domain_per_class, args.domain_test // full.n_classes), 5,
                                    transform="rotation", max_rotation=args.rotation, seed=7)
    torch.manual_seed(seed)
    model = resnet18(stream.input_shape, stream.n_classes, nf=args.width)
    optim = OptimConfig(lr=0.05, momentum=0.9, batch_size=32, epochs=args.epochs, schedule="cosine",
                        count_flops=True)
    augment = PRESETS["fashion_mnist"]
    if row.scenario == "domain":  # a mirrored rotation is another rotation's neighbour: crops only
        augment = type(augment)(crop_padding=augment.crop_padding, mean=augment.mean, std=augment.std)
    try:
        result = train(stream, model, STRATEGIES[row.strategy](**dict(row.settings)), optim, seed=seed,
                       device="cpu", augment=augment, channels_last=True)
    except LifelongError as error:
        return {"error": str(error)}
    return {"final": result.metrics["final_accuracy"], "forgetting": result.metrics["forgetting"],
            "seconds": sum(c.seconds for c in result.costs), "flops": sum(c.flops for c in result.costs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=3000)
    parser.add_argument("--domain-per-class", type=int, default=600)
    parser.add_argument("--domain-test", type=int, default=2000, help="test images of the domain set")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=8, help="nf, the ResNet-18's first width (20: GEM)")
    parser.add_argument("--rotation", type=float, default=180.0, help="largest rotation of the domain set")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", default="class,domain")
    parser.add_argument("--results", type=Path, default=Path("fmnist-runs.jsonl"),
                        help="each finished run is appended here, and a rerun with the same settings reuses it")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    rows = [r for r in CLASS_ROWS + DOMAIN_ROWS if r.scenario in args.rows.split(",")]
    started = time.perf_counter()
    settings = {k: v for k, v in vars(args).items() if k not in ("seeds", "workers", "rows", "results")}
    done = finished_runs(args.results, settings)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {(row, seed): pool.submit(run, row, seed, args) for row in rows for seed in seeds
                   if (row.scenario, row.label, seed) not in done}
        for (row, seed), future in futures.items():
            future.add_done_callback(lambda f, row=row, seed=seed: record(args.results, settings, row.scenario, row.label,
                                                                          seed, f))
        print("# Split Fashion-MNIST: reduced ResNet-18, augmentation, every strategy family\n")
        print(f"`python benchmarks/fmnist.py --seeds {args.seeds} --per-class {args.per_class} "
              f"--domain-per-class {args.domain_per_class} --domain-test {args.domain_test} --epochs {args.epochs} "
              f"--width {args.width} --rotation {args.rotation:g} --workers {args.workers}` "
              f"(torch {torch.__version__}, one thread per run)\n")
        print(f"Class-incremental: {args.per_class} training images per class (of 6,000), the full 10,000-image test "
              f"set. SGD lr 0.05, momentum 0.9, batch 32, cosine decay over each experience, {args.epochs} epochs per "
              f"experience; reduced ResNet-18 nf={args.width}, channels-last; augmentation preset `fashion_mnist`. "
              "Mean ± std over seeds; seconds and GFLOPs per run (training only; FLOPs as `optim.count_flops` "
              "counts them, replayed batches and the strategies' own passes included).\n")
        for scenario, title in (("class", "Class-incremental, 5 experiences of 2 classes"),
                                ("domain", f"Domain-incremental, 5 rotations of k x {args.rotation / 5:g} degrees, "
                                           f"10 classes each, {args.domain_per_class} training images per class and "
                                           f"{args.domain_test} test images under each (crops, no flips)")):
            chosen = [r for r in rows if r.scenario == scenario]
            if not chosen:
                continue
            print(f"\n## {title}\n")
            print("| strategy | final accuracy | forgetting | seconds | GFLOPs |")
            print("|---|---|---|---|---|")
            for row in chosen:
                results = row_results(done, futures, row.scenario, row, row.label, seeds, 5)
                if results is None:
                    continue
                print(f"| {row.label} | {spread([r['final'] for r in results])} | "
                      f"{spread([r['forgetting'] for r in results])} | "
                      f"{statistics.mean(r['seconds'] for r in results):.0f} | "
                      f"{statistics.mean(r['flops'] for r in results) / 1e9:.0f} |", flush=True)
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
