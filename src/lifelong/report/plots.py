"""The report's figures, drawn with matplotlib's Agg backend from stored runs.

Every figure of :data:`FIGURES` works from a run's continual-evaluation curve; a run recorded without one
(``run.eval_every_steps`` unset) is drawn from its end-of-experience points instead (the initial
accuracies, then one point per row of the accuracy matrix), which is exactly the curve sampled at the
experience boundaries. The figures of :data:`BUDGET_FIGURES` compare strategies run at equal compute
budgets (:mod:`lifelong.report.budget`): one point per strategy and level, not a curve per run.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import EngFormatter, MaxNLocator  # noqa: E402

from lifelong.metrics.efficiency import AXES, compute_axes, mean_accuracy  # noqa: E402
from lifelong.report.budget import UNIT_NAMES, budget_points, pareto_front  # noqa: E402
from lifelong.runner.results import RunRecord  # noqa: E402

AXIS_LABELS = {"samples": "samples seen", "steps": "optimizer steps", "seconds": "training time", "flops": "FLOPs"}

AXIS_UNITS = {"samples": "", "steps": "", "seconds": "s", "flops": "FLOP"}
BUDGET_UNITS = {"steps": "", "seconds": "s", "flops": "FLOP"}
"""Tick labels in engineering notation (``20k``, ``1.5 TFLOP``, ``300 ms``): readable at any scale,
with no shared ``1e12`` offset that a reader has to multiply in; counts (samples, steps) tick at whole
numbers."""


def _ticks(axis: Any, name: str) -> None:
    axis.xaxis.set_major_formatter(EngFormatter(unit=AXIS_UNITS[name], sep=" " if AXIS_UNITS[name] else ""))
    if name in ("samples", "steps"):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def run_label(record: RunRecord) -> str:
    return f"run {record.id} ({record.strategy}, seed {record.seed})"


def points_of(record: RunRecord) -> list[dict[str, Any]]:
    """The run's curve, or its end-of-experience points when no curve was recorded."""
    if record.curve:
        return record.curve
    points = [{"step": 0, "samples": 0, "seconds": 0.0, "experience": 0, "accuracies": list(record.initial or [])}] \
        if record.initial else []
    step = samples = 0
    seconds = 0.0
    for experience in record.experiences:
        cost = experience["cost"]
        step, samples = step + int(cost["steps"]), samples + int(cost["samples"])
        seconds += float(cost["seconds"])
        points.append({"step": step, "samples": samples, "seconds": seconds, "experience": experience["index"],
                       "accuracies": experience["accuracies"]})
    return points


MARKERS = "os^Dv<>Ph*Xd"
"""Marker per series, cycled with a 20-colour map so that a dozen strategies stay distinguishable."""


def _series_style(index: int) -> dict[str, Any]:
    """Colour and marker of the ``index``-th series: tab20's colours, even ones first (the saturated half),
    and a marker that changes with every colour."""
    return {"color": plt.get_cmap("tab20")((2 * index) % 20 + (2 * index) // 20 % 2),
            "marker": MARKERS[index % len(MARKERS)]}


def _grid(count: int, width: float = 4.2, height: float = 3.4) -> tuple[Figure, list[Any]]:
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    flat = list(axes.flat)
    for unused in flat[count:]:
        unused.set_visible(False)
    return figure, flat[:count]


def _switch_steps(points: Sequence[dict[str, Any]]) -> list[int]:
    """Steps at which a new experience starts: the last point of each experience but the final one."""
    return [a["step"] for a, b in zip(points, points[1:], strict=False) if b["experience"] > a["experience"]]


def heatmaps(records: Sequence[RunRecord]) -> Figure:
    """Each run's accuracy matrix R[i, j] as a heatmap with the values written in."""
    figure, axes = _grid(len(records))
    for axis, record in zip(axes, records, strict=True):
        matrix = np.asarray(record.rows, dtype=float)  # (rows, T)
        image = axis.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        for (i, j), value in np.ndenumerate(matrix):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if value < 0.6 else "black")
        axis.set_xlabel("tested on experience")
        axis.set_ylabel("after training on")
        axis.set_title(run_label(record), fontsize=9)
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    return figure


