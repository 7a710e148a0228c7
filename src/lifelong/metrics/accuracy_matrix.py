"""Metrics computed from the accuracy matrix, as pure functions.

``R[i, j]`` is the accuracy on experience j's test set after training on experience i (T x T), and
``initial[j]`` the accuracy of the untrained model on experience j (for forward transfer). A joint
run has a single row; the metrics that need the sequence (forgetting, BWT, FWT) are then None.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _matrix(R: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    m = np.asarray(R, dtype=float)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[0] > m.shape[1]:
        raise ValueError(f"an accuracy matrix has shape (rows <= columns), got {m.shape}")
    return m


def final_accuracy(R: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Mean accuracy over all experiences after the last one: ``mean_j R[T-1, j]``."""
    return float(_matrix(R)[-1].mean())


def average_incremental_accuracy(R: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Mean over training steps i of the accuracy on experiences seen so far,
    ``1/T sum_i mean_{j<=i} R[i, j]`` (Rebuffi et al. 2017, iCaRL)."""
    m = _matrix(R)
    if m.shape[0] == 1:
        return float(m[0].mean())
    return float(np.mean([m[i, : i + 1].mean() for i in range(m.shape[0])]))


def forgetting(R: Sequence[Sequence[float]] | np.ndarray) -> float | None:
    """Average forgetting (Chaudhry et al. 2018, "Riemannian Walk"): for each experience j < T-1,
    the best accuracy it had after being learned minus its final accuracy,
    ``f_j = max_{j<=l<T-1} R[l, j] - R[T-1, j]``, averaged over j."""
    m = _matrix(R)
    T = m.shape[0]
    if T < 2 or m.shape[1] != T:
        return None
    return float(np.mean([m[j:T - 1, j].max() - m[T - 1, j] for j in range(T - 1)]))


def backward_transfer(R: Sequence[Sequence[float]] | np.ndarray) -> float | None:
    """BWT (Lopez-Paz & Ranzato 2017, GEM): ``1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j])``;
    negative means forgetting."""
    m = _matrix(R)
    T = m.shape[0]
    if T < 2 or m.shape[1] != T:
        return None
    return float(np.mean([m[T - 1, j] - m[j, j] for j in range(T - 1)]))


def forward_transfer(R: Sequence[Sequence[float]] | np.ndarray, initial: Sequence[float]) -> float | None:
    """FWT (Lopez-Paz & Ranzato 2017, GEM): ``1/(T-1) sum_{j>=1} (R[j-1, j] - b_j)`` with ``b`` the
    accuracy of the initial (untrained) model: what learning earlier experiences gives a later one
    before it is trained on."""
    m = _matrix(R)
    T = m.shape[0]
    b = np.asarray(initial, dtype=float)
    if T < 2 or m.shape[1] != T:
        return None
    if b.shape != (T,):
        raise ValueError(f"initial accuracies must have length {T}, got shape {b.shape}")
    return float(np.mean([m[j - 1, j] - b[j] for j in range(1, T)]))


def summary(R: Sequence[Sequence[float]] | np.ndarray, initial: Sequence[float]) -> dict[str, float | None]:
    """Every metric of the matrix, by name."""
    return {
        "final_accuracy": final_accuracy(R),
        "average_incremental_accuracy": average_incremental_accuracy(R),
        "forgetting": forgetting(R),
        "backward_transfer": backward_transfer(R),
        "forward_transfer": forward_transfer(R, initial),
    }
