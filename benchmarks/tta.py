"""Continual test-time adaptation on corrupted digits: error per domain, in stream order, and the mean.

A BatchNorm CNN is trained on clean digits, then meets the test set under five corruptions in a row
(Gaussian noise, blur, contrast, rotation, pixel dropout), abruptly at severities 3 and 5, and gradually
(1..5..1 inside each domain), in i.i.d. batches of 64; then at severity 3 on the streams of issue 16:
labels correlated over time (Dirichlet label shift, and sorted by label) and batches of one. Every method
adapts a copy of the same source model on the same stream.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tta.py > docs/results/tta-digits.md
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from lifelong import OptimConfig, cnn, digits
from lifelong.data.streams import TensorSet
from lifelong.tta.corruptions import CORRUPTIONS, Domain, shifted_stream
from lifelong.tta.loop import adapt, train_source
from lifelong.tta.methods import FILTERED, METHODS, build_method

RUNS = [*METHODS, f"tent{FILTERED}", f"rmt{FILTERED}"]
CONCENTRATION = 0.1
REPEATS = 10
"""How many times each domain is streamed in the diagnostic of UnMix-TNS on longer domains."""


def lengthened(domains: list[Domain], repeats: int) -> list[Domain]:
    """Each domain streamed ``repeats`` times in a row (same samples, same order)."""
    return [Domain(d.name, d.x.repeat(repeats, 1, 1, 1), d.y.repeat(repeats), d.severity.repeat(repeats))
            for d in domains]


def table(title: str, domains: list[Domain], batch_size: int, runs: list[str], model: nn.Module,
          source: TensorSet, seed: int) -> dict[str, float]:
    """Print one markdown table (a row per method in ``runs``), return each method's mean error."""
    print(f"## {title}\n")
    print("| method | " + " | ".join(CORRUPTIONS) + " | mean | seconds |")
    print("|---" * (len(CORRUPTIONS) + 3) + "|")
    means = {}
    for name in runs:
        result = adapt(copy.deepcopy(model), build_method(name), domains, batch_size, seed, source=source)
        means[name] = result.mean_error
        print(f"| {name} | " + " | ".join(f"{e:.3f}" for e in result.errors)
              + f" | **{result.mean_error:.3f}** | {sum(result.seconds):.1f} |", flush=True)
    print()
    return means


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
          f"domain, batches of {args.batch_size} unless the section says otherwise, each batch predicted before the "
          "method adapts on it; no reset between domains. Error = fraction of wrong online predictions (lower is "
          "better). Default method settings, the papers' (`tent`: Adam lr 1e-3, one step per batch; `cotta`: EMA "
          "0.999, restore 0.01, 8 augmentations, threshold 0.92; `unmix_tns`: K = 16 components, alpha 0.5, "
          "tau 0.07, momentum 0.1 per 64 samples; `rmt`: Adam lr 1e-3, EMA 0.999, contrastive temperature 0.1 "
          "and weight 1, projector width 128, prototypes from the clean training digits, no warm-up, no source "
          "replay; `+filter`: the open-set filter of Lee et al. 2023, margin 0). Nothing was tuned on these "
          "streams.\n")
    data = TensorSet.of(dataset.x_test, dataset.y_test, 0)
    source = TensorSet.of(dataset.x_train, dataset.y_train, 0)
    streams = [(f"abrupt, severity {severity}", severity, False, "iid", args.batch_size) for severity in (3, 5)]
    streams += [("gradual 1..5..1", 5, True, "iid", args.batch_size),
                (f"label-correlated (Dirichlet, delta = {CONCENTRATION}), severity 3", 3, False, "dirichlet",
                 args.batch_size),
                ("label-correlated (sorted by label), severity 3", 3, False, "sorted", args.batch_size),
                ("batch size 1, severity 3", 3, False, "iid", 1)]
    means, lengthened_means = {}, {}
    for title, severity, gradual, order, batch_size in streams:
        domains = shifted_stream(data, list(CORRUPTIONS), severity, gradual, args.seed, order, CONCENTRATION)
        means[title] = table(title, domains, batch_size, RUNS, model, source, args.seed)
        if severity == 3 and (order != "iid" or batch_size == 1):
            lengthened_means[title] = table(f"diagnostic: {title}, each domain streamed {REPEATS} times",
                                            lengthened(domains, REPEATS), batch_size, ["bn_adapt", "unmix_tns"],
                                            model, source, args.seed)
    print("## UnMix-TNS against bn_adapt (the acceptance of issue 16)\n")
    print(f"| stream | bn_adapt | unmix_tns | unmix_tns beats bn_adapt | same, domains {REPEATS}x longer |")
    print("|---|---|---|---|---|")
    for title, longer in lengthened_means.items():
        bn, unmix = means[title]["bn_adapt"], means[title]["unmix_tns"]
        print(f"| {title} | {bn:.3f} | {unmix:.3f} | {'yes' if unmix < bn else 'no'} | "
              f"{longer['bn_adapt']:.3f} vs {longer['unmix_tns']:.3f} |")
    closed = all(longer["unmix_tns"] < longer["bn_adapt"] for longer in lengthened_means.values())
    print("\nUnMix-TNS normalizes each sample with the equal mixture of its K components, the sample's own "
          "statistics entering with weight 1/K (1/16), so it adapts only as fast as the components move; with "
          "momentum 0.1 per 64 samples shared among the components, they move a few percent over a 450-sample "
          "domain (the paper's CIFAR-10-C domains hold 10,000 samples). On these digits it therefore stays near "
          "the source model (worse than it on contrast, where the components' random initial spread, alpha = "
          "0.5, is large against the shrunken features): it is unaffected by label correlation and batch size, "
          "as designed, but the corruptions shift the statistics far more than one-class or one-sample batches "
          "do, so batch statistics remain the better estimate here. The last column streams each domain "
          f"{REPEATS} times (a longer stream, no setting changed): "
          + ("there UnMix-TNS beats bn_adapt on every stream, so the short domains explain the gap." if closed else
             "the gap narrows where the components have time to move, but does not close."))


if __name__ == "__main__":
    main()
