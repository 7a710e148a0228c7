"""Compute-matched continual learning on Split Fashion-MNIST: every strategy at equal FLOPs, and a stream
that does not wait.

    apt-get install -y dataset-fashion-mnist      # the original files, in /usr/share/datasets/fashion-mnist
    OMP_NUM_THREADS=1 python benchmarks/budget.py --seeds 0,1,2 > docs/results/compute-matched.md

Settings, fixed before any run and the same for every strategy: class-incremental Split Fashion-MNIST (5
experiences of 2 classes, all 60,000 training and 10,000 test images), the runner's default MLP (784-256-256-10,
the digits MLP: on 2 CPU cores the reduced ResNet of ``benchmarks/fmnist.py`` would take days for 12
strategies x 5 budgets x 3 seeds), SGD lr 0.03, momentum 0.9, batch 16 (the runner's defaults), memories of
500 samples where a method has one, every other hyperparameter at its default.

* **Budgets** (:mod:`lifelong.protocol.budget`): ``--levels`` multiples of naive's FLOPs for one epoch of
  each experience (measured per seed), each run stopped when its experience's budget is spent (the closing
  hook, e.g. EWC's Fisher estimate, reserved at what it cost in the experience before). Prabhu et al. (CVPR
  2023) found that at equal compute no published method beats ER with uniform sampling.
* **A stream that does not wait** (Ghunaim et al., CVPR 2023; ``optim.stream_rate``): a batch arrives every
  naive step's FLOPs (``naive pace``) or every two (``half pace``, a learner twice as fast relative to the
  stream); a method whose step costs k times that trains on every k-th batch and the rest pass by untrained;
  every batch is predicted before any training on it (online accuracy). One pass over the stream.

Every run is kept in the results store ``--db`` (committed beside the document), so a rerun trains only what
is missing. Prints the document; ``--figures DIR`` writes accuracy against compute (Pareto front marked) and
against memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lifelong.config import load_config
from lifelong.errors import LifelongError
from lifelong.experiment import resolve_config, run_config
from lifelong.protocol.budget import run_budgeted
from lifelong.protocol.seeds import parse_seeds
from lifelong.report.budget import budget_points, on_front
from lifelong.runner.results import ResultsStore

PATH = "/usr/share/datasets/fashion-mnist"
MEMORY = 500
STRATEGIES: dict[str, dict[str, Any]] = {
    "naive": {}, "er": {"buffer_size": MEMORY}, "er_ace": {"buffer_size": MEMORY}, "der": {"buffer_size": MEMORY},
    "derpp": {"buffer_size": MEMORY}, "gdumb": {"buffer_size": MEMORY}, "agem": {"buffer_size": MEMORY},
    "icarl": {"buffer_size": MEMORY}, "lwf": {}, "ewc": {}, "ncm": {}, "fetril": {}}
REFUSED_REALTIME = {
    "gdumb": "it retrains from scratch on its memory, not on the arriving batches",
    "icarl": "it trains on the batches and its exemplars, then passes over the experience again to pick exemplars",
    "ncm": "it passes over the experience a second time for the class means (the runner refuses a real-time "
           "stream for a strategy that trains on more samples than the stream brings)"}
"""Strategies a stream that does not wait cannot serve: each needs data after it has passed."""
PACES = {"naive pace": 1.0, "half pace": 2.0}
"""Real-time rows: the stream's time between two batches, in naive steps of one batch."""


def base(db: str, dataset: str, overrides: list[str]) -> list[str]:
    """The base configuration's overrides: the stream, the store and ``overrides`` (``--set``)."""
    data = ["dataset.name=fashion_mnist", f"dataset.path={PATH!r}"] if dataset == "fashion_mnist" else \
        [f"dataset.name={dataset}"]
    return [*data, "scenario.n_experiences=5", "run.progress=false", f"run.db={db!r}", *overrides]


def naive_step_flops(store: ResultsStore, reference_run: int) -> float:
    """FLOPs of one naive step of a batch of 16: the reference run's first experience per sample, times 16."""
    cost = store.get(reference_run).experiences[0]["cost"]
    return float(cost["flops"]) * 16 / float(cost["samples"])


def realtime_run(base_overrides: list[str], label: str, settings: dict[str, Any], rate: float, seed: int,
                 store: ResultsStore) -> dict[str, Any]:
    """One pass of a real-time stream at ``rate`` FLOPs per batch; its stored run is reused."""
    overrides = [f"strategy.name={label}", *(f"strategy.{k}={v}" for k, v in settings.items()),
                 "optim.epochs=1", f"optim.stream_rate={rate}", f"run.seed={seed}"]
    paced = load_config(None, [*base_overrides, *overrides])
    found = store.find_finished(resolve_config(paced))
    try:
        record = store.get(found) if found is not None else store.get(run_config(paced, store=store).run_id)
    except LifelongError as error:
        return {"error": str(error).splitlines()[0]}
    costs = [e["cost"] for e in record.experiences]
    online = sum(c.get("online_metric", 0.0) * c.get("online_samples", 0) for c in costs)
    seen = sum(c.get("online_samples", 0) for c in costs)
    return {"final": record.metrics["final_accuracy"], "online": online / seen if seen else float("nan"),
            "trained": sum(c["samples"] for c in costs), "skipped": sum(c.get("skipped", 0) for c in costs)}


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else \
        f"{values[0]:.3f}"


