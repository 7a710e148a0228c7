"""The rich tables the commands print: an accuracy matrix, a run's metrics and cost, a stream's
experiences, a registry's entries with their parameters, and the metrics every summary shows.

Rendering for a terminal is command-line work, so these live in the ``cli`` layer, shared by the
command modules beside them (:mod:`lifelong.cli.run`, :mod:`lifelong.cli.scenarios`,
:mod:`lifelong.cli.protocol`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from lifelong.config import parameters
from lifelong.metrics.aggregate import NOT_METRICS
from lifelong.metrics.utilization import mfu

METRIC_NAMES = ("final_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer",
                "forward_transfer", "final_accuracy_pooled", "average_incremental_accuracy_per_experience")
"""The accuracy-matrix metrics every run has (the first three head sweep tables)."""

LOSS_METRIC_NAMES = ("final_loss", "final_perplexity", "average_loss", "tokens", "replayed_tokens")
"""The loss-matrix metrics of a language model's run (:func:`lifelong.metrics.objectives.loss_summary`), shown
before the metrics it shares with a classifier's (forgetting and transfer, in nats per token)."""

CURVE_METRIC_NAMES = ("stability_gap", "relative_stability_gap", "min_old_accuracy", "worst_case_accuracy",
                      "recovered_fraction", "a_auc", "last_accuracy")
"""Metrics of a continual-evaluation curve, shown when the run kept one."""

_ABBREVIATIONS = ("e.g.", "i.e.", "al.", "vs.", "cf.", "etc.")


