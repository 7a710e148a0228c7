"""LAMB: layer-wise adaptive moments for batch training (You et al. 2020, "Large Batch Optimization for
Deep Learning: Training BERT in 76 minutes", Algorithm 2).

Adam's direction, rescaled per weight tensor by the trust ratio ``||w|| / ||r + lambda w||`` so that
each layer moves by about ``lr`` times its own norm: what lets the batch (and the square-root-scaled
learning rate) grow without divergence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lifelong.optim.checks import check_betas, check_common, check_positive
from lifelong.optim.closure import evaluate_closure
from lifelong.optim.lars import trust_ratio


class LAMB(torch.optim.Optimizer):
    """Adam moments with bias correction and a layer-wise trust ratio.

    For a weight ``w`` with gradient ``g`` at step ``t`` (You et al. 2020, Algorithm 2, phi = identity)::

        m <- beta1 m + (1 - beta1) g            v <- beta2 v + (1 - beta2) g^2
        r = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
        w <- w - lr * ||w|| / ||r + weight_decay * w|| * (r + weight_decay * w)

    One-dimensional parameters (biases, normalization scales) take ``w <- w - lr * r``: no weight
    decay, no trust ratio.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6) -> None:
        check_common(lr, weight_decay)
        betas = check_betas(betas)
        check_positive("eps", eps)
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                first, second = state["exp_avg"], state["exp_avg_sq"]
                first.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                second.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (first / (1 - beta1 ** t)) / ((second / (1 - beta2 ** t)).sqrt_().add_(group["eps"]))
                if p.ndim > 1:
                    update.add_(p, alpha=group["weight_decay"])
                    update.mul_(trust_ratio(torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)))
                p.sub_(update, alpha=group["lr"])
        return loss