def accuracy_per_experience(records: Sequence[RunRecord]) -> Figure:
    """Accuracy on each experience's test set against optimizer steps, experience switches dashed."""
    figure, axes = _grid(len(records))
    for axis, record in zip(axes, records, strict=True):
        points = points_of(record)
        steps = [p["step"] for p in points]
        accuracies = np.asarray([p["accuracies"] for p in points], dtype=float)  # (P, T)
        for experience in range(accuracies.shape[1] if accuracies.ndim == 2 else 0):
            axis.plot(steps, accuracies[:, experience], label=f"exp {experience}", linewidth=1.2)
        for step in _switch_steps(points):
            axis.axvline(step, color="grey", linestyle="--", linewidth=0.7)
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("optimizer steps")
        _ticks(axis, "steps")
        axis.set_ylabel("accuracy")
        axis.set_title(run_label(record), fontsize=9)
        axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    return figure


def stability_gap(records: Sequence[RunRecord]) -> Figure:
    """Mean accuracy on the experiences before the current one against steps: the dip after each
    switch is the stability gap (De Lange et al. 2023). Runs share one axis for comparison."""
    figure, axis = plt.subplots(figsize=(8, 4))
    for record in records:
        points = points_of(record)
        xs, ys = [], []
        for point in points:
            current = point["experience"]
            if current >= 1:
                xs.append(point["step"])
                ys.append(float(np.mean(point["accuracies"][:current])))
        line, = axis.plot(xs, ys, marker="." if not record.curve else None, label=run_label(record))
        for step in _switch_steps(points):
            axis.axvline(step, color=line.get_color(), linestyle=":", linewidth=0.6)
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("optimizer steps")
    _ticks(axis, "steps")
    axis.set_ylabel("mean accuracy on earlier experiences")
    axis.set_title("stability gap: old-experience accuracy during training")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def accuracy_vs_compute(records: Sequence[RunRecord]) -> Figure:
    """Mean accuracy over every experience against each compute axis the runs have (FLOPs only when
    every run counted them)."""
    series = [(record, points_of(record)) for record in records]
    available = [name for name in AXES if all(name in compute_axes(points, [e["cost"] for e in record.experiences])
                                              for record, points in series)]
    figure, axes = _grid(len(available), width=4.6)
    for axis, name in zip(axes, available, strict=True):
        for record, points in series:
            values = compute_axes(points, [e["cost"] for e in record.experiences])[name]
            axis.plot(values, mean_accuracy(points), label=run_label(record), linewidth=1.2)
        axis.set_xlabel(AXIS_LABELS[name])
        _ticks(axis, name)
        axis.set_ylabel("mean accuracy, all experiences")
        axis.set_ylim(-0.02, 1.02)
        axis.legend(fontsize=6)
    figure.suptitle("accuracy against compute")
    figure.tight_layout()
    return figure


def _front_line(axis: Any, xs: Sequence[float], ys: Sequence[float], front: Sequence[bool]) -> None:
    """The Pareto front, the best accuracy reached for at most each cost: a step up at each of its points
    (ringed), held to the right edge."""
    marked = sorted((x, y) for x, y, on in zip(xs, ys, front, strict=True) if on)
    if not marked:
        return
    fx, fy = [x for x, _ in marked], [y for _, y in marked]
    axis.step([*fx, max(xs)], [*fy, fy[-1]], where="post", color="black", linestyle="--", linewidth=1.0,
              label="Pareto front", zorder=1)
    axis.scatter(fx, fy, s=140, facecolors="none", edgecolors="black", linewidths=1.2, zorder=3)


