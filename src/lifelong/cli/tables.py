"""The rich tables the commands print: an accuracy matrix, a run's metrics and cost, a stream's
experiences, a registry's entries with their parameters, and the metrics every summary shows.

Rendering for a terminal is command-line work, so these live in the ``cli`` layer, shared by the
command modules beside them (:mod:`lifelong.cli.run`, :mod:`lifelong.cli.scenarios`,
:mod:`lifelong.cli.protocol`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from lifelong.config import parameters

METRIC_NAMES = ("final_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer",
                "forward_transfer", "final_accuracy_pooled", "average_incremental_accuracy_per_experience")
"""The accuracy-matrix metrics every run has (the first three head sweep tables)."""

CURVE_METRIC_NAMES = ("stability_gap", "relative_stability_gap", "min_old_accuracy", "worst_case_accuracy",
                      "recovered_fraction", "a_auc", "last_accuracy")
"""Metrics of a continual-evaluation curve, shown when the run kept one."""


def fmt(value: Any) -> str:
    """A table cell: ``-`` for a missing value, floats to three decimals."""
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def matrix_table(matrix: Sequence[Sequence[float]], title: str = "accuracy matrix") -> Table:
    table = Table(title=title + " (row: after training on, column: tested on)")
    table.add_column("trained \\ tested")
    for j in range(len(matrix[0]) if len(matrix) else 0):
        table.add_column(f"exp {j}", justify="right")
    for i, row in enumerate(matrix):
        table.add_row(f"exp {i}", *(f"{a:.3f}" for a in row))
    return table


def metrics_table(metrics: dict[str, Any], costs: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in METRIC_NAMES:
        table.add_row(name, fmt(metrics.get(name)))
    for name in CURVE_METRIC_NAMES:
        if metrics.get(name) is not None:
            table.add_row(name, fmt(metrics[name]))
    if metrics.get("effective_lr") is not None:
        table.add_row("effective_lr", f"{metrics['effective_lr']:.6g}")
    table.add_row("train_seconds", f"{sum(c['seconds'] for c in costs):.2f}")
    table.add_row("samples", str(sum(c["samples"] for c in costs)))
    table.add_row("steps", str(sum(c["steps"] for c in costs)))
    if any(c.get("flops") for c in costs):
        table.add_row("flops", f"{sum(c['flops'] for c in costs):.4g}")
    if costs:
        table.add_row("buffer_size", str(costs[-1]["buffer_size"]))
        for name in ("memory_increase_mb", "memory_bytes"):  # runs stored before they were measured lack them
            if all(name in c for c in costs):
                table.add_row(name, f"{max(c[name] for c in costs):.0f}")
    return table


def stream_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("experience", "name", "task", "classes", "train", "test"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) if c != "classes" else ",".join(map(str, row[c])) for c in
                        ("experience", "name", "task", "classes", "train", "test")))
    return table


def registry_table(title: str, registry: dict, skip: tuple[str, ...] = ()) -> Table:
    """One row per entry: name, keyword arguments with their defaults, first line of the docstring."""
    table = Table(title=title)
    for column in ("name", "parameters (default)", "summary"):
        table.add_column(column)
    for name, factory in registry.items():
        params = ", ".join(f"{k}={'required' if p.default is p.empty else repr(p.default)}"
                           for k, p in parameters(factory).items() if k not in skip) or "-"
        table.add_row(name, params, " ".join((factory.__doc__ or "").strip().split("\n\n")[0].split()))
    return table