def fmt(value: Any) -> str:
    """A table cell: ``-`` for a missing value, integers as integers, floats to three decimals (or three
    significant digits when that would show nothing, e.g. a learning rate of 1e-4, or a huge count)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.3g}"
    return str(value)


def metric_names(metrics: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every metric the runs stored (a number or None, not :data:`NOT_METRICS`): the accuracy-matrix
    metrics first, then the curve's, then any other (a test-time adaptation run's errors per domain)."""
    stored = dict.fromkeys(name for values in metrics for name, value in values.items()
                           if name not in NOT_METRICS and (value is None or _is_number(value)))
    known = [name for name in (*LOSS_METRIC_NAMES, *METRIC_NAMES, *CURVE_METRIC_NAMES) if name in stored]
    return known + [name for name in stored if name not in known]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def first_sentence(doc: str | None) -> str:
    """The first whole sentence of a docstring: up to the first ``.``, ``!`` or ``?`` that ends a
    sentence (followed by a capital, outside brackets, not an abbreviation such as "e.g." or "et al.");
    the whole first paragraph when no sentence ends inside it."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    depth = 0
    for i, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        elif char in ".!?" and depth == 0 and text[i + 1:i + 2] == " " and \
                (text[i + 2:i + 3].isupper() or text[i + 2:i + 3] in "`(\"'"):
            if text[:i + 1].rsplit(" ", 1)[-1].lower() not in _ABBREVIATIONS:
                return text[:i + 1]
    return text


def headline(metrics: Mapping[str, Any]) -> tuple[str, str, str]:
    """The three metrics that head a table of runs or groups, read from one run's (or a summary's) metrics:
    a classifier's accuracies and forgetting, or a language model's losses and forgetting (in nats)."""
    if "final_loss" in metrics and "final_accuracy" not in metrics:
        return "final_loss", "average_loss", "forgetting"
    return "final_accuracy", "average_incremental_accuracy", "forgetting"


def matrix_title(metrics: Mapping[str, Any]) -> str:
    """What a run's matrix holds, read from its metrics: accuracies, or a language model's losses."""
    return "loss matrix (validation loss, nats per token)" if "final_loss" in metrics else "accuracy matrix"


def matrix_table(matrix: Sequence[Sequence[float]], title: str = "accuracy matrix",
                 columns: Sequence[str] | None = None, rows: Sequence[str] | None = None) -> Table:
    """An accuracy matrix (rows: after training on, columns: tested on), its cells labelled ``exp i``
    unless ``columns`` and ``rows`` name them (the domains of a test-time adaptation run)."""
    width = len(matrix[0]) if len(matrix) else 0
    table = Table(title=title if columns is not None else title + " (row: after training on, column: tested on)")
    table.add_column("trained \\ tested" if columns is None else "")
    for label in columns if columns is not None else [f"exp {j}" for j in range(width)]:
        table.add_column(label, justify="right")
    for i, row in enumerate(matrix):
        table.add_row(rows[i] if rows is not None else f"exp {i}", *(f"{a:.3f}" for a in row))
    return table


def metrics_table(metrics: Mapping[str, Any], costs: Sequence[Mapping[str, Any]]) -> Table:
    """Every metric the run stored, then its cost summed over experiences."""
    table = Table(title="metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in metric_names([metrics]):
        table.add_row(name, fmt(metrics[name]))
    stops = [r for r in metrics.get("forecast") or [] if r.get("stopped_at") is not None]
    if "forecast" in metrics:  # optim.forecast_stop: where the learning-curve forecast ended experiences
        table.add_row("forecast_stops", ", ".join(f"exp {r['experience']} at {r['stopped_at']}/{r['planned_steps']}"
                                                  for r in stops) or "none")
    for name, value in cost_rows(costs):
        table.add_row(name, value)
    return table


def cost_rows(costs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """A run's cost summed over its experiences, as (name, cell) pairs: ``train_seconds`` is wall time
    (on a shared machine it varies with the load); steps, samples and FLOPs compare across machines."""
    seconds, samples = sum(c["seconds"] for c in costs), sum(c["samples"] for c in costs)
    rows = [("train_seconds", f"{seconds:.2f}"), ("samples", str(samples)),
            ("steps", str(sum(c["steps"] for c in costs)))]
    tokens = sum(c.get("tokens", 0) for c in costs)  # runs stored before tokens were counted have none
    unit = "tokens" if tokens else "samples"  # a language model's throughput is in predicted tokens
    if seconds > 0:
        rows.append(("samples_per_second", f"{samples / seconds:.1f}"))
        if tokens:
            rows.append(("tokens_per_second", f"{tokens / seconds:.1f}"))
    if len(costs) > 1:  # where a run slows down: each experience's own rate (a memory growing, a shift)
        rows.append((f"{unit}_per_second per experience",
                     ", ".join(f"{c[unit] / c['seconds']:.1f}" if c["seconds"] > 0 else "n/a" for c in costs)))
    if costs and all("model_flops" in c for c in costs):  # runs stored before MFU was measured lack it
        rows.append(("mfu", run_mfu(costs)))
    if any(c.get("flops") for c in costs):
        rows.append(("flops", f"{sum(c['flops'] for c in costs):.4g}"))
    if costs:
        rows.append(("buffer_size", str(costs[-1]["buffer_size"])))
        for name in ("memory_increase_mb", "memory_bytes"):  # runs stored before they were measured lack them
            if all(name in c for c in costs):
                rows.append((name, f"{max(c[name] for c in costs):.0f}"))
    return rows


def run_mfu(costs: Sequence[Mapping[str, Any]]) -> str:
    """The run's model FLOPs utilization: its model FLOPs over its training seconds over the peak FLOP/s
    (``run.peak_flops``), as a percentage; ``n/a`` with the reason where the model FLOPs or the peak are
    unknown."""
    flops, seconds = sum(c["model_flops"] for c in costs), sum(c["seconds"] for c in costs)
    utilization = mfu(flops, seconds, costs[-1]["peak_flops"])
    if utilization is not None:
        return f"{utilization:.2%}"
    return "n/a (no run.peak_flops)" if flops > 0 else "n/a (model FLOPs unknown: optim.count_flops)"


def stream_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("experience", "name", "task", "classes", "train", "test"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) if c != "classes" else ",".join(map(str, row[c])) for c in
                        ("experience", "name", "task", "classes", "train", "test")))
    return table


def registry_table(title: str, registry: dict, skip: tuple[str, ...] = ()) -> Table:
    """One row per entry: name, keyword arguments with their defaults, first sentence of the docstring."""
    table = Table(title=title)
    for column in ("name", "parameters (default)", "summary"):
        table.add_column(column)
    for name, factory in registry.items():
        params = ", ".join(f"{k}={'required' if p.default is p.empty else repr(p.default)}"
                           for k, p in parameters(factory).items() if k not in skip) or "-"
        table.add_row(name, params, first_sentence(factory.__doc__))
    return table


def budget_table(records: Sequence[Any], title: str) -> Table:
    """A compute-matched comparison (:mod:`lifelong.report.budget`): one row per strategy and budget level
    of the budgeted runs among ``records``, with what was spent, the final accuracy and the memory over
    seeds, and the points on the Pareto front of accuracy for at most their compute marked."""
    from lifelong.report.budget import UNIT_NAMES, budget_points, on_front

    points = budget_points(records)
    table = Table(title=title)
    for column in ("strategy", "budget", "seeds", "spent", "spent / budget", "final accuracy", "memory bytes",
                   "Pareto"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for point, front in zip(points, on_front(points), strict=True):
        accuracy = f"{point.accuracy:.3f}" + (f" ± {point.accuracy_std:.3f}" if point.accuracy_std is not None else "")
        table.add_row(point.label, point.budget, str(len(point.runs)), f"{point.spent:.4g} {UNIT_NAMES[point.unit]}",
                      fmt(point.spent_fraction), accuracy, f"{point.memory_bytes:.0f}", "*" if front else "")
    return table


def budget_rows(budget: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A budgeted run's ``metrics["budget"]`` as (name, cell) pairs: the budget as stated, its reference,
    and what each experience was given and spent."""
    unit = budget["unit"]
    given = f"{budget['level']:g} {unit} per experience" if budget["absolute"] else \
        f"{budget['level']:g}x {budget['reference']}'s {unit} for one epoch (run {budget['reference_run']})"
    return [("budget", given), ("budget limit", f"{budget['limit']:.4g} {unit}"),
            ("budget spent", f"{budget['spent']:.4g} {unit}"), ("spent / budget", fmt(budget["spent_fraction"])),
            ("limit per experience", ", ".join(f"{v:.4g}" for v in budget["limit_per_experience"])),
            ("spent per experience", ", ".join(f"{v:.4g}" for v in budget["spent_per_experience"])),
            ("epochs (cap)", str(budget["epochs"]))]
