"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, "Large Batch Training of
Convolutional Networks", Algorithm 1).

Each weight tensor gets its own "local" learning rate ``trust_coefficient * ||w|| / (||g|| + beta ||w||)``
so that no layer's update is large relative to its weights: the cause of divergence with linearly
scaled learning rates at large batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lifelong.optim.checks import check_common, check_positive
from lifelong.optim.closure import evaluate_closure


def trust_ratio(weight_norm: torch.Tensor, update_norm: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
    """``coefficient * ||w|| / ||u||``, or 1 where either norm is zero (a freshly zeroed layer, a zero
    gradient), as in the reference implementations: the update then falls back to the global rate."""
    usable = (weight_norm > 0) & (update_norm > 0)
    return torch.where(usable, coefficient * weight_norm / update_norm.clamp_min(torch.finfo(update_norm.dtype).tiny),
                       torch.ones_like(weight_norm))


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio.

    For a weight ``w`` with gradient ``g`` (You et al. 2017, Algorithm 1)::

        local_lr = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w||)
        v <- momentum * v + lr * local_lr * (g + weight_decay * w)
        w <- w - v

    Where ``||w||`` or ``||g||`` is zero the local rate is 1. One-dimensional parameters (biases, normalization scales) take a plain momentum SGD step with no
    weight decay and no trust ratio, following the paper's practice for BN parameters and biases.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float,
                 momentum: float = 0.9, weight_decay: float = 0.0, trust_coefficient: float = 0.001) -> None:
        check_common(lr, weight_decay, momentum)
        check_positive("trust_coefficient", trust_coefficient)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "trust_coefficient": trust_coefficient})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:
                    weight_norm, grad_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(p.grad)
                    local_lr = trust_ratio(weight_norm, grad_norm + decay * weight_norm, group["trust_coefficient"])
                    update = (p.grad + decay * p) * local_lr
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                velocity = state["momentum_buffer"]
                velocity.mul_(momentum).add_(update, alpha=lr)
                p.sub_(velocity)
        return loss
