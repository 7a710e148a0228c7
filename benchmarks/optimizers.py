"""The optimizers and their options on the catalogue's ResNet: Split Fashion-MNIST class-incremental 5 x 2, ER with
a memory of 500, the reduced ResNet-18 (nf 8), 3 epochs per experience, batch 32, the ``fashion_mnist``
augmentation (the stream, model and augmentation of ``benchmarks/fmnist.py``, imported from it).

    OMP_NUM_THREADS=1 python benchmarks/optimizers.py --seeds 0,1,2 --workers 2 \\
        --results docs/results/optimizers-runs.jsonl > docs/results/optimizers.md
    OMP_NUM_THREADS=1 python benchmarks/optimizers.py --dataset digits --epochs 1 --seeds 0   # a check, in minutes

Every row's settings, fixed before any run, from the papers or the library's defaults (:func:`rows`):

* ``sgd``: the catalogue's baseline, lr 0.05, momentum 0.9, cosine decay over each experience;
* ``sgdp``: SGDP (Heo et al. 2021) at the baseline's settings, as the paper compares it with SGD, and its
  reference code's ``delta`` 0.1 and ``wd_ratio`` 0.1 (the library's defaults);
* ``adam``, ``adamp``: lr 1e-3 (Kingma & Ba 2015's default, AdamP's reference default), betas (0.9, 0.999),
  cosine;
* ``sgd_hd``: SGDN-HD (Baydin et al. 2018), lr 0.05 and momentum 0.9 as its start, ``hypergradient_lr`` 1e-3
  (the library's default), a constant schedule: the paper's algorithm, where the hypergradient moves the rate;
* ``sgd + agvm``: the baseline with AGVM (Xue et al. 2022) at its reference code's settings (alpha 0.97, every
  5 steps, ratio clamped to [0.5, 10]), the backbone the reference module;
* ``sgd + power``: the baseline's SGD with the Power scheduler (Shen et al. 2024) in place of cosine: the
  paper's exponent -0.51, the knee at one experience's training set (12,000 samples on Fashion-MNIST: the rate
  holds through the first experience's first epoch, then falls to 15^-0.51 = 0.25 by the last one), and the
  library's WSD decay (linear to 0 over the last 10% of each experience, so that every experience's model is
  annealed as the baseline's is);
* ``sgd + forecast_stop``: the baseline, each experience ended once a power law fitted to its training loss
  forecasts less than 0.005 nats of gain (the README's setting, a point every 25 steps).

Each row: mean ± std over seeds of the final accuracy (mean over experiences), the average forgetting, training
seconds and GFLOPs per run (``optim.count_flops``). A run that diverges or refuses is reported in its row with
its one-line error. Every finished run is appended to ``--results`` (JSON lines) and a rerun with the same
settings reuses it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from lifelong import OptimConfig, train
from lifelong.errors import LifelongError
from lifelong.models.resnet import resnet18
from lifelong.protocol.seeds import parse_seeds
from lifelong.strategies import STRATEGIES

sys.path.insert(0, str(Path(__file__).parent))
from fmnist import Row, augmentation, stream_of
from runs import finished_runs, record, row_results, spread

ER = Row("er (500)", "class", "er", 500)
"""The catalogue's ER row: its stream (class-incremental 5 x 2), memory and augmentation."""
BASELINE: dict[str, Any] = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32, "schedule": "cosine"}
"""The catalogue's optimizer (``benchmarks/fmnist.py``)."""


def rows(knee: int) -> dict[str, dict[str, Any]]:
    """Each row's changes to :data:`BASELINE`; ``knee``: the samples of one experience's training set."""
    return {"sgd": {}, "sgdp": {"name": "sgdp"}, "adam": {"name": "adam", "lr": 1e-3},
            "adamp": {"name": "adamp", "lr": 1e-3}, "sgd_hd": {"name": "sgd_hd", "schedule": "constant"},
            "sgd + agvm": {"agvm": True},
            "sgd + power": {"schedule": "power", "schedule_params": {"knee_samples": knee}},
            "sgd + forecast_stop": {"forecast_stop": 0.005}}


def run(changes: dict[str, Any], seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One row's figures for one seed, or its one-line error."""
    torch.set_num_threads(1)
    stream = stream_of(ER, args)
    torch.manual_seed(seed)
    model = resnet18(stream.input_shape, stream.n_classes, nf=args.width)
    optim = OptimConfig(**{**BASELINE, **changes}, epochs=args.epochs, count_flops=True)
    try:
        result = train(stream, model, STRATEGIES[ER.strategy](**ER.settings()), optim, seed=seed,
                       device=args.device, augment=augmentation(ER, args.dataset), channels_last=True)
    except (LifelongError, RuntimeError, ValueError) as error:  # the row shows it; the table goes on
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    return {"final": result.metrics["final_accuracy"], "forgetting": result.metrics["forgetting"],
            "seconds": sum(c.seconds for c in result.costs), "flops": sum(c.flops for c in result.costs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=8, help="nf, the ResNet-18's first width")
    parser.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, or digits to check the rows")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cuda: every run on the GPU (several workers share it)")
    parser.add_argument("--rows", default="", help="row labels to run, separated by semicolons (default: all)")
    parser.add_argument("--results", type=Path, default=Path("optimizers-runs.jsonl"),
                        help="each finished run is appended here, and a rerun with the same settings reuses it")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    knee = len(stream_of(ER, args).experiences[0].train)
    table = {label: changes for label, changes in rows(knee).items()
             if not args.rows or label in args.rows.split(";")}
    settings = {"version": 1, "epochs": args.epochs, "width": args.width, "dataset": args.dataset,
                "baseline": BASELINE, "rows": rows(knee), **({} if args.device == "cpu" else {"device": args.device})}
    done = finished_runs(args.results, settings)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn" if args.device != "cpu" else None)
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures: dict[tuple[str, int], Future] = {}
        for seed in seeds:  # seed by seed: a run cut short still holds every row of its first seeds
            for label, changes in table.items():
                if (ER.scenario, label, seed) in done:
                    continue
                future = pool.submit(run, changes, seed, args)
                future.add_done_callback(lambda f, label=label, seed=seed:
                                         record(args.results, settings, ER.scenario, label, seed, f))
                futures[label, seed] = future
        print("# Optimizers on the catalogue's ResNet: ER (500), Split Fashion-MNIST class-incremental 5 x 2\n")
        print(f"`OMP_NUM_THREADS=1 python benchmarks/optimizers.py --seeds {args.seeds} --epochs {args.epochs} "
              f"--width {args.width} --dataset {args.dataset} --results {args.results}"
              + (f" --device {args.device}" if args.device != "cpu" else "")
              + f"` (torch {torch.__version__}, one thread per run)\n")
        print(f"Reduced ResNet-18 nf={args.width}, channels-last, batch 32, {args.epochs} epoch(s) per experience, "
              f"augmentation as the catalogue's; the Power scheduler's knee at {knee} samples (one experience). "
              "Each row's settings: the script's docstring. Mean ± std over the seeds in the last column; seconds "
              "and GFLOPs per run (training only).\n")
        print("| optimizer | final accuracy | forgetting | seconds | GFLOPs | seeds |")
        print("|---|---|---|---|---|---|")
        for label in table:
            found = row_results(done, futures, ER.scenario, label, label, seeds, 6)
            if found is None:
                continue
            print(f"| {label} | {spread([r['final'] for r in found])} | {spread([r['forgetting'] for r in found])} | "
                  f"{spread([r['seconds'] for r in found], 0)} | {spread([r['flops'] / 1e9 for r in found], 1)} | "
                  f"{len(found)} |", flush=True)
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
