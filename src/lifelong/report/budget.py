"""The points of a compute-matched comparison (:mod:`lifelong.protocol.budget`) read from stored runs, and
their Pareto front, as plain data: the figures of :mod:`lifelong.report.plots` and the tables of the
command line draw on them. Nothing here imports matplotlib or torch, so ``lifelong show`` stays fast.

A point is one strategy at one budget level, its values the means over the seeds run there: the compute
it really spent (the budget's unit, summed over experiences; a strategy may spend less than its budget
or, with a closing hook such as a Fisher estimate, more) and its final accuracy, so that a method that
spends more is placed further right, whatever budget it was given.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lifelong.runner.results import RunRecord

UNIT_NAMES = {"flops": "FLOPs", "seconds": "training seconds", "steps": "optimizer steps"}


@dataclass(frozen=True)
class BudgetPoint:
    """One strategy at one budget level, over the seeds it ran with."""

    label: str
    level: float
    unit: str
    absolute: bool
    runs: tuple[int, ...]
    spent: float
    """Compute spent, summed over experiences, mean over seeds (in ``unit``)."""
    spent_fraction: float | None
    """What was spent over what was given, mean over seeds."""
    accuracy: float
    """Final accuracy, mean over seeds."""
    accuracy_std: float | None
    """Its sample standard deviation over seeds (None for one seed)."""
    memory_bytes: float
    """The most bytes the strategy kept after any experience, mean over seeds."""

    @property
    def budget(self) -> str:
        """The level as given: ``2x`` of the reference, or an absolute amount of the unit."""
        return f"{self.level:g} {self.unit}" if self.absolute else f"{self.level:g}x"


def memory_bytes(record: RunRecord) -> int:
    """The most bytes the run's strategy kept after any of its experiences."""
    return max((int(e["cost"].get("memory_bytes", 0)) for e in record.experiences), default=0)


def budgeted(records: Sequence[RunRecord]) -> list[RunRecord]:
    """The finished runs that a budget protocol ran (they hold ``metrics["budget"]``)."""
    return [r for r in records if r.status == "finished" and "budget" in (r.metrics or {})]


def budget_points(records: Sequence[RunRecord]) -> list[BudgetPoint]:
    """One point per strategy label, unit and level among the budgeted runs of ``records``, in the order
    of their first run."""
    cells: dict[tuple[str, str, float, bool], list[RunRecord]] = {}
    for record in budgeted(records):
        budget = record.metrics["budget"]  # type: ignore[index]
        key = (str(budget["label"]), str(budget["unit"]), float(budget["level"]), bool(budget["absolute"]))
        cells.setdefault(key, []).append(record)
    points = []
    for (label, unit, level, absolute), members in cells.items():
        budgets: list[dict[str, Any]] = [m.metrics["budget"] for m in members]  # type: ignore[index]
        accuracies = [float(m.metrics["final_accuracy"]) for m in members]  # type: ignore[index]
        fractions = [b["spent_fraction"] for b in budgets if b.get("spent_fraction") is not None]
        points.append(BudgetPoint(label, level, unit, absolute, tuple(m.id for m in members),
                                  statistics.fmean(float(b["spent"]) for b in budgets),
                                  statistics.fmean(fractions) if fractions else None,
                                  statistics.fmean(accuracies),
                                  statistics.stdev(accuracies) if len(accuracies) > 1 else None,
                                  statistics.fmean(memory_bytes(m) for m in members)))
    return points


def pareto_front(costs: Sequence[float], values: Sequence[float]) -> list[bool]:
    """Which points are on the Pareto front of the highest value for at most their cost: no other point
    costs as little or less and reaches more (of two equal points, the first counts)."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -values[i], i))
    front = [False] * len(costs)
    best = float("-inf")
    for index in order:
        if values[index] > best:
            front[index], best = True, values[index]
    return front


def on_front(points: Sequence[BudgetPoint]) -> list[bool]:
    """Which points are on the Pareto front of accuracy for at most their spent compute, among the points
    of their own unit (FLOPs and seconds are not comparable)."""
    front = [False] * len(points)
    for unit in dict.fromkeys(p.unit for p in points):
        indices = [i for i, p in enumerate(points) if p.unit == unit]
        marks = pareto_front([points[i].spent for i in indices], [points[i].accuracy for i in indices])
        for index, mark in zip(indices, marks, strict=True):
            front[index] = mark
    return front
