"""Weight averaging and merging on tensors: an exponential moving average step, the interpolation of two
checkpoints and the orthogonal projection of a task vector used by continual model merging.

Pure functions of tensors, so that the runner (:mod:`lifelong.runner.averaging`, averaging any strategy's
model) and a strategy that averages its own modules (LAE's offline adapter) share them.
"""

from __future__ import annotations

import torch


def ema_weight(decay: float, step: int, bias_correction: bool) -> float:
    """The weight of the newest model in the ``step``-th (1-based) update ``average += w * (new - average)``.

    Without correction ``w = 1 - decay``: the average starts at the initial weights and forgets them as
    ``decay ** step``. With ``bias_correction`` ``w = (1 - decay) / (1 - decay ** step)``: the average is
    exactly Adam's bias-corrected moment (Kingma & Ba 2015, Sec. 3) of the weights after each step,
    ``sum_s (1 - decay) decay ** (step - s) theta_s / (1 - decay ** step)``, so the first update copies
    the model (w = 1) and the initial weights never weigh in: a warm-up without a schedule."""
    return (1.0 - decay) / (1.0 - decay**step) if bias_correction else 1.0 - decay


@torch.no_grad()
def ema_step(average: list[torch.Tensor], current: list[torch.Tensor], weight: float) -> None:
    """``average += weight * (current - average)`` in place, tensor by tensor."""
    torch._foreach_lerp_(average, current, weight)


@torch.no_grad()
def interpolate(before: torch.Tensor, after: torch.Tensor, coefficient: float) -> torch.Tensor:
    """``(1 - coefficient) * before + coefficient * after``: WiSE-FT's weight-space ensemble (Wortsman
    et al. 2022, "Robust fine-tuning of zero-shot models", Eq. 1) between consecutive experiences, the
    checkpoint averaging of Dynamic Y-KD (Pagé-Fortin & Chaib-draa 2023)."""
    return torch.lerp(before, after, coefficient)


def split_rank(singular_values: torch.Tensor, alpha: float) -> int:
    """How many leading singular directions of the merged update the projection protects: those before
    the first at which the cumulative share of the singular values exceeds ``alpha``, as OPCM's reference
    code splits the rank (Tang et al. 2025, arXiv:2501.09522); 0 when the first one does, or none does."""
    share = singular_values.cumsum(0) / singular_values.sum()
    return int((share > alpha).to(torch.int64).argmax())


@torch.no_grad()
def project_out(update: torch.Tensor, merged: torch.Tensor, alpha: float) -> torch.Tensor:
    """``update`` with the directions of ``merged`` (the update merged so far) projected out, the
    projection of "Merging Models on the Fly" (OPCM, Tang et al. 2025), for one tensor.

    A weight of two or more dimensions is a matrix ``(out, rest)``: with ``merged = U S V^T`` (full SVD)
    the update is written in the singular bases, ``C = U^T update V``; its diagonal (the component along
    every ``u_i v_i^T``, so the result is Frobenius-orthogonal to ``merged``) and its leading
    ``r x r`` block (``r``: :func:`split_rank`, the subspace holding an ``alpha`` share of ``merged``) are
    zeroed and it is mapped back. A vector (bias, normalisation scale) is returned unchanged, as in the
    paper, which projects linear layers' weights only; so is any update while ``merged`` is zero."""
    if update.ndim < 2 or not bool(merged.any()):
        return update.clone()
    matrix = merged.reshape(merged.shape[0], -1).double()
    tau = update.reshape(matrix.shape).double()
    # the reduced SVD suffices: every coefficient zeroed lies in the leading min(out, rest) directions
    u, singular_values, vh = torch.linalg.svd(matrix, full_matrices=False)  # (m, k), (k,), (k, n)
    rank = split_rank(singular_values, alpha)
    coefficients = u.T @ tau @ vh.T  # (k, k)
    removed = torch.diag(coefficients.diagonal())
    removed[:rank, :rank] = coefficients[:rank, :rank]
    return (tau - u @ removed @ vh).reshape(update.shape).to(update.dtype)
