"""What the long benchmarks share: every finished run appended to a JSON-lines file as it ends (a crash
or an interrupt loses no finished run, and a rerun with the same settings reuses them), mean ± std over
seeds for the tables, and a fixed per-class subset of a dataset."""

from __future__ import annotations

import json
import statistics
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from lifelong import from_arrays
from lifelong.data.datasets import Dataset


def finished_runs(path: Path, settings: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The runs recorded in ``path`` with these settings, by (group, row label, seed)."""
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["scenario"], r["row"], r["seed"]): r["result"] for r in records if r["settings"] == settings}


def record(path: Path, settings: dict[str, Any], group: str, label: str, seed: int, future: Future) -> None:
    """Append a finished run to ``path`` as it ends."""
    if future.exception() is None:
        line = {"settings": settings, "scenario": group, "row": label, "seed": seed, "result": future.result()}
        with path.open("a") as file:
            file.write(json.dumps(line) + "\n")


def row_results(done: dict[tuple[str, str, int], dict[str, Any]], futures: dict[Any, Future], group: str,
                row: Any, label: str, seeds: list[int], columns: int) -> list[dict[str, Any]] | None:
    """A row's result for every seed (recorded earlier or just run), or None after printing the row's
    failure (its first error, in a table of ``columns`` columns)."""
    results = [done.get((group, label, seed)) or futures[row, seed].result() for seed in seeds]
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        print(f"| {label} | failed in {len(errors)} of {len(results)} seeds: {errors[0]} |" + " |" * (columns - 2),
              flush=True)
        return None
    return results


def spread(values: list[float | None], digits: int = 3) -> str:
    """Mean ± std over seeds (the value alone for one seed), ``-`` for a metric a run does not have (a joint
    run's forgetting)."""
    if any(value is None for value in values):
        return "-"
    if len(values) == 1:  # one seed has no spread to show
        return f"{values[0]:.{digits}f}"
    deviation = statistics.stdev(values)  # type: ignore[arg-type]
    return f"{statistics.mean(values):.{digits}f} ± {deviation:.{digits}f}"


def accuracy_flops_figure(points: list[tuple[str, int | None, float, float]], path: Path, title: str,
                          ylabel: str) -> None:
    """Final accuracy against GFLOPs per run, one point per row ``(strategy, memory or None, GFLOPs,
    accuracy)``: colour by strategy, marker by memory size, log x axis; written to ``path`` as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(dict.fromkeys(strategy for strategy, _, _, _ in points))
    palette = plt.get_cmap("tab20").colors + plt.get_cmap("tab20b").colors  # 40: the catalogue has 21 and more
    colours = {name: palette[i % len(palette)] for i, name in enumerate(strategies)}
    sizes = sorted({memory for _, memory, _, _ in points if memory is not None})
    markers = {None: "o", **dict(zip(sizes, "s^Dvp", strict=False))}
    fig, ax = plt.subplots(figsize=(9, 6))
    for strategy, memory, gflops, accuracy in points:
        ax.scatter(gflops, accuracy, color=colours[strategy], marker=markers.get(memory, "X"), s=40,
                   edgecolors="black", linewidths=0.4)
    handles = [plt.Line2D([], [], color=colours[name], marker="o", linestyle="", label=name) for name in strategies]
    handles += [plt.Line2D([], [], color="grey", marker=markers[size], linestyle="", label=f"memory {size}")
                for size in sizes]
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set_xscale("log")
    ax.set_xlabel("GFLOPs per run (training, forward + backward)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)



def first_per_class(labels: np.ndarray, per_class: int, n_classes: int) -> np.ndarray:
    """Indices of the first ``per_class`` samples of each class in a fixed shuffle (seed 0), in order."""
    order = np.random.default_rng(0).permutation(len(labels))
    return np.sort(np.concatenate([order[labels[order] == c][:per_class] for c in range(n_classes)]))


def subset(dataset: Dataset, per_class: int, test_per_class: int | None = None) -> Dataset:
    """The first ``per_class`` training images of each class in a fixed shuffle, and as many test images
    (all of them when ``test_per_class`` is None): the same subset for every row and seed of a benchmark."""
    kept = first_per_class(dataset.y_train.numpy(), per_class, dataset.n_classes)
    tested = np.arange(len(dataset.y_test)) if test_per_class is None else \
        first_per_class(dataset.y_test.numpy(), test_per_class, dataset.n_classes)
    return from_arrays(dataset.name, dataset.x_train[kept].numpy(), dataset.y_train[kept].numpy(),
                       dataset.x_test[tested].numpy(), dataset.y_test[tested].numpy())
