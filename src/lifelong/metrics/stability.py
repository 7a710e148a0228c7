"""The stability gap, as pure functions of a continual-evaluation curve.

De Lange, van de Ven and Tuytelaars (2023), "Continual evaluation for lifelong learning: identifying
the stability gap", evaluate the earlier experiences every few steps and find that, right after a
switch to a new experience, accuracy on the old ones collapses and then partly recovers, a dip that
the end-of-experience accuracy matrix never shows. For each switch to experience ``k`` (k >= 1) we
take the mean accuracy on experiences ``0..k-1`` along the curve and report:

* ``before``: its value at the last evaluation before the switch (the end of experience ``k-1``);
* ``minimum``: its lowest value while experience ``k`` trains (the paper's min-ACC, on the mean);
* ``depth``: ``max(0, before - minimum)``, the size of the gap, and ``relative_depth``:
  ``depth / before``, the fraction of the old accuracy lost at the bottom (a method that has already
  forgotten everything has a small absolute depth at later switches only because nothing is left);
* ``steps_to_minimum`` and ``steps_to_recover``: optimizer steps from the switch until the minimum,
  and until the mean first climbs back to ``before - tolerance`` at or after the minimum (None if it
  never does within the experience, which is what plain fine-tuning shows).

A curve is given as arrays: ``steps`` (P,), ``experiences`` (P,) the experience being trained at each
point, and ``accuracies`` (P, T) the accuracy on every experience's test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class StabilityGap:
    """The dip in old-experience accuracy after the switch to ``experience``."""

    experience: int
    switch_step: int
    before: float
    minimum: float
    depth: float
    relative_depth: float
    steps_to_minimum: int
    steps_to_recover: int | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _curve(steps: Sequence[int], experiences: Sequence[int],
           accuracies: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    step_array = np.asarray(steps, dtype=np.int64)  # (P,)
    experience_array = np.asarray(experiences, dtype=np.int64)  # (P,)
    accuracy_array = np.asarray(accuracies, dtype=float)  # (P, T)
    if accuracy_array.ndim != 2 or not len(step_array) == len(experience_array) == len(accuracy_array):
        raise ValueError(f"a curve needs steps (P,), experiences (P,) and accuracies (P, T), got shapes "
                         f"{step_array.shape}, {experience_array.shape}, {accuracy_array.shape}")
    if np.any(np.diff(step_array) < 0) or np.any(np.diff(experience_array) < 0):
        raise ValueError("a curve's steps and experiences must be non-decreasing")
    return step_array, experience_array, accuracy_array


def stability_gaps(steps: Sequence[int], experiences: Sequence[int], accuracies: Sequence[Sequence[float]],
                   tolerance: float = 0.02) -> list[StabilityGap]:
    """One :class:`StabilityGap` per switch that has an evaluation before it and at least one during it.

    ``tolerance`` is how close to ``before`` the mean must come back to count as recovered (accuracy
    measured on a finite test set is noisy; 0.02 is one sample in fifty).
    """
    step_array, experience_array, accuracy_array = _curve(steps, experiences, accuracies)
    gaps = []
    for experience in np.unique(experience_array):
        during = np.flatnonzero(experience_array == experience)
        if experience < 1 or during[0] == 0:
            continue
        switch = during[0] - 1  # the last evaluation before the switch: the end of the previous experience
        old = accuracy_array[:, :experience].mean(axis=1)  # (P,) mean accuracy on experiences 0..k-1
        lowest = during[int(np.argmin(old[during]))]
        depth = max(0.0, float(old[switch] - old[lowest]))
        recovered = [i for i in during if i >= lowest and old[i] >= old[switch] - tolerance]
        gaps.append(StabilityGap(
            experience=int(experience), switch_step=int(step_array[switch]), before=float(old[switch]),
            minimum=float(old[lowest]), depth=depth,
            relative_depth=depth / float(old[switch]) if old[switch] > 0 else 0.0,
            steps_to_minimum=int(step_array[lowest] - step_array[switch]),
            steps_to_recover=int(step_array[recovered[0]] - step_array[switch]) if recovered else None))
    return gaps


def stability_summary(gaps: Sequence[StabilityGap]) -> dict[str, float | None]:
    """Run-level numbers, means over switches: depth, relative depth, minimum (the paper's min-ACC,
    taken on the mean of the old experiences), and the fraction of switches that recovered (None when
    the curve has no switch)."""
    if not gaps:
        return dict.fromkeys(("stability_gap", "relative_stability_gap", "min_old_accuracy", "recovered_fraction"))
    return {"stability_gap": float(np.mean([g.depth for g in gaps])),
            "relative_stability_gap": float(np.mean([g.relative_depth for g in gaps])),
            "min_old_accuracy": float(np.mean([g.minimum for g in gaps])),
            "recovered_fraction": float(np.mean([g.steps_to_recover is not None for g in gaps]))}
