"""Hypergradient descent on the learning rate (Baydin et al. 2018, "Online Learning Rate Adaptation with
Hypergradient Descent", ICLR; SGD-HD and SGDN-HD).

The loss after a step depends on the learning rate through the step itself, ``theta_t = theta_{t-1} - alpha
u_{t-1}``, so its derivative with respect to ``alpha`` is ``-g_t . u_{t-1}``: the current gradient against the
last update. Gradient descent on ``alpha`` gives ``alpha_t = alpha_{t-1} + beta g_t . u_{t-1}``: the rate grows
while successive steps agree and shrinks when a step overshoots. On a stream whose difficulty changes at each
experience, the rate follows what the current data allow without a schedule tuned for it.

The runner owns the learning rate (``optim.lr``, its schedule and batch-size scaling write ``group["lr"]``),
so the learned part is kept as an offset per parameter group (``hyper_offset``, saved with the optimizer's
state and so with every checkpoint): each step uses ``max(group["lr"] + offset, 0)``. With a constant
schedule this is the paper's algorithm exactly; with a schedule the offset adds to it. Departures: the
hypergradient is summed per parameter group (the paper's is over all parameters: the same with one group),
and the rate is clipped at 0 (the paper leaves it free).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lifelong.optim.checks import check_common, check_positive
from lifelong.optim.closure import evaluate_closure


class HypergradientSGD(torch.optim.Optimizer):
    """SGD (``momentum`` 0: SGD-HD) or SGD with momentum (SGDN-HD) whose learning rate follows its
    hypergradient (module docstring).

    Per group, at each step: ``h = sum_p g_p . u_p`` over the group's parameters (``u_p``: each one's last
    update direction, 0 at the first step); ``offset <- offset + hypergradient_lr * h``; ``alpha = max(lr +
    offset, 0)``; then for each parameter ``v <- momentum v + g`` (with ``weight_decay w`` added to ``g``),
    ``u = v`` (Nesterov: ``g + momentum v``) and ``w <- w - alpha u``."""

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float,
                 momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 hypergradient_lr: float = 1e-3) -> None:
        check_common(lr, weight_decay, momentum)
        check_positive("hypergradient_lr", hypergradient_lr, allow_zero=True)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov,
                                  "hypergradient_lr": hypergradient_lr, "hyper_offset": 0.0})

    def learning_rates(self) -> list[float]:
        """The rate each group's last step used (its ``lr`` before any step)."""
        return [max(group["lr"] + group["hyper_offset"], 0.0) for group in self.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            hypergradient = sum((torch.dot(p.grad.flatten(), self.state[p]["update"].flatten())
                                 for p in params if "update" in self.state[p]), torch.zeros(()))
            group["hyper_offset"] += group["hypergradient_lr"] * float(hypergradient)
            rate, momentum = max(group["lr"] + group["hyper_offset"], 0.0), group["momentum"]
            for p in params:
                grad = p.grad if group["weight_decay"] == 0 else p.grad + group["weight_decay"] * p
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                velocity = state["momentum_buffer"].mul_(momentum).add_(grad)
                update = grad + momentum * velocity if group["nesterov"] else velocity.clone()
                state["update"] = update
                p.sub_(update, alpha=rate)
        return loss
