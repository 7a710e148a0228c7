"""Summaries of a metric over seeds: mean, sample standard deviation and a t-based 95% interval.

Continual-learning results vary a lot with the seed (class order, initialisation, replay sampling),
so one run says little; the interval uses Student's t with n - 1 degrees of freedom because a few
seeds is all a compute budget usually allows. Every run counts once: the mean over seeds is
unweighted, which is right because each seed is one draw of the same experiment (unlike means over
experiences, which :mod:`lifelong.metrics.accuracy_matrix` offers both per experience and pooled over
test samples). The interval is clipped to the range the metric can take (:data:`BOUNDS`): with a
mean near 1.0 and few seeds a t interval reaches past 1.0, an accuracy no run can have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass



NOT_METRICS = ("world_size", "batch_size_changes")
"""Stored with a run's metrics but saying how it ran, not what it reached: never aggregated or shown
as metrics."""

_ACCURACIES = ("final_accuracy", "final_accuracy_pooled", "average_incremental_accuracy",
               "average_incremental_accuracy_per_experience", "min_old_accuracy", "worst_case_accuracy", "a_auc",
               "last_accuracy", "mean_error")
_DIFFERENCES = ("forgetting", "backward_transfer", "forward_transfer")
_FRACTIONS = ("stability_gap", "relative_stability_gap", "recovered_fraction")

BOUNDS: dict[str, tuple[float, float]] = {
    **dict.fromkeys(_ACCURACIES, (0.0, 1.0)), **dict.fromkeys(_FRACTIONS, (0.0, 1.0)),
    **dict.fromkeys(_DIFFERENCES, (-1.0, 1.0)), "effective_lr": (0.0, math.inf)}
"""The range of each bounded metric: accuracies, errors and fractions in [0, 1], differences of two
accuracies (forgetting, BWT, FWT) in [-1, 1], a learning rate above 0. A test-time adaptation run's
``error <domain>`` metrics are errors too."""


LOSS_BOUNDS: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("final_loss", "average_loss"), (0.0, math.inf)), "final_perplexity": (1.0, math.inf),
    **dict.fromkeys(_DIFFERENCES, (-math.inf, math.inf)), "stability_gap": (0.0, math.inf),
    "recovered_fraction": (0.0, 1.0), "effective_lr": (0.0, math.inf)}
"""The ranges of a language model's metrics (:func:`lifelong.metrics.objectives.loss_summary`): losses in
nats are not bounded above, and their differences (forgetting, BWT, FWT, the stability gap) not by 1."""


def bounds(name: str, language_model: bool = False) -> tuple[float, float]:
    """The range of metric ``name`` (unbounded when unknown), of a language model's run or a classifier's."""
    if language_model:
        return LOSS_BOUNDS.get(name, (-math.inf, math.inf))
    return BOUNDS.get(name, (0.0, 1.0) if name.startswith("error ") else (-math.inf, math.inf))


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


def aggregate(values: Sequence[float], confidence: float = 0.95,
              limits: tuple[float, float] = (-math.inf, math.inf)) -> Aggregate:
    """Mean, sample std (ddof 1) and the ``confidence`` interval ``mean ± t * std / sqrt(n)``, clipped
    to ``limits``, the range the metric can take."""
    from scipy import stats  # SciPy takes a second to import: only where an interval is computed

    import numpy as np  # here, so that the commands that only read stored metrics start without it

    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"aggregate needs a non-empty list of numbers, got shape {array.shape}")
    mean = float(array.mean())
    if len(array) == 1:
        return Aggregate(1, mean, None, None, None)
    std = float(array.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=len(array) - 1)) * std / np.sqrt(len(array))
    return Aggregate(len(array), mean, std, max(mean - half, limits[0]), min(mean + half, limits[1]))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def aggregate_metrics(runs: Sequence[Mapping[str, float | None]]) -> dict[str, Aggregate]:
    """Each numeric metric that every run has a value for, aggregated over the runs with its interval
    clipped to the metric's :func:`bounds` (a language model's when the runs have a ``final_loss``; lists
    such as per-experience values, and :data:`NOT_METRICS`, are left out)."""
    names = [name for name in runs[0] if name not in NOT_METRICS and all(_is_number(run.get(name)) for run in runs)] \
        if runs else []
    language_model = bool(runs) and "final_loss" in runs[0]
    return {name: aggregate([float(run[name]) for run in runs],  # type: ignore[arg-type]
                            limits=bounds(name, language_model)) for name in names}
