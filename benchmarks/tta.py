"""Continual test-time adaptation on corrupted digits: error per domain, in stream order, and the mean.

A BatchNorm CNN is trained on clean digits, then meets the test set under five corruptions in a row
(Gaussian noise, blur, contrast, rotation, pixel dropout), abruptly at severities 3 and 5, and gradually
(1..5..1 inside each domain). Every method adapts a copy of the same source model on the same stream.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tta.py > docs/results/tta-digits.md
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from lifelong import OptimConfig, cnn, digits
from lifelong.data.streams import TensorSet
from lifelong.tta.corruptions import CORRUPTIONS, shifted_stream
from lifelong.tta.loop import adapt, train_source
from lifelong.tta.methods import METHODS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = digits()
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    model = train_source(dataset, cnn(dataset.input_shape, dataset.n_classes, channels=(32, 64), norm="batch"),
                         OptimConfig(epochs=args.epochs, lr=0.05), seed=args.seed)
    print("# Continual test-time adaptation on corrupted digits\n")
    print("```\nOMP_NUM_THREADS=1 .venv/bin/python benchmarks/tta.py > docs/results/tta-digits.md\n```\n")
    print(f"Source model: `cnn(channels=(32, 64), norm='batch')`, {args.epochs} epochs of SGD (lr 0.05, batch 16) "
          f"on the {len(dataset.y_train)} clean training digits (seed {args.seed}, "
          f"{time.perf_counter() - started:.0f} s). Test stream: the {len(dataset.y_test)} test digits once per "
          f"domain, batches of {args.batch_size}, each batch predicted before the method adapts on it; no reset "
          "between domains. Error = fraction of wrong online predictions (lower is better). Default method "
          "settings (`tent`: Adam lr 1e-3, one step per batch; `cotta`: EMA 0.999, restore 0.01, 8 augmentations, "
          "threshold 0.92).\n")
    data = TensorSet.of(dataset.x_test, dataset.y_test, 0)
    for severity, gradual in ((3, False), (5, False), (5, True)):
        domains = shifted_stream(data, list(CORRUPTIONS), severity, gradual, args.seed)
        kind = "gradual 1..5..1" if gradual else f"abrupt, severity {severity}"
        print(f"## {kind}\n")
        print("| method | " + " | ".join(CORRUPTIONS) + " | mean | seconds |")
        print("|---" * (len(CORRUPTIONS) + 3) + "|")
        for name, method in METHODS.items():
            result = adapt(copy.deepcopy(model), method(), domains, args.batch_size, args.seed)
            print(f"| {name} | " + " | ".join(f"{e:.3f}" for e in result.errors)
                  + f" | **{result.mean_error:.3f}** | {sum(result.seconds):.1f} |")
        print()


if __name__ == "__main__":
    main()
