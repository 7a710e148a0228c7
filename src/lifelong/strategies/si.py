"""Synaptic intelligence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.bounds import Annotated, Ge, Gt
from lifelong.data.streams import Batch, Experience
from lifelong.strategies.base import Capabilities, Strategy, StrategyContext
from lifelong.strategies.parts.penalties import Anchor, importance_ceiling, trainable_weights


@dataclass
class SI(Strategy):
    """Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017, "Continual Learning Through Synaptic
    Intelligence"; reference code ``ganguli-lab/pathint``). Along training each parameter accumulates the path
    integral ``w_i = -sum_t g_i(t) * delta_theta_i(t)``, its contribution to the decrease of the task's loss:
    ``g`` is the gradient of the task's loss alone, without the penalty (the reference's ``unreg_grads``),
    and ``delta_theta`` the step the optimizer took. At the end of an experience
    ``Omega_i <- max(0, Omega_i + w_i / (Delta_i^2 + damping))``, with ``Delta`` the parameter's total move
    over the experience (the reference clips the sum at zero with a ReLU), and the loss adds
    ``lam * sum_i Omega_i (theta_i - theta*_i)^2``.

    The gradient of a step is read in :meth:`after_backward`, where the runner has back-propagated the whole
    loss: the penalty's own gradient, ``lam * 2 Omega (theta - theta*)``, known in closed form, is taken off
    it (no second backward pass). Its update, made by the runner's optimizer, is seen at the next
    :meth:`observe` (or at the end of the experience).

    Departures: the reference trains with Adam and resets it at each task; here the runner's optimizer and
    settings apply, and the gradient is read before the runner clips it; ``2 lam Omega_i`` is held at half
    the stiffness the run's SGD steps stably (:func:`~lifelong.strategies.parts.penalties.importance_ceiling`;
    none under adaptive optimizers, such as the reference's Adam), where the explicit step on the penalty
    would diverge.

    Data-parallel: the path integral is built from the averaged gradients and the weights' moves, equal
    on every rank by construction."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    lam: Annotated[float, Ge(0)] = 4.25
    """Strength of the penalty (c in the paper, which uses 1 for split MNIST with Adam). The default is
    ``lifelong tune``'s on class-incremental digits with SGD and momentum (``docs/results/fmnist-defaults.md``):
    the paper's pair (1, 1e-3) diverges there in 3 of 3 seeds, an importance ``omega / (delta^2 + xi)`` of
    weights that barely moved blowing up under a small ``xi``."""
    damping: Annotated[float, Gt(0)] = 0.147
    """Damping xi of the importance normalisation (1e-3 for split MNIST in the paper, 1 in Mammoth's
    Seq-MNIST settings; the default tuned with ``lam``)."""
    anchor: Anchor = field(default_factory=Anchor, init=False, repr=False)
    """The weights ``theta*`` after the last experience and the accumulated importance ``Omega``."""
    path: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    """The path integral ``w`` of the current experience, by parameter name."""
    start: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    """The weights at the start of the current experience."""
    previous: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    """The weights when the last gradient was read (before the optimizer's step)."""
    gradient: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    """The last step's gradient, until its update is seen."""

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.anchor, self.path, self.start, self.previous, self.gradient = Anchor(), {}, {}, {}, {}

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.start = trainable_weights(model)
        self.path = {k: torch.zeros_like(v) for k, v in self.start.items()}
        self.previous, self.gradient = {}, {}

    def accumulate(self, model: nn.Module) -> None:
        """Add ``-g * delta_theta`` of the last optimizer step to the path integral. Steps taken after an
        experience closed (a branch-off's cooldown, ``optim.branch_decay``) add to no path: it is empty then."""
        current = trainable_weights(model)
        for k, g in self.gradient.items() if self.path else ():
            self.path[k] -= g * (current[k] - self.previous[k])
        self.previous, self.gradient = current, {}

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        self.accumulate(model)
        loss = self.loss(model, batch.x, batch.y, batch.task)
        if self.anchor.is_set:
            loss = loss + self.lam * self.anchor.penalty(model)
        return loss

    def after_backward(self, model: nn.Module) -> None:
        """Keep the gradient of the task's loss: the back-propagated one less the penalty's."""
        self.gradient = {k: v.grad.detach().clone() for k, v in model.named_parameters()
                         if v.requires_grad and v.grad is not None}
        if self.anchor.is_set and self.lam > 0:
            for k, g in self.anchor.gradient(model).items():
                if k in self.gradient:
                    self.gradient[k].sub_(self.lam * g)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Normalise the path integral by the squared total moves, add it to ``Omega`` and anchor."""
        super().after_experience(model, experience)
        self.accumulate(model)
        end = self.previous
        self.anchor.update(model, {k: w / ((end[k] - self.start[k]) ** 2 + self.damping) for k, w in self.path.items()},
                           floor=0.0, ceiling=importance_ceiling(self.context.stable_curvature, 2 * self.lam))
        self.path, self.start, self.previous, self.gradient = {}, {}, {}, {}  # the next experience starts its own

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self.anchor.state(), "path": self.path, "start": self.start,
                "previous": self.previous, "gradient": self.gradient}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.anchor.load(state)
        for name in ("path", "start", "previous", "gradient"):
            setattr(self, name, dict(state[name]))
