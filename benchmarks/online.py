"""Online class-incremental learning (issue 29): ER, ER-ACE, the contrastive replay methods PCR, HPCR and
OnPro, replay-free PSRD and the task-agnostic experts of TAME at one memory size, on digits and on Split
Fashion-MNIST, and (``digits_si_blurry``) on a Si-Blurry stream of digits.

    OMP_NUM_THREADS=1 python benchmarks/online.py --datasets digits --rows er,er_ace,pcr,hpcr,onpro,\\
        hpcr_factor_1,hpcr_no_distillation --results docs/results/online-contrastive-runs.jsonl \\
        > docs/results/online-contrastive.md
    apt-get install -y dataset-fashion-mnist      # the original files, in /usr/share/datasets/fashion-mnist
    OMP_NUM_THREADS=1 python benchmarks/online.py --datasets fashion_mnist --workers 2 \\
        --results docs/results/online-contrastive-runs.jsonl

Settings, fixed before any run and the same for every strategy (none chosen by looking at a test accuracy):
the online protocol of the PCR and OnPro papers' code, one pass over each experience's training set
(``optim.epochs = 1``) in batches of 10, each step replaying 10 samples from a reservoir memory of
``--memory`` (500) samples; plain SGD at lr 0.1 without momentum, the default of the framework PCR's code
builds on; no augmentation (so the contrastive methods see one view of each sample); every strategy at its
defaults otherwise (its paper's values), except what a row of :data:`ROWS` changes. 5 experiences of 2 classes. Digits: the MLP 256-256 of the library's
default job. Fashion-MNIST: the full 60,000 training and 10,000 test images, and the reduced ResNet-18 of the
papers (``--width`` 20 filters; about 9 minutes a run on one core), or (``fashion_mnist_mlp``) the same MLP
256-256, which takes seconds and is what a 2-core session can run for every row and seed.

Each row: mean ± std over seeds of the final accuracy (mean over experiences), the average forgetting, the
final accuracy on the last experience (what the stream taught last, plasticity) and the mean on the earlier
ones (what was kept, stability), and training seconds per run. Runs go seed by seed; every finished run is
appended to ``--results`` (JSON lines) and a rerun with the same settings reuses it, so a cut-off run
continues where it stopped. A failing row shows its one-line error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from lifelong import OptimConfig, train
from lifelong.data import class_incremental, digits, si_blurry
from lifelong.data.files import fashion_mnist
from lifelong.errors import LifelongError
from lifelong.models import mlp, resnet18
from lifelong.protocol.seeds import parse_seeds
from lifelong.strategies import STRATEGIES

sys.path.insert(0, str(Path(__file__).parent))
from runs import finished_runs, record, row_results, spread  # noqa: E402

PATH = "/usr/share/datasets/fashion-mnist"
DATASETS = ("digits", "fashion_mnist_mlp", "fashion_mnist", "digits_si_blurry")
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "er": ("er", {}), "er_ace": ("er_ace", {}), "pcr": ("pcr", {}), "hpcr": ("hpcr", {}), "onpro": ("onpro", {}),
    "hpcr_factor_1": ("hpcr", {"gradient_scale_min": 1.0, "gradient_scale_max": 1.0}),
    "hpcr_no_distillation": ("hpcr", {"logit_distillation": 0.0, "similarity_distillation": 0.0}),
    "psrd": ("psrd", {}), "psrd_prototype_lr_1": ("psrd", {"prototype_lr_scale": 1.0}), "tame": ("tame", {}),
    "kv_bottleneck": ("kv_bottleneck", {}), "view_batch": ("view_batch", {}),
    "view_batch_1": ("view_batch", {"views": 1}), "view_batch_2": ("view_batch", {"views": 2}),
}
"""Each row's strategy and the settings it changes from the defaults; the ``hpcr_*`` rows take one part of
HPCR away each (its loss factor, its distillation), to see which part a difference from PCR comes from;
``psrd_prototype_lr_1`` trains PSRD's prototypes at the run's learning rate, not a tenth of it (the
authors' multi-epoch value), to see whether one pass is too short for them.
``kv_bottleneck``'s encoder is the MLP's backbone frozen as initialised from the seed (random ReLU features:
no other stream to pretrain on is shipped, and training it on the stream would not be a frozen encoder); its
keys are fitted, without labels, on the first experience's training inputs. ``view_batch_1`` and ``view_batch_2``
are view-batch replay with 1 view (the recall interval alone) and 2 views, where ``view_batch`` has its paper's 4."""
DEFAULT_ROWS = ("er", "er_ace", "pcr", "hpcr", "onpro")
TITLES = {"digits": "Class-incremental digits, 5 x 2 classes, MLP 256-256",
          "fashion_mnist_mlp": "Class-incremental Split Fashion-MNIST, 5 x 2 classes, MLP 256-256",
          "fashion_mnist": "Class-incremental Split Fashion-MNIST, 5 x 2 classes, reduced ResNet-18",
          "digits_si_blurry": "Si-Blurry digits, 5 experiences (N = 0.5, M = 0.1, from the run's seed), MLP 256-256"}


def optim() -> OptimConfig:
    return OptimConfig(name="sgd", lr=0.1, momentum=0.0, batch_size=10, epochs=1)


def run(dataset: str, row: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run's figures, or its one-line error."""
    strategy, settings = ROWS[row]
    torch.set_num_threads(1)
    data = fashion_mnist(PATH) if dataset.startswith("fashion_mnist") else digits()
    stream = si_blurry(data, 5, seed=seed) if dataset.endswith("si_blurry") else class_incremental(data, 5)
    torch.manual_seed(seed)  # the initial weights, from the seed alone
    model = resnet18(stream.input_shape, stream.n_classes, nf=args.width) if dataset == "fashion_mnist" \
        else mlp(stream.input_shape, stream.n_classes)
    try:
        memory = {"buffer_size": args.memory} if keeps_memory(strategy) else {}
        result = train(stream, model, STRATEGIES[strategy](**memory, **settings), optim(), seed=seed,
                       device=args.device)
    except (LifelongError, RuntimeError, ValueError) as error:  # a refused or failed run is reported in its row
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    last = [float(value) for value in result.matrix[-1]]
    return {"final": result.metrics["final_accuracy"], "forgetting": result.metrics["forgetting"],
            "last": last[-1], "earlier": statistics.mean(last[:-1]), "seconds": sum(c.seconds for c in result.costs)}


def keeps_memory(strategy: str) -> bool:
    """Whether ``strategy`` has a replay memory (``buffer_size``), which every such row sets to ``--memory``."""
    return "buffer_size" in {f.name for f in fields(STRATEGIES[strategy])}


def table_row(label: str, results: list[dict[str, Any]]) -> str:
    return (f"| {label} | {spread([r['final'] for r in results])} | {spread([r['forgetting'] for r in results])} | "
            f"{spread([r['last'] for r in results])} | {spread([r['earlier'] for r in results])} | "
            f"{statistics.mean(r['seconds'] for r in results):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"of {', '.join(ROWS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--memory", type=int, default=500, help="samples in every strategy's memory")
    parser.add_argument("--width", type=int, default=20, help="the Fashion-MNIST ResNet-18's filters (nf)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--results", type=Path, default=Path("online-runs.jsonl"),
                        help="each finished run is appended here, and a rerun with the same settings reuses it")
    args = parser.parse_args()
    seeds, datasets, rows = parse_seeds(args.seeds), args.datasets.split(","), args.rows.split(",")
    unknown = sorted(set(datasets) - set(DATASETS)) + sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown datasets or rows {unknown}")
    settings = {"version": 1, "memory": args.memory, "width": args.width, "optim": optim().model_dump(mode="json")}
    done = finished_runs(args.results, settings)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        futures: dict[tuple[Any, int], Future] = {}
        for seed in seeds:  # seed by seed: a run cut short still holds every row of its first seeds
            for dataset in datasets:
                for row in rows:
                    if (dataset, row, seed) in done:
                        continue
                    future = pool.submit(run, dataset, row, seed, args)
                    future.add_done_callback(lambda f, d=dataset, r=row, seed=seed:
                                             record(args.results, settings, d, r, seed, f))
                    futures[(dataset, row), seed] = future
        print(f"# Online class-incremental: {', '.join(rows)}\n")
        print(f"`OMP_NUM_THREADS=1 python benchmarks/online.py --datasets {args.datasets} --rows {args.rows} "
              f"--seeds {args.seeds} --memory {args.memory} --width {args.width} --device {args.device} --workers "
              f"{args.workers}` (torch {torch.__version__}, one thread per run)\n")
        print(f"One pass over each experience in batches of 10, plus 10 replayed samples per step from a reservoir "
              f"memory of {args.memory}; SGD lr 0.1, no momentum; no augmentation; each strategy at its defaults "
              "(the hpcr_* rows: HPCR without one of its parts). "
              "Mean ± std over seeds; last experience: accuracy on the experience trained last, earlier: mean "
              "accuracy on the others, both after the last experience; seconds: training per run.\n")
        for dataset in datasets:
            print(f"\n## {TITLES[dataset]}\n")
            print("| strategy | final accuracy | forgetting | last experience | earlier experiences | seconds |")
            print("|---|---|---|---|---|---|")
            for row in rows:
                results = row_results(done, futures, dataset, (dataset, row), row, seeds, 6)
                if results is not None:
                    print(table_row(f"{row} ({args.memory})" if keeps_memory(ROWS[row][0]) else row, results),
                          flush=True)
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