def summary(points: list[Any], front: set[tuple[str, float]], levels: list[float]) -> None:
    """What the table says about the papers' claim, computed from its means: the best strategy at each level,
    ER's gap to it, and the strategies on the front."""
    print("\n### Computed from the table\n")
    for level in levels:
        cell = sorted((p for p in points if p.level == level), key=lambda p: -p.accuracy)
        er = next(p for p in cell if p.label == "er")
        rank = [p.label for p in cell].index("er") + 1
        ahead = ", ".join(f"{p.label} {p.accuracy:.3f}" for p in cell[:rank - 1])
        print(f"- {level:g}x: best {cell[0].label} {cell[0].accuracy:.3f}; er {er.accuracy:.3f}, rank {rank} of "
              f"{len(cell)}" + (f" (behind {ahead})" if ahead else ""))
    movers = sorted({label for label, _ in front})
    print(f"- on the Pareto front at some level: {', '.join(movers)}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--levels", default="0.25,0.5,1,2,4")
    parser.add_argument("--db", default="docs/results/compute-matched.db")
    parser.add_argument("--figures", type=Path, default=Path("docs/results/compute-matched"))
    parser.add_argument("--no-realtime", action="store_true")
    parser.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, or digits for a smoke test")
    parser.add_argument("--set", action="append", default=[], help="override of the base configuration")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds, levels = parse_seeds(args.seeds), [float(level) for level in args.levels.split(",")]
    started = time.perf_counter()
    overrides = base(args.db, args.dataset, args.set)
    config = load_config(None, overrides)
    store = ResultsStore(args.db)
    rows = run_budgeted(config, {label: {"name": label, **settings} for label, settings in STRATEGIES.items()},
                        levels, seeds, store, name="compute-matched fmnist")
    print("# Compute-matched continual learning on Split Fashion-MNIST\n")
    print(f"`OMP_NUM_THREADS=1 python benchmarks/budget.py --seeds {args.seeds} --levels {args.levels}` "
          f"(torch {torch.__version__}, one thread; every run in `{args.db}`)\n")
    settings, bullets = __doc__.split("\n\n")[2:4]
    print(" ".join(settings.split()) + "\n")
    print("\n".join("* " + " ".join(item.split()) for item in ("\n" + bullets).split("\n* ")[1:]) + "\n")
    print("## Every strategy at equal FLOPs\n")
    print("Budget: a multiple of naive's FLOPs for one epoch of each experience. Spent: FLOPs over the run, mean "
          "over seeds, and its ratio to the budget (above 1: the first experience's closing hook, or a method's "
          "minimum of one step; below 1: a plan that stops training, e.g. NCM and FeTrIL after their first "
          "experience). Memory: the most bytes the strategy kept. Pareto: on the front of the best final "
          "accuracy for at most that compute.\n")
    records = [store.get(row.run_id) for row in rows]
    points = budget_points(records)
    front = {(p.label, p.level) for p, mark in zip(points, on_front(points), strict=True) if mark}
    print("| strategy | budget | GFLOPs spent | spent / budget | final accuracy | forgetting | memory (KiB) | Pareto |")
    print("|---|---|---|---|---|---|---|---|")
    for label in STRATEGIES:
        for level in levels:
            cell = [row for row in rows if row.label == label and row.level == level]
            print(f"| {label} | {level:g}x | {statistics.mean(r.budget['spent'] for r in cell) / 1e9:.2f} | "
                  f"{statistics.mean(r.budget['spent_fraction'] for r in cell):.2f} | "
                  f"{spread([r.metrics['final_accuracy'] for r in cell])} | "
                  f"{spread([r.metrics['forgetting'] for r in cell])} | "
                  f"{max(r.memory_bytes for r in cell) / 1024:.0f} | {'*' if (label, level) in front else ''} |",
                  flush=True)
    summary(points, front, levels)
    if not args.no_realtime:
        step = naive_step_flops(store, int(rows[0].budget["reference_run"]))
        print("\n## A stream that does not wait\n")
        print(f"One pass; a batch of 16 arrives every {step:.3g} FLOPs (a naive step: `naive pace`) or every "
              f"{2 * step:.3g} (`half pace`). Online: accuracy on each batch as it arrives, before any training on "
              "it. Trained: share of the stream's samples trained on.\n")
        print("| strategy | pace | online accuracy | final accuracy | trained share |")
        print("|---|---|---|---|---|")
        for label, settings in STRATEGIES.items():
            if label in REFUSED_REALTIME:
                print(f"| {label} | both | not run: {REFUSED_REALTIME[label]} | | |", flush=True)
                continue
            for pace, factor in PACES.items():
                runs = [realtime_run(overrides, label, settings, step * factor, seed, store) for seed in seeds]
                failed = next((run["error"] for run in runs if "error" in run), None)
                if failed:
                    print(f"| {label} | {pace} | {failed} | | |", flush=True)
                    continue
                share = statistics.mean(run["trained"] / (run["trained"] + run["skipped"]) for run in runs)
                print(f"| {label} | {pace} | {spread([r['online'] for r in runs])} | "
                      f"{spread([r['final'] for r in runs])} | {share:.2f} |", flush=True)
    if args.figures:
        from lifelong.report.plots import budget_accuracy_vs_compute, budget_accuracy_vs_memory, png_bytes

        args.figures.mkdir(parents=True, exist_ok=True)
        print()
        for name, figure in (("accuracy-vs-compute", budget_accuracy_vs_compute(records)),
                             ("accuracy-vs-memory", budget_accuracy_vs_memory(records))):
            path = args.figures / f"{name}.png"
            path.write_bytes(png_bytes(figure))
            print(f"![{name}]({path.parent.name}/{path.name})")
    print(f"\nWall time {time.perf_counter() - started:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
