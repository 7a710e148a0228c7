"""Summaries of a metric over seeds: mean, sample standard deviation and a t-based 95% interval.

Continual-learning results vary a lot with the seed (class order, initialisation, replay sampling),
so one run says little; the interval uses Student's t with n - 1 degrees of freedom because a few
seeds is all a compute budget usually allows. Every run counts once: the mean over seeds is
unweighted, which is right because each seed is one draw of the same experiment (unlike means over
experiences, which :mod:`lifelong.metrics.accuracy_matrix` offers both per experience and pooled over
test samples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Aggregate:
    """A metric over ``n`` seeds; ``std`` and the interval are None for a single seed."""

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def __str__(self) -> str:
        if self.std is None:
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} ± {self.std:.3f} [{self.low:.3f}, {self.high:.3f}]"


def aggregate(values: Sequence[float], confidence: float = 0.95) -> Aggregate:
    """Mean, sample std (ddof 1) and the ``confidence`` interval ``mean ± t * std / sqrt(n)``."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"aggregate needs a non-empty list of numbers, got shape {array.shape}")
    mean = float(array.mean())
    if len(array) == 1:
        return Aggregate(1, mean, None, None, None)
    std = float(array.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=len(array) - 1)) * std / np.sqrt(len(array))
    return Aggregate(len(array), mean, std, mean - half, mean + half)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def aggregate_metrics(runs: Sequence[Mapping[str, float | None]]) -> dict[str, Aggregate]:
    """Each numeric metric that every run has a value for, aggregated over the runs (lists such as
    per-experience values are left out)."""
    names = [name for name in runs[0] if all(_is_number(run.get(name)) for run in runs)] if runs else []
    return {name: aggregate([float(run[name]) for run in runs]) for name in names}  # type: ignore[arg-type]
