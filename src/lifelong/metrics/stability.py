"""The stability gap, min-ACC and WC-ACC, as pure functions of a continual-evaluation curve.

De Lange, van de Ven and Tuytelaars (ICLR 2023), "Continual evaluation for lifelong learning:
identifying the stability gap", evaluate the earlier experiences every few steps and find that, right
after a switch to a new experience, accuracy on the old ones collapses and then partly recovers, a dip
that the end-of-experience accuracy matrix never shows. They measure it with two worst-case metrics
(defined in the paper's continual-evaluation metrics, implemented by
``TaskTrackingMINAccuracyPluginMetric`` and ``WCACCPluginMetric`` in the authors' code,
github.com/mattdl/ContinualEvaluation, ``src/eval/continual_eval_metrics.py``). With tasks numbered
from 1 and ``|T_i|`` the iteration at which task ``i`` ends:

* ``min-ACC_{T_k} = 1/(k-1) sum_{i<k} min_n A(E_i, f_n)`` over ``|T_i| < n <= |T_k|``: each old task's
  *own* minimum, taken over every evaluation after the end of its own training (excluded) up to the
  end of task ``k`` (included), so over the later tasks' training too, not only task ``k``'s; then
  averaged over the old tasks. (The reference code keeps one running minimum per task, updated at every
  evaluation where that task is not the one being trained and never reset.)
* ``WC-ACC_k = 1/k A(E_k, f_{|T_k|}) + (1 - 1/k) min-ACC_{T_k}``: the new task's accuracy at the end of
  its training and the old tasks' minima, each task weighing the same.

Here experiences are numbered from 0, so experience ``k`` has the ``k`` old experiences ``0..k-1`` and
``WC-ACC = (A_k + k * min-ACC) / (k + 1)``. The mean of per-experience minima is never above the
minimum of the mean curve, and below it whenever old experiences bottom out at different steps: the
mean curve hides a dip that one experience suffers while another is high, which the worst case counts.

For each switch to experience ``k`` (k >= 1), with ``s`` the last evaluation before the switch (the end
of experience ``k-1``) and ``e`` the last evaluation of experience ``k`` (its end), a
:class:`StabilityGap` holds:

* ``before``: the mean accuracy on experiences ``0..k-1`` at ``s`` (one point, so the mean curve and the
  mean of the per-experience values are the same number);
* ``minimum``: the paper's min-ACC at the end of experience ``k``, as above (per-experience minima over
  the evaluations after the end of each one's own training up to ``e``, averaged);
* ``new_accuracy``: the accuracy on experience ``k`` at ``e``;
* ``worst_case_accuracy``: the paper's WC-ACC at the end of experience ``k``,
  ``(new_accuracy + k * minimum) / (k + 1)``;
* ``depth``: the size of this switch's gap, from the per-experience minima *while experience k trains*:
  ``mean_{i<k} max(0, A_i(s) - min_{n in k} A_i(n))``, each old experience's own drop below its value
  at the switch. Per experience, for the paper's reason (the mean curve hides dips at different
  steps; this depth is >= the drop of the mean curve); only over experience ``k``'s evaluations so that
  a switch is not charged with the dips of earlier switches, which ``minimum`` does include;
  ``relative_depth``: ``depth / before`` (0 when ``before`` is 0), the fraction of the old accuracy lost
  at the bottom, in [0, 1] (a method that has already forgotten everything has a small absolute depth
  at later switches only because nothing is left);
* ``mean_curve_minimum``: the lowest value of the mean accuracy on experiences ``0..k-1`` while
  experience ``k`` trains (what ``minimum`` was before it followed the paper);
* ``steps_to_minimum`` and ``steps_to_recover``: on the *mean curve*, optimizer steps from the switch
  until ``mean_curve_minimum`` (its first occurrence), and until the mean first climbs back to
  ``before - tolerance`` at or after that point (None if it never does within the experience, which is
  what plain fine-tuning shows). Timings need one curve: the per-experience minima fall at different
  steps, so "the step of the minimum" exists only for the mean.

A curve is given as arrays: ``steps`` (P,), ``experiences`` (P,) the experience being trained at each
point, and ``accuracies`` (P, T) the accuracy on every experience's test set. Every experience counts
the same (as in the paper); an experience with an empty test set, recorded as 0.0 accuracy, is
averaged in as 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class StabilityGap:
    """The dip in old-experience accuracy after the switch to ``experience`` (see the module docstring)."""

    experience: int
    switch_step: int
    before: float
    minimum: float
    depth: float
    relative_depth: float
    steps_to_minimum: int
    steps_to_recover: int | None
    mean_curve_minimum: float
    new_accuracy: float
    worst_case_accuracy: float

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
    if len(experience_array) and (experience_array[0] < 0 or experience_array[-1] >= accuracy_array.shape[1]):
        raise ValueError(f"a curve's experiences must index its {accuracy_array.shape[1]} accuracy columns, "
                         f"got {experience_array[0]}..{experience_array[-1]}")
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
        k = int(experience)
        during = np.flatnonzero(experience_array == k)
        if k < 1 or during[0] == 0:
            continue
        switch, end = during[0] - 1, during[-1]  # the end of the previous experience; the end of this one
        at_switch = accuracy_array[switch, :k]  # (k,) each old experience's accuracy at the switch
        # min-ACC: old experience i's lowest accuracy after its own training ended (the first point of a
        # later experience) up to the end of experience k, averaged over i < k
        own_minima = np.array([accuracy_array[np.flatnonzero(experience_array > i)[0]:end + 1, i].min()
                               for i in range(k)])  # (k,)
        minimum = float(own_minima.mean())
        # this switch's depth: each old experience's drop below its value at the switch while k trains
        drops = np.maximum(0.0, at_switch - accuracy_array[during, :k].min(axis=0))  # (k,)
        depth = float(drops.mean())
        before = float(at_switch.mean())
        old = accuracy_array[:, :k].mean(axis=1)  # (P,) the mean curve over experiences 0..k-1
        lowest = during[int(np.argmin(old[during]))]
        recovered = [i for i in during if i >= lowest and old[i] >= old[switch] - tolerance]
        new_accuracy = float(accuracy_array[end, k])
        gaps.append(StabilityGap(
            experience=k, switch_step=int(step_array[switch]), before=before, minimum=minimum, depth=depth,
            relative_depth=depth / before if before > 0 else 0.0,
            steps_to_minimum=int(step_array[lowest] - step_array[switch]),
            steps_to_recover=int(step_array[recovered[0]] - step_array[switch]) if recovered else None,
            mean_curve_minimum=float(old[lowest]), new_accuracy=new_accuracy,
            worst_case_accuracy=(new_accuracy + k * minimum) / (k + 1)))
    return gaps


SUMMARY_KEYS = ("stability_gap", "relative_stability_gap", "min_old_accuracy", "worst_case_accuracy",
                "recovered_fraction")


def stability_summary(gaps: Sequence[StabilityGap]) -> dict[str, float | None]:
    """Run-level numbers (all None when the curve has no switch):

    * ``stability_gap``, ``relative_stability_gap``: the mean over switches of ``depth`` and
      ``relative_depth`` (each switch's own dip, per old experience);
    * ``min_old_accuracy``: the paper's min-ACC at the end of the run, i.e. the last switch's
      ``minimum``: each old experience's lowest accuracy after it was learned, over the whole rest of
      the run, averaged over experiences (the authors report this final value, ``avg_acc_MIN_final``);
    * ``worst_case_accuracy``: the paper's WC-ACC at the end of the run, the last switch's
      ``worst_case_accuracy`` (``WCACC_final`` in the authors' code);
    * ``recovered_fraction``: the fraction of switches whose mean curve recovered (``steps_to_recover``
      not None).
    """
    if not gaps:
        return dict.fromkeys(SUMMARY_KEYS)
    last = max(gaps, key=lambda gap: gap.experience)
    return {"stability_gap": float(np.mean([g.depth for g in gaps])),
            "relative_stability_gap": float(np.mean([g.relative_depth for g in gaps])),
            "min_old_accuracy": last.minimum,
            "worst_case_accuracy": last.worst_case_accuracy,
            "recovered_fraction": float(np.mean([g.steps_to_recover is not None for g in gaps]))}
