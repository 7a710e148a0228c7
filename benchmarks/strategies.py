"""The strategy catalogue: every registered strategy on class-incremental and task-incremental digits
(5 experiences of 2 classes), memory 200 where a method keeps one, an MLP (256, 256) and the default
OptimConfig (SGD lr 0.03, momentum 0.9, batch 16, 5 epochs), over 3 seeds.

    OMP_NUM_THREADS=1 python benchmarks/strategies.py > docs/results/digits.md

Prints a markdown table: mean ± std over seeds of the final accuracy and of forgetting, training
seconds (the runner's clock, evaluation excluded) and samples held in memory at the end. Two extra rows
run A-GEM and naive with the plain SGD of the A-GEM paper (momentum 0); one runs SI with gradient
clipping (its default run diverges in class-incremental); one runs SLCA with the backbone
scale that a validation split preferred (``benchmarks/strategy_defaults.py``). A run whose loss diverges
is reported as such, not dropped; a method that refuses the MLP or the stream (the prompt methods need a ViT,
the task-aware isolation methods task ids at test time) is reported with its one-line refusal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from lifelong.config import OptimConfig
from lifelong.data import class_incremental, digits, task_incremental
from lifelong.errors import ConfigError, TrainingError
from lifelong.models import mlp
from lifelong.runner import train
from lifelong.strategies import STRATEGIES, Strategy
from lifelong.protocol.seeds import parse_seeds

MEMORY = 200
SETTINGS: dict[str, dict[str, object]] = {name: {"buffer_size": MEMORY} for name in
                                          ("er", "er_ace", "der", "derpp", "gdumb", "agem", "icarl", "uer")}
SCENARIOS = {"class-incremental": class_incremental, "task-incremental": task_incremental}


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {deviation:.3f}"


def row(label: str, scenario: str, make: Callable[[], Strategy], optim: OptimConfig, seeds: list[int]) -> str:
    dataset = digits()
    finals, forgets, seconds, memory, diverged = [], [], [], 0, 0
    for seed in seeds:
        stream = SCENARIOS[scenario](dataset, 5)
        torch.manual_seed(seed)
        model = mlp(stream.input_shape, stream.n_classes)
        try:
            result = train(stream, model, make(), optim, seed=seed)
        except TrainingError:
            diverged += 1
            continue
        except ConfigError as error:  # a method that cannot train this model or stream says so in one line
            return f"| {label} | {scenario} | - | - | - | - | refused: {str(error).splitlines()[0]} |"
        finals.append(result.metrics["final_accuracy"])
        if result.metrics["forgetting"] is not None:
            forgets.append(result.metrics["forgetting"])
        seconds.append(sum(cost.seconds for cost in result.costs))
        memory = result.costs[-1].buffer_size
    note = f"diverged in {diverged}/{len(seeds)} seeds" if diverged else ""
    time_text = f"{statistics.mean(seconds):.1f}" if seconds else "-"
    return f"| {label} | {scenario} | {spread(finals)} | {spread(forgets)} | {time_text} | {memory} | {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    names = args.strategies.split(",")
    row("warm-up", "class-incremental", STRATEGIES["naive"], OptimConfig(epochs=1), seeds[:1])  # first-call costs
    started = time.perf_counter()
    print("# Strategy catalogue on digits\n")
    print(f"`OMP_NUM_THREADS=1 python benchmarks/strategies.py --seeds {args.seeds}` "
          f"(torch {torch.__version__}, {torch.get_num_threads()} thread)\n")
    print("Final accuracy and forgetting: mean ± std over seeds; seconds: training time per run; memory: "
          "samples held at the end (NCM and FeTrIL keep class means only, SLCA means and covariances).\n")
    print("| strategy | scenario | final accuracy | forgetting | seconds | memory | note |")
    print("|---|---|---|---|---|---|---|")
    for scenario in SCENARIOS:
        for name in names:
            settings = SETTINGS.get(name, {})
            print(row(name, scenario, lambda name=name, settings=settings: STRATEGIES[name](**settings),
                      OptimConfig(), seeds), flush=True)
    plain = OptimConfig(momentum=0.0)
    for name in ("naive", "agem"):
        settings = SETTINGS.get(name, {})
        print(row(f"{name} (momentum 0)", "class-incremental",
                  lambda name=name, settings=settings: STRATEGIES[name](**settings), plain, seeds), flush=True)
    print(row("si (optim.grad_clip=1)", "class-incremental", STRATEGIES["si"], OptimConfig(grad_clip=1.0), seeds),
          flush=True)
    print(row("slca (backbone_lr_scale=0, best on validation)", "class-incremental",
              lambda: STRATEGIES["slca"](backbone_lr_scale=0.0), OptimConfig(), seeds), flush=True)
    print(f"\nTotal wall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
