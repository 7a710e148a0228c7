"""Accuracy against compute, as pure functions of a continual-evaluation curve and the cost log.

A run is judged by what it reaches for what it spends (NEVIS'22, Bornschein et al. 2023; AlgoPerf,
Dahl et al. 2023, "time to result"): the curve's points are placed on four compute axes (new-data
samples, optimizer steps, training seconds and, when the cost log has it, FLOPs), and
time-to-accuracy is the first point of an axis where the mean accuracy over *every* experience's test
set reaches a target (over every experience, not only those seen, so that the target means the same
thing at every point of a class-incremental stream).

:func:`mean_accuracy` is, like ``final_accuracy`` of :mod:`lifelong.metrics.accuracy_matrix`, the
unweighted mean over experiences (each counts the same); given the test-set sizes it is instead the
pooled accuracy on all test samples (like ``final_accuracy_pooled``), where an empty test set weighs
nothing (without sizes its recorded 0.0 counts like any other experience's accuracy). The two differ
when test sets have different sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: The compute axes a curve can be drawn against, in the order reports show them.
AXES = ("samples", "steps", "seconds", "flops")


def flops_at(steps: Sequence[int], experiences: Sequence[int], costs: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """FLOPs spent by each curve point, or None when the cost log has no ``flops`` (absent, or all zero:
    a run that did not count them records 0.0).

    ``costs[e]["flops"]`` is experience e's total, spread evenly over its ``steps`` (every step of an
    experience runs the same model on the same batch size), so a point at step s of experience e has
    spent the earlier experiences' totals plus ``(s - steps before e) * flops[e] / steps[e]``.
    """
    if not costs or any(cost.get("flops") is None for cost in costs) or not any(cost["flops"] for cost in costs):
        return None
    totals = np.array([float(cost["flops"]) for cost in costs])  # (E,)
    per_step = np.array([float(cost["flops"]) / max(int(cost["steps"]), 1) for cost in costs])  # (E,)
    steps_before = np.concatenate([[0], np.cumsum([int(cost["steps"]) for cost in costs])])  # (E + 1,)
    flops_before = np.concatenate([[0.0], np.cumsum(totals)])  # (E + 1,)
    index = np.minimum(np.asarray(experiences, dtype=np.int64), len(costs) - 1)  # (P,)
    return flops_before[index] + (np.asarray(steps, dtype=float) - steps_before[index]) * per_step[index]


def compute_axes(points: Sequence[Mapping[str, Any]], costs: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Each available compute axis (see :data:`AXES`) as an array (P,) over the curve's points."""
    steps = [int(p["step"]) for p in points]
    axes = {"samples": np.array([p["samples"] for p in points], dtype=float),
            "steps": np.array(steps, dtype=float),
            "seconds": np.array([p["seconds"] for p in points], dtype=float)}
    flops = flops_at(steps, [int(p["experience"]) for p in points], costs)
    if flops is not None:
        axes["flops"] = flops
    return axes


def mean_accuracy(points: Sequence[Mapping[str, Any]], sizes: Sequence[int] | None = None) -> np.ndarray:
    """Accuracy over every experience's test set at each point, (P,): the unweighted mean over
    experiences, or with ``sizes`` (test-set sizes, one per experience) the accuracy on all their test
    samples pooled, ``sum_j n_j a_j / sum_j n_j`` (0.0 where no test set has a sample)."""
    if not points:
        return np.zeros(0)
    accuracies = np.array([p["accuracies"] for p in points], dtype=float)  # (P, T)
    if sizes is None:
        return accuracies.mean(axis=1)
    weights = np.asarray(sizes, dtype=float)
    if weights.shape != (accuracies.shape[1],) or np.any(weights < 0):
        raise ValueError(f"sizes needs one non-negative test-set size per experience ({accuracies.shape[1]}), "
                         f"got {list(np.atleast_1d(weights))}")
    total = weights.sum()
    return accuracies @ weights / total if total > 0 else np.zeros(len(points))


def time_to_accuracy(axis: Sequence[float], accuracy: Sequence[float], target: float) -> float | None:
    """The first value of ``axis`` at which ``accuracy`` reaches ``target`` (None if it never does)."""
    reached = np.flatnonzero(np.asarray(accuracy, dtype=float) >= target)
    return float(np.asarray(axis, dtype=float)[reached[0]]) if len(reached) else None
