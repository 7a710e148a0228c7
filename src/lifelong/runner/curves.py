"""Attach a continual-evaluation curve to a finished run: its stability gaps, its run-level summary,
and (with a store) the stored curve. Called by :func:`lifelong.experiment.run_config` when
``run.eval_every_steps`` is set; the curve itself is recorded by
:class:`lifelong.runner.observers.PeriodicEvaluation`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lifelong.metrics.stability import StabilityGap, stability_gaps, stability_summary
from lifelong.runner.loop import RunResult
from lifelong.runner.observers import PeriodicEvaluation
from lifelong.runner.results import ResultsStore


def gaps_of_curve(points: list[dict[str, Any]]) -> list[StabilityGap]:
    """The stability gap of each experience switch of a curve given as point dicts (as stored)."""
    if not points:
        return []
    return stability_gaps([p["step"] for p in points], [p["experience"] for p in points],
                          [p["accuracies"] for p in points])


def attach_curve(result: RunResult, evaluation: PeriodicEvaluation, store: ResultsStore | None) -> None:
    """Put the curve and its stability gaps in ``result.extra``, merge the stability summary into
    ``result.metrics`` and, with a store, record both with the run."""
    points = [asdict(point) for point in evaluation.points]
    gaps = gaps_of_curve(points)
    summary = stability_summary(gaps)
    result.extra["curve"] = points
    result.extra["stability_gaps"] = [gap.as_dict() for gap in gaps]
    result.metrics.update(summary)
    if store is not None and result.run_id is not None:
        store.record_curve(result.run_id, points, summary)
