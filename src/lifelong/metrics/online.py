"""Online (anytime) metrics, from an evaluation curve taken every few samples of a single-pass stream.

Koh et al. 2022, "Online Continual Learning on Class Incremental Blurry Task Configuration with Anytime
Inference" (CLIB, ICLR 2022) evaluate the model every ``Δn`` samples on the test samples of the
classes seen so far and report the area under that curve, ``A_auc = Σ_i f(i·Δn)·Δn``, normalised here by
the samples seen so that it is a mean accuracy in [0, 1]; Moon et al. 2023 (Si-Blurry) report it with
the last accuracy ``A_last``. "Seen so far" is read at experience granularity: at a point inside
experience ``e``, the seen test sets are those of experiences ``0..e`` (the scenario builders give each
class's test samples to the experience that introduces it). Accuracy over several test sets is the
sample-weighted mean, i.e. the accuracy on their union: the *pooled* mean of
:mod:`lifelong.metrics.accuracy_matrix` (``seen_class_accuracy`` of a matrix's rows averaged over the
rows is iCaRL's ``average_incremental_accuracy``; its last row over all experiences is
``final_accuracy_pooled``), so an experience with an empty test set weighs nothing. Where no seen test
set has a sample at all, the accuracy is 0.0 (the accuracy-matrix means leave such a step out instead);
that only happens while every experience so far has an empty test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class EvaluationPoint(Protocol):
    """What the metrics read from a curve point (:class:`lifelong.runner.observers.CurvePoint`)."""

    samples: int
    experience: int
    accuracies: list[float]


def seen_accuracy(accuracies: Sequence[float], sizes: Sequence[int], n_seen: int) -> float:
    """Accuracy on the union of test sets ``0..n_seen-1``: their accuracies weighted by their sizes."""
    total = sum(sizes[:n_seen])
    if total == 0:
        return 0.0
    return sum(a * n for a, n in zip(accuracies[:n_seen], sizes[:n_seen], strict=True)) / total


def anytime_accuracies(points: Sequence[EvaluationPoint], sizes: Sequence[int]) -> list[float]:
    """The accuracy on the classes seen so far at each point of the curve."""
    return [seen_accuracy(p.accuracies, sizes, p.experience + 1) for p in points]


def area_under_accuracy(samples: Sequence[int], accuracies: Sequence[float]) -> float:
    """``A_auc``: ``Σ_i accuracy_i · (samples_i - samples_{i-1}) / samples_last``, over points after the
    first sample (Koh et al. 2022; with points every ``Δn`` samples this is their mean). 0.0 if no
    sample was seen."""
    area, previous = 0.0, 0
    for seen, accuracy in zip(samples, accuracies, strict=True):
        if seen > previous:
            area += accuracy * (seen - previous)
            previous = seen
    return area / previous if previous else 0.0


def seen_class_accuracy(matrix: Sequence[Sequence[float]], sizes: Sequence[int]) -> list[float]:
    """Row ``i`` of an accuracy matrix as accuracy on all classes seen after experience ``i`` (the few-shot
    class-incremental session accuracy, Tao et al. 2020)."""
    return [seen_accuracy(row, sizes, i + 1) for i, row in enumerate(matrix)]


def online_metrics(points: Sequence[EvaluationPoint], sizes: Sequence[int]) -> dict[str, float]:
    """``a_auc`` and ``last_accuracy`` (accuracy on every seen class at the last point) of a curve."""
    anytime = anytime_accuracies(points, sizes)
    return {"a_auc": area_under_accuracy([p.samples for p in points], anytime),
            "last_accuracy": anytime[-1] if anytime else 0.0}