def budget_accuracy_vs_compute(records: Sequence[RunRecord]) -> Figure:
    """Final accuracy against the compute each strategy spent at each budget level (means over seeds,
    one standard deviation as bars), one line per strategy through its levels, the Pareto front of the
    best accuracy for at most that compute dashed, its points ringed; log compute axis, one panel per
    budget unit."""
    points = budget_points(records)
    units = list(dict.fromkeys(p.unit for p in points))
    figure, axes = _grid(len(units), width=6.0, height=4.4)
    for axis, unit in zip(axes, units, strict=True):
        shown = [p for p in points if p.unit == unit]
        for index, label in enumerate(dict.fromkeys(p.label for p in shown)):
            line = sorted((p for p in shown if p.label == label), key=lambda p: p.spent)
            drawn = axis.errorbar([p.spent for p in line], [p.accuracy for p in line],
                                  yerr=[p.accuracy_std or 0.0 for p in line], markersize=4, capsize=2,
                                  linewidth=1.2, label=label, zorder=2, **_series_style(index))
            for point in line:
                axis.annotate(point.budget, (point.spent, point.accuracy), textcoords="offset points",
                              xytext=(4, -9), fontsize=6, color=drawn[0].get_color())
        xs, ys = [p.spent for p in shown], [p.accuracy for p in shown]
        _front_line(axis, xs, ys, pareto_front(xs, ys))
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(EngFormatter(unit=BUDGET_UNITS[unit], sep=" " if BUDGET_UNITS[unit] else ""))
        axis.set_xlabel(f"{UNIT_NAMES[unit]} spent, all experiences (log)")
        axis.set_ylabel("final accuracy")
        axis.set_ylim(-0.02, 1.02)
        axis.legend(fontsize=7)
        axis.set_title(f"accuracy at equal {UNIT_NAMES[unit]}", fontsize=10)
    figure.tight_layout()
    return figure


def budget_accuracy_vs_memory(records: Sequence[RunRecord]) -> Figure:
    """Final accuracy against the memory each strategy keeps (``memory_bytes``, the most after any
    experience; means over seeds), a point per strategy and budget level, the Pareto front of the best
    accuracy for at most that memory marked. Log memory axis, linear below the smallest non-zero memory
    so that a strategy keeping nothing is drawn at 0."""
    points = budget_points(records)
    figure, axis = plt.subplots(figsize=(6.0, 4.4))
    for index, label in enumerate(dict.fromkeys(p.label for p in points)):
        own = [p for p in points if p.label == label]
        drawn = axis.scatter([p.memory_bytes for p in own], [p.accuracy for p in own], label=label, s=22, zorder=2,
                             **_series_style(index))
        for point in own:
            axis.annotate(point.budget, (point.memory_bytes, point.accuracy), textcoords="offset points",
                          xytext=(4, -3), fontsize=6, color=drawn.get_facecolor()[0])
    xs, ys = [p.memory_bytes for p in points], [p.accuracy for p in points]
    _front_line(axis, xs, ys, pareto_front(xs, ys))
    positive = [x for x in xs if x > 0]
    if positive and len(positive) < len(xs):
        axis.set_xscale("symlog", linthresh=min(positive))
    elif positive:
        axis.set_xscale("log")
    axis.xaxis.set_major_formatter(EngFormatter(unit="B", sep=" "))
    axis.set_xlabel("memory kept by the strategy (memory_bytes, log)")
    axis.set_ylabel("final accuracy")
    axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize=7)
    axis.set_title("accuracy against memory", fontsize=10)
    figure.tight_layout()
    return figure


#: Figure name -> (title, builder), in report order.
FIGURES = {
    "accuracy_matrix": ("Accuracy matrix", heatmaps),
    "accuracy_per_experience": ("Accuracy per experience over training", accuracy_per_experience),
    "stability_gap": ("Stability gap", stability_gap),
    "accuracy_vs_compute": ("Accuracy against compute", accuracy_vs_compute),
}


#: The figures of runs a budget protocol ran (:mod:`lifelong.protocol.budget`), drawn when a report has any.
BUDGET_FIGURES = {
    "budget_accuracy_vs_compute": ("Accuracy against compute at equal budgets", budget_accuracy_vs_compute),
    "budget_accuracy_vs_memory": ("Accuracy against memory", budget_accuracy_vs_memory),
}


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes; the figure is closed (matplotlib keeps open figures alive)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
