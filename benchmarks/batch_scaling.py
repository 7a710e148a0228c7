"""Learning rate against batch size: does the scaling rule that matches the optimizer keep accuracy
when the batch grows at a fixed number of epochs?

    OMP_NUM_THREADS=1 python benchmarks/batch_scaling.py > docs/results/batch-scaling.md

Data: sklearn ``make_classification`` (10 classes, 32 features, 40,000 samples, 80/20 train/test
split), far larger than digits so that batches up to 1024 still give tens of steps per epoch. Two
settings: joint training on the whole stream (the i.i.d. reference) and class-incremental ER (5
experiences of 2 classes, memory 1000). The learning rate is given at batch 16 (SGD 0.01 with momentum
0.9, Adam 0.001: common defaults, not tuned here) and scaled to the batch size by ``none``,
``linear`` or ``sqrt``; LARS and LAMB run at the largest batches with ``auto``. Every run warms up
linearly over its first 5% of steps (Goyal et al. 2017). Prints final accuracy, steps, training wall
time and the training time until average accuracy first reaches ``--target`` (evaluated ~10 times per
run; "-" if never).

With ``--probe`` it prints instead what the batch-size and learning-rate probes
(:mod:`lifelong.optim.probe`, ``lifelong probe``) recommend for the same workload: the gradient noise
scale and the sharpness of the same MLP at initialization, on the first experience and on the whole
stream, and on the first two experiences after training on the first (SGD at batch 16, as the grid's base):

    OMP_NUM_THREADS=1 python benchmarks/batch_scaling.py --probe
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

from lifelong import ER, Joint, Naive, OptimConfig, class_incremental, from_arrays, mlp, train
from lifelong.errors import TrainingError
from lifelong.optim.probe import probe
from lifelong.runner.observers import PeriodicEvaluation

BASE_BATCH = 16
BASE_LR = {"sgd": 0.01, "adam": 0.001, "lars": 0.01, "lamb": 0.001}


def dataset(seed: int = 0):
    x, y = make_classification(n_samples=40_000, n_features=32, n_informative=20, n_redundant=4,
                               n_classes=10, n_clusters_per_class=2, class_sep=1.5, random_state=seed)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    mean, std = x_train.mean(0), x_train.std(0)
    return from_arrays("make_classification", (x_train - mean) / std, y_train, (x_test - mean) / std, y_test)


def run(stream, strategy, optimizer: str, batch_size: int, rule: str, epochs: int, target: float, seed: int):
    samples = sum(len(e.train) for e in stream)
    steps = epochs * math.ceil(samples / batch_size)
    optim = OptimConfig(name=optimizer, lr=BASE_LR[optimizer], momentum=0.9, batch_size=batch_size,
                        base_batch_size=BASE_BATCH, lr_scaling=rule, epochs=epochs, schedule="warmup",
                        schedule_params={"warmup_steps": max(1, steps // 20), "horizon": "stream"})
    curve = PeriodicEvaluation(every_steps=max(1, steps // 10))
    torch.manual_seed(seed)
    model = mlp(stream.input_shape, stream.n_classes, hidden=(128, 128))
    started = time.perf_counter()
    try:
        result = train(stream, model, strategy, optim, seed=seed, observers=[curve])
    except TrainingError:
        return {"accuracy": None, "steps": None, "seconds": time.perf_counter() - started, "to_target": None,
                "lr": None}
    sizes = [len(e.test) for e in stream]
    reached = [p.seconds for p in curve.points
               if sum(a * n for a, n in zip(p.accuracies, sizes)) / sum(sizes) >= target]
    return {"accuracy": result.metrics["final_accuracy"], "steps": sum(c.steps for c in result.costs),
            "seconds": sum(c.seconds for c in result.costs), "to_target": reached[0] if reached else None,
            "lr": result.lr}


def probe_table(stream, epochs: int, seed: int) -> None:
    """The probes' numbers, as a markdown table: at initialization (experience 0, the whole stream) and
    on experiences 0 and 1 after ``epochs`` epochs of SGD on experience 0 at batch 16."""
    def model():
        torch.manual_seed(seed)
        return mlp(stream.input_shape, stream.n_classes, hidden=(128, 128))

    trained = model()
    first = dataclasses.replace(stream, experiences=stream.experiences[:1])
    train(first, trained, Naive(), OptimConfig(name="sgd", lr=BASE_LR["sgd"], momentum=0.9, batch_size=BASE_BATCH,
                                                epochs=epochs), seed=seed)
    print("| model | probed on | samples | tr(Sigma) | abs(G)^2 | B_simple | batch | lambda_max | 2/lambda_max | "
          "2(1+0.9)/lambda_max | iterations | s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, net, data, where in (("initial", model(), stream[0].train, "experience 0"),
                                   ("initial", model(), stream.joined().train, "whole stream"),
                                   (f"after {epochs} epochs on exp 0", trained, stream[0].train, "experience 0"),
                                   (f"after {epochs} epochs on exp 0", trained, stream[1].train, "experience 1")):
        r = probe(net, data)
        print(f"| {name} | {where} | {r.samples} | {r.trace_covariance:.3g} | {r.squared_gradient_norm:.3g} | "
              f"{r.noise_scale:.3g} | {r.batch_size} | {r.max_eigenvalue:.3g} | {r.max_stable_lr:.3g} | "
              f"{r.max_stable_lr_with(0.9):.3g} | {r.iterations} | {r.seconds:.1f} |", flush=True)


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--probe", action="store_true", help="print the probes' recommendations instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    stream = class_incremental(dataset(args.seed), 5, seed=args.seed)
    if args.probe:
        print(f"Command: `OMP_NUM_THREADS=1 python benchmarks/batch_scaling.py --probe --epochs {args.epochs} "
              f"--seed {args.seed}`\n")
        probe_table(stream, args.epochs, args.seed)
        return
    largest = args.batch_sizes[-2:]
    grid = [(o, b, r) for o in ("sgd", "adam") for b in args.batch_sizes for r in ("none", "linear", "sqrt")
            if b != BASE_BATCH or r == "none"]
    grid += [(o, b, "auto") for o in ("lars", "lamb") for b in largest]
    print(f"Command: `OMP_NUM_THREADS=1 python benchmarks/batch_scaling.py --epochs {args.epochs} "
          f"--target {args.target} --seed {args.seed} --batch-sizes {' '.join(map(str, args.batch_sizes))}`\n")
    print(f"Stream: {stream.name}, {sum(len(e.train) for e in stream)} training samples; {args.epochs} epochs; "
          f"learning rate given at batch {BASE_BATCH} ({BASE_LR}); MLP 128-128; warmup over 5% of steps; "
          f"target accuracy {args.target}. Wall times on a shared 2-core CPU, torch 1 thread.\n")
    for setting, make in (("joint (i.i.d. reference)", Joint), ("class-incremental ER, memory 1000",
                                                                 lambda: ER(buffer_size=1000))):
        print(f"### {setting}\n")
        print("| optimizer | batch | rule | lr | final accuracy | steps | train s | s to target |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        for optimizer, batch_size, rule in grid:
            row = run(stream, make(), optimizer, batch_size, rule, args.epochs, args.target, args.seed)
            print(f"| {optimizer} | {batch_size} | {rule} | {fmt(row['lr'], '.4g')} | "
                  f"{fmt(row['accuracy'], '.3f') if row['accuracy'] is not None else 'diverged'} | "
                  f"{fmt(row['steps'], 'd')} | {row['seconds']:.1f} | {fmt(row['to_target'], '.1f')} |", flush=True)
        print()


if __name__ == "__main__":
    main()
