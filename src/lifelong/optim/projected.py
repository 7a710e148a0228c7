"""SGDP and AdamP: momentum optimizers that remove the radial part of the update of scale-invariant weights
(Heo et al. 2021, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights",
ICLR; reference code clovaai/AdamP).

A weight followed by a normalization layer is scale-invariant: the loss does not change when the weight is
scaled, so its gradient is orthogonal to it. Momentum still accumulates a radial component, which grows the
weight's norm and so shrinks its effective learning rate (``lr / ||w||^2``) early in training. SGDP and AdamP
detect such weights by the cosine between the gradient and the weight (below ``delta / sqrt(d)``, ``d`` the
dimension of the view: each output channel's row first, then the whole tensor) and project the update onto
the tangent space, ``u <- u - (w_hat . u) w_hat`` with ``w_hat = w / ||w||`` per row of the view; their weight
decay is multiplied by ``wd_ratio``. Tensors of one dimension (biases, normalization scales) are never
projected, as in the reference code. One function (:func:`tangent_update`) serves both optimizers.

In continual learning the effective learning rate of normalized layers decays over a long stream as their
norms grow; these optimizers keep it, which is why TECHNIQUES.md lists them beside the schedules for
never-ending streams.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from lifelong.errors import ConfigError
from lifelong.optim.checks import check_betas, check_common, check_positive
from lifelong.optim.closure import evaluate_closure

Params = Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]]


def tangent_update(weight: torch.Tensor, grad: torch.Tensor, update: torch.Tensor, delta: float,
                   eps: float) -> tuple[torch.Tensor, bool]:
    """``update`` with its radial component removed when ``weight`` looks scale-invariant, and whether it
    did. Each view is tried in turn, per output channel (rows ``weight[i].flatten()``) then the whole tensor
    (one row): the weight is taken as scale-invariant in a view when every row's ``|cos(grad, weight)|`` is
    below ``delta / sqrt(row length)``, and the update is then projected row by row onto the plane orthogonal
    to the weight's row. Tensors of fewer than two dimensions are returned unchanged."""
    if weight.ndim < 2:
        return update, False
    shape = (-1,) + (1,) * (weight.ndim - 1)
    for rows in (weight.shape[0], 1):
        w, g = weight.reshape(rows, -1), grad.reshape(rows, -1)
        cosine = F.cosine_similarity(g, w, dim=1, eps=eps).abs()
        if bool(cosine.max() < delta / math.sqrt(w.shape[1])):
            unit = weight / (w.norm(dim=1) + eps).reshape(shape)  # each row of the view at norm 1
            radial = (unit * update).reshape(rows, -1).sum(dim=1)
            return update - unit * radial.reshape(shape), True
    return update, False


def _check(lr: float, weight_decay: float, delta: float, wd_ratio: float, momentum: float | None = None) -> None:
    check_common(lr, weight_decay, momentum)
    check_positive("delta", delta)
    if not 0 <= wd_ratio <= 1:
        raise ConfigError(f"optim.optimizer_params.wd_ratio must be in [0, 1], got {wd_ratio!r}")


class SGDP(torch.optim.Optimizer):
    """SGD with momentum whose update of scale-invariant weights is projected (module docstring).

    Per parameter, as the reference code: ``v <- momentum v + g``; ``d = g + momentum v`` (Nesterov) or ``v``;
    ``d`` projected (:func:`tangent_update`); ``w <- w (1 - lr wd r / (1 - momentum))`` with ``r = wd_ratio``
    for a projected weight and 1 otherwise (decoupled decay, scaled to momentum SGD's effective rate); then
    ``w <- w - lr d``. Departure: no dampening option (the reference's default, 0, is what runs)."""

    def __init__(self, params: Params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 nesterov: bool = False, delta: float = 0.1, wd_ratio: float = 0.1, eps: float = 1e-8) -> None:
        _check(lr, weight_decay, delta, wd_ratio, momentum)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov,
                                  "delta": delta, "wd_ratio": wd_ratio, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                velocity = state["momentum_buffer"]
                velocity.mul_(momentum).add_(p.grad)
                direction = p.grad + momentum * velocity if group["nesterov"] else velocity
                direction, projected = tangent_update(p, p.grad, direction, group["delta"], group["eps"])
                if group["weight_decay"] > 0:
                    ratio = group["wd_ratio"] if projected else 1.0
                    p.mul_(1 - lr * group["weight_decay"] * ratio / (1 - momentum))
                p.add_(direction, alpha=-lr)
        return loss


class AdamP(torch.optim.Optimizer):
    """Adam whose update of scale-invariant weights is projected (module docstring).

    Per parameter, as the reference code: Adam's moments with bias correction, the update
    ``m_hat / (sqrt(v_hat) + eps)`` (Nesterov: ``(beta1 m + (1 - beta1) g)`` in place of ``m``) projected by
    :func:`tangent_update`; decoupled weight decay ``w <- w (1 - lr wd r)`` with ``r = wd_ratio`` for a
    projected weight and 1 otherwise; then ``w <- w - lr update``."""

    def __init__(self, params: Params, lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, nesterov: bool = False,
                 delta: float = 0.1, wd_ratio: float = 0.1) -> None:
        _check(lr, weight_decay, delta, wd_ratio)
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "betas": check_betas(betas), "eps": eps,
                                  "nesterov": nesterov, "delta": delta, "wd_ratio": wd_ratio})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "step" not in state:
                    state["step"], state["exp_avg"], state["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["step"] += 1
                grad, first, second = p.grad, state["exp_avg"], state["exp_avg_sq"]
                first.mul_(beta1).add_(grad, alpha=1 - beta1)
                second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denominator = (second.sqrt() / math.sqrt(1 - beta2 ** state["step"])).add_(eps)
                numerator = beta1 * first + (1 - beta1) * grad if group["nesterov"] else first
                direction, projected = tangent_update(p, grad, numerator / denominator, group["delta"], eps)
                if group["weight_decay"] > 0:
                    p.mul_(1 - lr * group["weight_decay"] * (group["wd_ratio"] if projected else 1.0))
                p.add_(direction, alpha=-lr / (1 - beta1 ** state["step"]))
        return loss
