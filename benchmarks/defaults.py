"""How the default hyperparameters were chosen: on a validation split carved from the *training* set
of digits (the test set is never looked at), over 3 seeds.

    python benchmarks/defaults.py

Prints, for each candidate, the mean final accuracy and forgetting on the validation stream. The
defaults in ``OptimConfig`` (SGD, lr 0.03, momentum 0.9, batch 16) and in the EWC / LwF dataclasses
are the best rows of these tables.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from lifelong.config import OptimConfig
from lifelong.data.datasets import Dataset, digits, from_arrays
from lifelong.data.scenarios import SCENARIOS
from lifelong.errors import TrainingError
from lifelong.models import mlp
from lifelong.runner import train
from lifelong.strategies import ER, EWC, Joint, LwF, Naive, Strategy
from lifelong.protocol.seeds import parse_seeds


def validation_dataset(fraction: float = 0.2, seed: int = 123) -> Dataset:
    """Digits' training set split again into train and validation; the test set is left out."""
    full = digits()
    order = torch.randperm(len(full.y_train), generator=torch.Generator().manual_seed(seed))
    held, kept = order[: int(len(order) * fraction)], order[int(len(order) * fraction):]
    return from_arrays("digits-validation", full.x_train[kept], full.y_train[kept],
                       full.x_train[held], full.y_train[held])


def score(dataset: Dataset, scenario: str, make: type[Strategy] | object, optim: OptimConfig,
          seeds: list[int]) -> tuple[float, float]:
    finals, forgets = [], []
    for seed in seeds:
        stream = SCENARIOS[scenario](dataset, 5, seed=seed)
        torch.manual_seed(seed)
        model = mlp(stream.input_shape, stream.n_classes)
        try:
            result = train(stream, model, make(), optim, seed=seed)  # type: ignore[operator]
        except TrainingError:  # diverged: report it rather than hide it
            return float("nan"), float("nan")
        finals.append(result.metrics["final_accuracy"])
        forgets.append(result.metrics["forgetting"] or 0.0)
    return statistics.mean(finals), statistics.mean(forgets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    data = validation_dataset()
    print("| optimizer (class-incremental validation stream) | joint final | er final |")
    print("|---|---|---|")
    for lr, momentum, batch in [(0.1, 0.0, 32), (0.1, 0.9, 32), (0.05, 0.9, 32), (0.05, 0.9, 16), (0.03, 0.9, 16)]:
        optim = OptimConfig(lr=lr, momentum=momentum, batch_size=batch)
        joint = score(data, "class_incremental", Joint, optim, seeds)[0]
        er = score(data, "class_incremental", lambda: ER(buffer_size=200), optim, seeds)[0]
        print(f"| sgd lr={lr} momentum={momentum} batch={batch} | {joint:.3f} | {er:.3f} |")
    print()
    print("| strategy | scenario | final | forgetting |")
    print("|---|---|---|---|")
    optim = OptimConfig()
    candidates = [("naive", Naive)] + [(f"ewc lam={lam:g}", lambda lam=lam: EWC(lam=lam)) for lam in (1, 10, 100, 1000)] \
        + [(f"lwf alpha={a:g}", lambda a=a: LwF(alpha=a)) for a in (0.5, 1.0, 2.0)]
    for scenario in ("task_incremental", "domain_incremental"):
        for name, make in candidates:
            final, forget = score(data, scenario, make, optim, seeds)
            print(f"| {name} | {scenario} | {final:.3f} | {forget:.3f} |")


if __name__ == "__main__":
    main()
