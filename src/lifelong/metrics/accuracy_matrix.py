"""Metrics computed from the accuracy matrix, as pure functions.

``R[i, j]`` is the accuracy on experience j's test set after training on experience i (T x T), and
``initial[j]`` the accuracy of the untrained model on experience j (for forward transfer). A joint
run has a single row; the metrics that need the sequence (forgetting, BWT, FWT) are then None, and
"the experiences seen so far" after its one row are all of them.

Two kinds of mean over experiences, named for what they are:

* **per experience** (unweighted): every experience counts the same, whatever its test-set size
  (``final_accuracy``, ``average_incremental_accuracy_per_experience``, forgetting, BWT, FWT);
* **pooled**: the accuracy on the union of the test sets, i.e. the experiences' accuracies weighted by
  their test-set sizes ``test_sizes[j]`` (``final_accuracy_pooled``; ``average_incremental_accuracy``,
  which is iCaRL's, Rebuffi et al. 2017: after each step, the accuracy on all test samples of the
  classes seen so far; also Avalanche's stream accuracy).

They agree when every test set has the same size and differ otherwise (few-shot, blurry, hierarchical
streams). An experience whose test set is empty (size 0; the runner records 0.0 for it) is left out of
both kinds of mean, not averaged in as 0.0; a mean with nothing left to average is None.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Matrix = Sequence[Sequence[float]] | np.ndarray
Sizes = Sequence[int] | np.ndarray


def _matrix(R: Matrix) -> np.ndarray:
    m = np.asarray(R, dtype=float)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[0] > m.shape[1]:
        raise ValueError(f"an accuracy matrix has shape (rows <= columns), got {m.shape}")
    return m


def _sizes(test_sizes: Sizes, columns: int) -> np.ndarray:
    """``test_sizes`` checked: one non-negative whole number per column of the matrix."""
    sizes = np.asarray(test_sizes)
    if sizes.ndim != 1 or len(sizes) != columns:
        raise ValueError(f"test_sizes needs one test-set size per experience (column of the matrix), "
                         f"{columns}, got shape {sizes.shape}")
    if sizes.dtype.kind not in "iuf" or (columns and (not np.all(np.isfinite(sizes)) or np.any(sizes < 0)
                                                      or np.any(sizes != np.round(sizes)))):
        raise ValueError(f"test_sizes must be non-negative whole numbers, got {list(sizes)}")
    return sizes.astype(np.int64)


def _kept(test_sizes: Sizes | None, columns: int) -> np.ndarray:
    """(columns,) bool: the experiences a mean counts, those with a non-empty test set (all without sizes)."""
    return np.ones(columns, dtype=bool) if test_sizes is None else _sizes(test_sizes, columns) > 0


def _per_experience(values: np.ndarray, kept: np.ndarray) -> float | None:
    return float(values[kept].mean()) if kept.any() else None


def _pooled(values: np.ndarray, sizes: np.ndarray) -> float | None:
    total = int(sizes.sum())
    return float(values @ sizes / total) if total > 0 else None


def _seen(m: np.ndarray, i: int) -> int:
    """How many experiences (columns) have been seen after row ``i``: all of them for a joint run."""
    return m.shape[1] if m.shape[0] == 1 else i + 1


def final_accuracy(R: Matrix, test_sizes: Sizes | None = None) -> float | None:
    """Mean accuracy over the experiences after the last one, each counting the same:
    ``mean_j R[T-1, j]`` over the experiences with a non-empty test set (all without ``test_sizes``)."""
    m = _matrix(R)
    return _per_experience(m[-1], _kept(test_sizes, m.shape[1]))


def final_accuracy_pooled(R: Matrix, test_sizes: Sizes) -> float | None:
    """Accuracy on all test samples after the last experience: ``sum_j n_j R[T-1, j] / sum_j n_j`` with
    ``n_j = test_sizes[j]`` (Avalanche's stream accuracy)."""
    m = _matrix(R)
    return _pooled(m[-1], _sizes(test_sizes, m.shape[1]))


def average_incremental_accuracy(R: Matrix, test_sizes: Sizes) -> float | None:
    """iCaRL's average incremental accuracy (Rebuffi et al. 2017): after each step i, the accuracy on all
    test samples of the experiences seen so far, ``a_i = sum_{j<=i} n_j R[i, j] / sum_{j<=i} n_j``,
    averaged over the steps, ``1/T sum_i a_i`` (a step before any test sample exists is left out)."""
    m = _matrix(R)
    sizes = _sizes(test_sizes, m.shape[1])
    steps = [_pooled(m[i, :_seen(m, i)], sizes[:_seen(m, i)]) for i in range(m.shape[0])]
    present = [a for a in steps if a is not None]
    return float(np.mean(present)) if present else None


def average_incremental_accuracy_per_experience(R: Matrix, test_sizes: Sizes | None = None) -> float | None:
    """The unweighted variant: after each step i, the mean over the experiences seen so far of their
    accuracies, each counting the same, ``1/T sum_i mean_{j<=i} R[i, j]`` (experiences with an empty
    test set left out)."""
    m = _matrix(R)
    kept = _kept(test_sizes, m.shape[1])
    steps = [_per_experience(m[i, :_seen(m, i)], kept[:_seen(m, i)]) for i in range(m.shape[0])]
    present = [a for a in steps if a is not None]
    return float(np.mean(present)) if present else None


def _square(m: np.ndarray) -> bool:
    return m.shape[0] >= 2 and m.shape[1] == m.shape[0]


def forgetting(R: Matrix, test_sizes: Sizes | None = None) -> float | None:
    """Average forgetting (Chaudhry et al. 2018, "Riemannian Walk"): for each experience j < T-1,
    the best accuracy it had after being learned minus its final accuracy,
    ``f_j = max_{j<=l<T-1} R[l, j] - R[T-1, j]``, averaged over j (experiences with an empty test set
    left out)."""
    m = _matrix(R)
    if not _square(m):
        return None
    T = m.shape[0]
    values = np.array([m[j:T - 1, j].max() - m[T - 1, j] for j in range(T - 1)])
    return _per_experience(values, _kept(test_sizes, T)[:T - 1])


def backward_transfer(R: Matrix, test_sizes: Sizes | None = None) -> float | None:
    """BWT (Lopez-Paz & Ranzato 2017, GEM): ``1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j])``;
    negative means forgetting (experiences with an empty test set left out)."""
    m = _matrix(R)
    if not _square(m):
        return None
    T = m.shape[0]
    values = np.array([m[T - 1, j] - m[j, j] for j in range(T - 1)])
    return _per_experience(values, _kept(test_sizes, T)[:T - 1])


def forward_transfer(R: Matrix, initial: Sequence[float], test_sizes: Sizes | None = None) -> float | None:
    """FWT (Lopez-Paz & Ranzato 2017, GEM): ``1/(T-1) sum_{j>=1} (R[j-1, j] - b_j)`` with ``b`` the
    accuracy of the initial (untrained) model: what learning earlier experiences gives a later one
    before it is trained on (experiences with an empty test set left out)."""
    m = _matrix(R)
    if not _square(m):
        return None
    T = m.shape[0]
    b = np.asarray(initial, dtype=float)
    if b.shape != (T,):
        raise ValueError(f"initial accuracies must have length {T}, got shape {b.shape}")
    values = np.array([m[j - 1, j] - b[j] for j in range(1, T)])
    return _per_experience(values, _kept(test_sizes, T)[1:])


def summary(R: Matrix, initial: Sequence[float], test_sizes: Sizes) -> dict[str, float | None]:
    """Every metric of the matrix, by name; ``test_sizes`` (one int per column) weigh the pooled ones,
    ``final_accuracy_pooled`` and ``average_incremental_accuracy`` (iCaRL's), and leave empty test sets
    out of every mean."""
    m = _matrix(R)
    _sizes(test_sizes, m.shape[1])
    return {
        "final_accuracy": final_accuracy(m, test_sizes),
        "final_accuracy_pooled": final_accuracy_pooled(m, test_sizes),
        "average_incremental_accuracy": average_incremental_accuracy(m, test_sizes),
        "average_incremental_accuracy_per_experience": average_incremental_accuracy_per_experience(m, test_sizes),
        "forgetting": forgetting(m, test_sizes),
        "backward_transfer": backward_transfer(m, test_sizes),
        "forward_transfer": forward_transfer(m, initial, test_sizes),
    }
