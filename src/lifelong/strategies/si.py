"""Synaptic intelligence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lifelong.data.streams import Batch, Experience
from lifelong.errors import ConfigError
from lifelong.strategies.anchoring import AnchoredPenalty, trainable
from lifelong.strategies.base import Capabilities, StrategyContext


@dataclass
class SI(AnchoredPenalty):
    """Synaptic Intelligence (Zenke et al., ICML 2017, "Continual Learning Through Synaptic
    Intelligence"). Along training each parameter accumulates the path integral
    ``w_i = -sum_t g_i(t) * delta_theta_i(t)``, its contribution to the decrease of the loss. At the end
    of an experience ``Omega_i += w_i / (Delta_i^2 + damping)``, with ``Delta`` the parameter's total move
    over the experience, and the loss adds ``lam * sum_i Omega_i (theta_i - theta*_i)^2``.

    The gradient of a step is read in :meth:`after_backward` and its update, made by the runner's
    optimizer, is seen at the next :meth:`observe` (or at the end of the experience)."""

    CAPABILITIES: ClassVar[Capabilities] = Capabilities(distributed=True)

    lam: float = 1.0
    """Strength of the penalty (c in the paper; 1 for split MNIST)."""
    damping: float = 1e-3
    """Damping xi of the importance normalisation (1e-3 for split MNIST in the paper)."""
    path: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    start: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    previous: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    gradient: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.damping <= 0:
            raise ConfigError(f"strategy.damping must be > 0, got {self.damping}")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.path, self.start, self.previous, self.gradient = {}, {}, {}, {}

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        self.start = trainable(model)
        self.path = {k: torch.zeros_like(v) for k, v in self.start.items()}
        self.previous, self.gradient = {}, {}

    def accumulate(self, model: nn.Module) -> None:
        """Add ``-g * delta_theta`` of the last optimizer step to the path integral."""
        current = trainable(model)
        for k, g in self.gradient.items():
            self.path[k] -= g * (current[k] - self.previous[k])
        self.previous, self.gradient = current, {}

    def observe(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        self.accumulate(model)
        return super().observe(model, batch)

    def after_backward(self, model: nn.Module) -> None:
        self.gradient = {k: v.grad.detach().clone() for k, v in model.named_parameters()
                         if v.requires_grad and v.grad is not None}

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        super().after_experience(model, experience)
        self.accumulate(model)
        end, old = self.previous, self.importance
        new = {k: w / ((end[k] - self.start[k]) ** 2 + self.damping) for k, w in self.path.items()}
        self.consolidate(model, {k: old[k] + v if k in old else v for k, v in new.items()})

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "path": self.path, "start": self.start, "previous": self.previous,
                "gradient": self.gradient}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        for name in ("path", "start", "previous", "gradient"):
            setattr(self, name, dict(state[name]))
