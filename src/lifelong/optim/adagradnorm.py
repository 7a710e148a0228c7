"""AdaGradNorm (Ward, Wu & Bottou 2019, "AdaGrad stepsizes: sharp convergence over nonconvex
landscapes"): one scalar step size for the whole model, ``lr / b_t`` with ``b_t^2 = b_0^2 + sum ||g||^2``.

It is the optimizer AdAdaGrad pairs with the adaptive batch size (Lau et al. 2024, "AdAdaGrad:
adaptive batch size schemes for adaptive gradient methods"): its step size needs no tuning to the
batch size, so the batch can grow under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lifelong.optim.checks import check_common, check_positive
from lifelong.optim.closure import evaluate_closure


class AdaGradNorm(torch.optim.Optimizer):
    """``b^2 <- b^2 + ||g||^2`` over every parameter of every group, then ``w <- w - lr * g / b``.

    ``weight_decay`` adds ``weight_decay * w`` to the gradient of weights with more than one dimension
    (biases and normalization scales are not decayed).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float,
                 weight_decay: float = 0.0, initial_norm: float = 0.01) -> None:
        check_common(lr, weight_decay)
        check_positive("initial_norm", initial_norm)
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self.accumulator = initial_norm ** 2
        """b^2: the running sum of squared gradient norms, seeded with b_0^2."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "accumulator": self.accumulator}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.accumulator = float(state_dict.pop("accumulator"))
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = evaluate_closure(closure)
        gradients: list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]] = []
        squared = 0.0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                gradient = p.grad + group["weight_decay"] * p if p.ndim > 1 else p.grad
                squared += float(gradient.square().sum())
                gradients.append((p, gradient, group))
        self.accumulator += squared
        scale = self.accumulator ** -0.5
        for p, gradient, group in gradients:
            p.sub_(gradient, alpha=group["lr"] * scale)
        return loss
